"""One minor cycle on images: single channel (Hogbom/multiscale) or joined channels (MS-MFS).

Pure functions, numpy in and out: the serial loop
(:mod:`arl_mpi.deconvolution.serial_loop`) and the distributed pipeline
(:mod:`arl_mpi.pipeline.minor`) both call these, so they take identical decisions given
identical images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import mad_sigma
from .hogbom import hogbom
from .msmfs import mfs_clean, multiscale
from .policy import CleanSettings

__all__ = [
    "deconvolve_cube",
    "mfs_image",
    "minor_cycle_step",
    "reference_frequency",
    "residual_stats",
    "taylor_to_channels",
]


def minor_cycle_step(
    residual: np.ndarray,
    psf: np.ndarray,
    model: np.ndarray | None,
    settings: CleanSettings,
    niter_done: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run one single-channel minor cycle and return the model *increment*.

    Parameters
    ----------
    residual : ndarray [ny, nx]
        Current residual image (Jy/beam).
    psf : ndarray [py, px]
        PSF, peak at the centre.
    model : ndarray [ny, nx] or None
        Current model (unused by the algorithms, accepted so the signature carries the full
        state; not modified).
    settings : CleanSettings
    niter_done : int
        Components already done in earlier cycles (limits this cycle to the remaining budget).

    Returns
    -------
    model_update : ndarray [ny, nx]
        Components found in this cycle (Jy/pixel); add to ``model``.
    info : dict
        Minor-cycle info (see :func:`~arl_mpi.deconvolution.hogbom.hogbom`).
    """
    del model
    params = settings.minor_params(niter_done)  # ConfigError for an unknown algorithm
    clean = hogbom if settings.algorithm == "hogbom" else multiscale
    upd, _, info = clean(residual, psf, params)
    return upd, info


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


def reference_frequency(freqs: np.ndarray, sumwt: np.ndarray) -> float:
    """Taylor reference frequency: the weighted mean of the output channels."""
    w = np.asarray(sumwt, dtype=np.float64)
    return float(np.sum(w * np.asarray(freqs, dtype=np.float64)) / w.sum())


def deconvolve_cube(
    residual: np.ndarray,
    psf: np.ndarray,
    sumwt: np.ndarray,
    freqs_out: np.ndarray,
    settings: CleanSettings,
    niter_done: int,
    nterms: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One minor cycle on ``[nout, ny, nx]`` residual/PSF cubes; returns the model increment.

    ``nout == 1`` runs Hogbom or multiscale (:func:`minor_cycle_step`); ``nout > 1`` runs
    MS-MFS with ``min(nterms, nout)`` Taylor terms (reference frequency: weighted mean of the
    output channels, point components unless ``algorithm == 'multiscale'``) and expands the
    Taylor model back to the output channels. The Taylor models are in ``info['taylor']``
    and the reference frequency in ``info['ref_freq']``.
    """
    if residual.shape[0] == 1:
        upd, info = minor_cycle_step(residual[0], psf[0], None, settings, niter_done)
        return upd[None], info
    w = np.asarray(sumwt, dtype=np.float64)
    ref = reference_frequency(freqs_out, w)
    taylor, _, info = mfs_clean(
        residual,
        psf,
        freqs_out,
        ref,
        min(nterms, residual.shape[0]),
        settings.minor_params(niter_done),
        channel_weights=w,
    )
    info = dict(info)
    info["taylor"] = taylor
    info["ref_freq"] = ref
    return taylor_to_channels(taylor, freqs_out, ref), info
