"""One minor cycle on images: single channel (Hogbom/multiscale) or joined channels (MS-MFS).

Pure functions, numpy in and out: the serial loop
(:mod:`arl_mpi.deconvolution.serial_loop`) and the distributed pipeline
(:mod:`arl_mpi.pipeline.minor`) both call these, so they take identical decisions given
identical images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import masks
from .common import mad_sigma
from .hogbom import hogbom
from .msmfs import mfs_clean, multiscale
from .policy import CleanParams, CleanSettings
from .radler_engine import resolve_deconvolver

__all__ = [
    "deconvolve_cube",
    "mfs_image",
    "minor_cycle_step",
    "reference_frequency",
    "residual_stats",
    "taylor_to_channels",
    "with_masks",
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
    if settings.algorithm == "hogbom":

        def clean(res: np.ndarray, p: CleanParams) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
            return hogbom(res, psf, p, engine=settings.deconvolver)
    else:
        resolve_deconvolver(settings.deconvolver, algorithm=settings.algorithm, params=params)

        def clean(res: np.ndarray, p: CleanParams) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
            return multiscale(res, psf, p)

    upd, _, info = with_masks(clean, residual, params, settings, lambda r: r, psf)
    return upd, info


def with_masks(
    clean: Callable[[np.ndarray, CleanParams], tuple[np.ndarray, np.ndarray, dict[str, Any]]],
    residual: np.ndarray,
    params: CleanParams,
    settings: CleanSettings,
    image_of: Callable[[np.ndarray], np.ndarray],
    psf_image: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Run ``clean(residual, params)`` with the auto-mask and local RMS of ``settings`` applied.

    Once the auto-mask is made (the auto-mask level reached), the rest of the cycle's budget is
    cleaned inside it in the same call, so a cycle that reaches the level never ends the run
    for want of progress. ``image_of`` maps the residual to the image of the local-RMS map (the
    MFS image of a cube); ``psf_image`` is the PSF whose main lobe sets the RMS window.
    """
    p, extra = masks.cycle_params(params, settings, image_of(residual), psf_image)
    upd, res, info = clean(residual, p)
    masks.after_cycle(settings, upd, info, extra)
    left = params.niter - int(info["niter"])
    if info.get("auto_mask_made") and left > 0:
        p2, extra2 = masks.cycle_params(params.replace(niter=left), settings, image_of(res), psf_image)
        upd2, res, info2 = clean(res, p2)
        masks.after_cycle(settings, upd2, info2, extra2)
        first = info
        info = dict(info2)
        info.update(
            start_peak=first["start_peak"],
            niter=int(first["niter"]) + int(info2["niter"]),
            kept=int(first.get("kept", first["niter"])) + int(info2.get("kept", info2["niter"])),
            auto_mask_made=True,
            auto_mask_level=first["threshold"],
        )
        upd = upd + upd2
    return upd, res, info


def taylor_to_channels(taylor: np.ndarray, freqs: np.ndarray, ref_freq: float) -> np.ndarray:
    """Per-channel model ``sum_t taylor[t] x^t`` with ``x = (nu - ref) / ref``: [nchan, ny, nx]."""
    x = (np.asarray(freqs) - ref_freq) / ref_freq
    powers = x[:, None] ** np.arange(taylor.shape[0])[None, :]
    return np.einsum("ct,tyx->cyx", powers, taylor)


def mfs_image(cube: np.ndarray, sumwt: np.ndarray) -> np.ndarray:
    """Weighted multi-frequency-synthesis image of a per-channel cube."""
    w = np.asarray(sumwt, dtype=np.float64)
    return np.einsum("c,cyx->yx", w, cube) / w.sum() if w.sum() > 0 else cube.mean(axis=0)


def residual_stats(
    residual: np.ndarray, sumwt: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, float]:
    """(absolute peak, MAD sigma) of the (MFS) residual, as used by the stopping rule.

    With a clean ``mask`` ([ny, nx] bool, e.g. ``--fits-mask``) the peak is the largest inside it
    (where CLEAN may still put components); sigma is always the whole image's.
    """
    img = residual[0] if residual.shape[0] == 1 else mfs_image(residual, sumwt)
    inside = img[mask] if mask is not None and mask.shape == img.shape and mask.any() else img
    return float(np.max(np.abs(inside))), float(mad_sigma(img))


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
    resolve_deconvolver(settings.deconvolver, nchan=residual.shape[0])  # ours: Taylor terms
    w = np.asarray(sumwt, dtype=np.float64)
    ref = reference_frequency(freqs_out, w)
    nt = min(nterms, residual.shape[0])

    def clean(res: np.ndarray, p: CleanParams) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        return mfs_clean(res, psf, freqs_out, ref, nt, p, channel_weights=w)

    taylor, _, info = with_masks(
        clean, residual, settings.minor_params(niter_done), settings, lambda r: mfs_image(r, w), mfs_image(psf, w)
    )
    info = dict(info)
    info["taylor"] = taylor
    info["ref_freq"] = ref
    return taylor_to_channels(taylor, freqs_out, ref), info
