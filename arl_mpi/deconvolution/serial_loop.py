"""Serial major/minor-cycle loops: imaging composed with deconvolution.

* :func:`image_serial` -- weight, invert, CLEAN with gridded major cycles, restore (one
  process). The distributed pipeline mirrors it; the per-cycle decisions are the pure
  functions :func:`~arl_mpi.deconvolution.policy.stop_rule` and
  :func:`~arl_mpi.deconvolution.minor_cycle.minor_cycle_step`, so both take identical
  decisions given identical images.
* :func:`clean_image_domain` -- the same loop with an exact image-domain "major cycle"
  ``residual = dirty - psf * model`` (FFT convolution), no gridding: the reference for the
  minor-cycle algorithms, with or without sub-image (parallel) deconvolution.

This module imports :mod:`arl_mpi.imaging`; :mod:`arl_mpi.imaging` never imports
:mod:`arl_mpi.deconvolution`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from arl_mpi.imaging.beam import fit_beam, restore
from arl_mpi.imaging.gridding import invert, make_psf, predict
from arl_mpi.imaging.weighting import apply_weighting, grid_weight_density

from .common import convolve_same, mad_sigma
from .minor_cycle import deconvolve_cube, minor_cycle_step, residual_stats
from .policy import CleanSettings, masked_peak, stop_rule
from .subimages import Mapper, parallel_minor_cycle

log = logging.getLogger(__name__)

__all__ = ["clean_image_domain", "image_serial"]


def image_serial(
    uvw: np.ndarray,
    freq: np.ndarray,
    vis: np.ndarray,
    weight: np.ndarray,
    flags: np.ndarray | None,
    npix: int,
    cell: float,
    *,
    weighting: str = "natural",
    robust: float = 0.0,
    niter: int = 1000,
    gain: float = 0.1,
    mgain: float | None = 0.8,
    threshold: float = 0.0,
    auto_threshold: float | None = None,
    nmiter: int = 10,
    algorithm: str = "hogbom",
    scales_px: list[float] | None = None,
    mask: np.ndarray | None = None,
    epsilon: float = 1e-4,
    nthreads: int = 1,
    do_wgridding: bool = True,
    double: bool = False,
) -> dict[str, Any]:
    """Weight, invert, CLEAN with major cycles, restore.

    Parameters
    ----------
    uvw, freq, vis, weight, flags
        Visibilities (see :func:`~arl_mpi.imaging.gridding.invert_unnormalised`).
    npix : int
        Square image size.
    cell : float
        Pixel size (radians).
    weighting, robust
        See :func:`~arl_mpi.imaging.weighting.apply_weighting`.
    niter, gain, mgain, threshold, auto_threshold, nmiter, algorithm, scales_px, mask
        See :class:`~arl_mpi.deconvolution.policy.CleanSettings`.
    epsilon, nthreads, do_wgridding, double
        Gridder settings.

    Returns
    -------
    dict
        ``model`` (Jy/pixel), ``residual``, ``restored`` (Jy/beam), ``psf`` (same size as the
        image, peak 1), ``beam`` (bmaj, bmin, bpa radians), ``dirty``, ``sumwt``, ``weight``
        (imaging weights used), ``stop_reason`` and ``cycles`` (one info dict per minor cycle,
        with ``peak_before``, ``sigma`` and ``niter_total`` added).
    """
    settings = CleanSettings(
        algorithm=algorithm,
        niter=niter,
        gain=gain,
        mgain=mgain,
        threshold=threshold,
        auto_threshold=auto_threshold,
        nmiter=nmiter,
        scales_px=list(scales_px) if scales_px is not None else [0, 4, 8, 16],
        mask=mask,
    )
    settings.check_algorithm()
    grid_kw = dict(epsilon=epsilon, nthreads=nthreads, do_wgridding=do_wgridding, double=double)
    density = grid_weight_density(uvw, freq, weight, flags, npix, npix, cell)
    wgt = apply_weighting(
        uvw, freq, weight, flags, density, weighting, robust, cell=cell, npix_x=npix, npix_y=npix
    )
    psf, sumwt = make_psf(uvw, freq, wgt, flags, npix, npix, cell, **grid_kw)
    dirty, _ = invert(uvw, freq, vis, wgt, flags, npix, npix, cell, **grid_kw)
    residual = dirty.copy()
    model = np.zeros_like(dirty)
    cycles: list[dict[str, Any]] = []
    niter_done = 0
    last = None
    reason = ""
    while True:
        sigma = mad_sigma(residual, mask)
        stop, reason = stop_rule(
            masked_peak(residual, mask), sigma, niter_done, len(cycles), settings, last
        )
        if stop:
            break
        upd, info = minor_cycle_step(residual, psf, model, settings, niter_done)
        model += upd
        niter_done += info["niter"]
        last = info["niter"]
        info.update(peak_before=info["start_peak"], sigma=sigma, niter_total=niter_done)
        cycles.append(info)
        model_vis = predict(uvw, freq, model, cell, **grid_kw)
        residual, _ = invert(uvw, freq, vis - model_vis, wgt, flags, npix, npix, cell, **grid_kw)
        log.info(
            "major cycle %d: %d components, peak %.4g -> %.4g",
            len(cycles),
            info["niter"],
            info["start_peak"],
            masked_peak(residual, mask),
        )
    beam = fit_beam(psf, cell)
    restored = restore(model, residual, beam, cell, nthreads=nthreads)
    return dict(
        model=model,
        residual=residual,
        restored=restored,
        psf=psf,
        beam=beam,
        dirty=dirty,
        sumwt=sumwt,
        weight=wgt,
        stop_reason=reason,
        cycles=cycles,
    )


def clean_image_domain(
    dirty_cube: np.ndarray,
    psf_cube: np.ndarray,
    settings: CleanSettings,
    *,
    sumwt: np.ndarray | None = None,
    freqs: np.ndarray | None = None,
    nterms: int = 2,
    maxsize: int | None = None,
    margin: int | None = None,
    mapper: Mapper | None = None,
) -> dict[str, Any]:
    """Major/minor loop with exact image-domain major cycles (no gridding).

    Every major cycle recomputes ``residual_c = dirty_c - psf_c * model_c`` by linear FFT
    convolution; the minor cycle is :func:`~arl_mpi.deconvolution.minor_cycle.deconvolve_cube`
    or, with ``maxsize``, :func:`~arl_mpi.deconvolution.subimages.parallel_minor_cycle`.
    The stopping rule is :func:`~arl_mpi.deconvolution.policy.stop_rule` on
    :func:`~arl_mpi.deconvolution.minor_cycle.residual_stats`, as in the pipeline.

    Parameters
    ----------
    dirty_cube : ndarray [nchan, ny, nx]
    psf_cube : ndarray [nchan, py, px]
        Peak at the centre; twice the image size makes the convolution exact everywhere.
    settings : CleanSettings
    sumwt, freqs, nterms
        Channel weights, frequencies and Taylor terms (``nchan > 1``).
    maxsize, margin, mapper
        Sub-image deconvolution (see :func:`~arl_mpi.deconvolution.subimages.parallel_minor_cycle`);
        ``maxsize=None`` runs the serial minor cycle.

    Returns
    -------
    dict
        ``model`` [nchan, ny, nx] (Jy/pixel), ``taylor`` ([nterms, ny, nx] or None),
        ``residual`` [nchan, ny, nx], ``niter`` (components), ``stop_reason`` and ``cycles``
        (minor-cycle info dicts).
    """
    dirty_cube = np.asarray(dirty_cube, dtype=np.float64)
    psf_cube = np.asarray(psf_cube, dtype=np.float64)
    nchan = dirty_cube.shape[0]
    w = np.ones(nchan) if sumwt is None else np.asarray(sumwt, dtype=np.float64)
    psf_n = psf_cube / psf_cube[:, psf_cube.shape[1] // 2, psf_cube.shape[2] // 2][:, None, None]
    model = np.zeros_like(dirty_cube)
    taylor = None
    residual = dirty_cube.copy()
    cycles: list[dict[str, Any]] = []
    niter_done, last = 0, None
    while True:
        peak, sigma = residual_stats(residual, w, settings.mask)
        stop, reason = stop_rule(peak, sigma, niter_done, len(cycles), settings, last)
        if stop:
            break
        if maxsize is None:
            upd, info = deconvolve_cube(residual, psf_n, w, freqs, settings, niter_done, nterms)
        else:
            upd, info = parallel_minor_cycle(
                residual, psf_n, settings, maxsize, niter_done, sumwt=w, freqs=freqs,
                nterms=nterms, margin=margin, mapper=mapper,
            )  # fmt: skip
        model += upd
        if "taylor" in info:
            taylor = info["taylor"] if taylor is None else taylor + info["taylor"]
        last = int(info["niter"])
        niter_done += last
        cycles.append(info)
        residual = np.stack(
            [dirty_cube[c] - convolve_same(model[c], psf_n[c]) for c in range(nchan)]
        )
        log.debug("image-domain cycle %d: %d components", len(cycles), last)
    return dict(
        model=model,
        taylor=taylor,
        residual=residual,
        niter=niter_done,
        stop_reason=reason,
        cycles=cycles,
    )
