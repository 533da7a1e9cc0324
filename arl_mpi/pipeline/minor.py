"""The driver's minor cycle: single-channel (Hogbom/multiscale) or joined channels (MS-MFS).

Pure functions: images in, model update out. The single-channel path is exactly
:func:`arl_mpi.imaging.serial.minor_cycle_step`, so the distributed pipeline and the serial
loop take identical decisions given identical images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from arl_mpi.deconvolution.common import mad_sigma
from arl_mpi.deconvolution.msmfs import mfs_clean
from arl_mpi.imaging.serial import CleanSettings, minor_cycle_step, stop_rule
from arl_mpi.pipeline.settings import Settings

__all__ = ["clean_settings", "deconvolve", "taylor_to_channels", "residual_stats", "stop_rule"]


def clean_settings(s: Settings) -> CleanSettings:
    """CleanSettings of a pipeline run."""
    return CleanSettings(
        algorithm="multiscale" if s.multiscale else "hogbom", niter=s.niter, gain=s.gain,
        mgain=s.mgain if s.mgain < 1.0 else None, threshold=s.threshold_jy, auto_threshold=s.auto_threshold,
        nmiter=s.nmiter, scales_px=list(s.multiscale_scales), scale_bias=s.multiscale_scale_bias,
    )


def taylor_to_channels(taylor: np.ndarray, freqs: np.ndarray, ref_freq: float) -> np.ndarray:
    """Per-channel model ``sum_t taylor[t] x^t`` with ``x = (nu - ref) / ref``: [nchan, ny, nx]."""
    x = (np.asarray(freqs) - ref_freq) / ref_freq
    powers = x[:, None] ** np.arange(taylor.shape[0])[None, :]
    return np.einsum("ct,tyx->cyx", powers, taylor)


def mfs_image(cube: np.ndarray, sumwt: np.ndarray) -> np.ndarray:
    """Weighted multi-frequency-synthesis image of a per-channel cube."""
    w = np.asarray(sumwt, dtype=np.float64)
    return np.einsum("c,cyx->yx", w, cube) / w.sum() if w.sum() > 0 else cube.mean(axis=0)


def residual_stats(residual: np.ndarray, sumwt: np.ndarray) -> tuple[float, float]:
    """(absolute peak, MAD sigma) of the (MFS) residual, as used by the stopping rule."""
    img = residual[0] if residual.shape[0] == 1 else mfs_image(residual, sumwt)
    return float(np.max(np.abs(img))), float(mad_sigma(img))


def deconvolve(residual: np.ndarray, psf: np.ndarray, sumwt: np.ndarray, freqs_out: np.ndarray, cs: CleanSettings,
               niter_done: int, nterms: int) -> tuple[np.ndarray, dict[str, Any]]:
    """One minor cycle on ``[nout, ny, nx]`` residual/PSF cubes; returns the model increment cube.

    ``nout == 1`` runs Hogbom or multiscale; ``nout > 1`` runs MS-MFS with ``nterms`` Taylor
    terms (reference frequency: weighted mean of the output channels) and expands the Taylor
    model back to the output channels. The Taylor models are in ``info['taylor']``.
    """
    if residual.shape[0] == 1:
        upd, info = minor_cycle_step(residual[0], psf[0], np.zeros_like(residual[0]), cs, niter_done)
        return upd[None], info
    w = np.asarray(sumwt, dtype=np.float64)
    ref = float(np.sum(w * freqs_out) / w.sum())
    taylor, _, info = mfs_clean(
        residual, psf, freqs_out, ref, nterms=min(nterms, residual.shape[0]), channel_weights=w,
        scales_px=cs.scales_px if cs.algorithm == "multiscale" else (0,), scale_bias=cs.scale_bias, gain=cs.gain,
        niter=max(0, cs.niter - niter_done), threshold=cs.threshold, auto_threshold=cs.auto_threshold,
        mgain=cs.mgain, mask=cs.mask)
    info = dict(info)
    info["taylor"] = taylor
    info["ref_freq"] = ref
    return taylor_to_channels(taylor, freqs_out, ref), info
