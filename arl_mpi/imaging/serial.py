"""Serial major/minor-cycle imaging loop.

The distributed pipeline mirrors :func:`image_serial`; the per-cycle decisions are the pure
functions :func:`minor_cycle_step` and :func:`stop_rule`, so both implementations take
identical decisions given identical images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..deconvolution.common import mad_sigma
from ..deconvolution.hogbom import hogbom
from ..deconvolution.msmfs import multiscale
from .beam import fit_beam, restore
from .gridding import invert, make_psf, predict
from .weighting import apply_weighting, grid_weight_density

log = logging.getLogger(__name__)

__all__ = ["CleanSettings", "minor_cycle_step", "stop_rule", "image_serial"]


@dataclass
class CleanSettings:
    """Minor/major-cycle settings shared by the serial and distributed loops.

    Attributes
    ----------
    algorithm : {'hogbom', 'multiscale'}
    niter : int
        Total component budget over all major cycles.
    gain : float
        Loop gain.
    mgain : float or None
        Major-cycle gain (minor cycle stops when the peak fell to (1 - mgain) of its start).
    threshold : float
        Absolute stopping threshold (Jy/beam).
    auto_threshold : float or None
        Threshold in units of the MAD noise of the residual (re-estimated every cycle).
    nmiter : int
        Maximum number of major cycles.
    scales_px : list of float
        Multiscale scales.
    scale_bias : float
    mask : ndarray or None
    """

    algorithm: str = "hogbom"
    niter: int = 1000
    gain: float = 0.1
    mgain: float | None = 0.8
    threshold: float = 0.0
    auto_threshold: float | None = None
    nmiter: int = 10
    scales_px: list[float] = field(default_factory=lambda: [0, 4, 8, 16])
    scale_bias: float = 0.6
    mask: np.ndarray | None = None


def minor_cycle_step(
    residual: np.ndarray,
    psf: np.ndarray,
    model: np.ndarray,
    settings: CleanSettings,
    niter_done: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Run one minor cycle and return the model *increment*.

    Parameters
    ----------
    residual : ndarray [ny, nx]
        Current residual image (Jy/beam).
    psf : ndarray [py, px]
        PSF, peak at the centre.
    model : ndarray [ny, nx]
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
    budget = max(0, settings.niter - niter_done)
    kwargs = dict(
        gain=settings.gain,
        niter=budget,
        threshold=settings.threshold,
        auto_threshold=settings.auto_threshold,
        mgain=settings.mgain,
        mask=settings.mask,
    )
    if settings.algorithm == "hogbom":
        upd, _, info = hogbom(residual, psf, **kwargs)
    elif settings.algorithm == "multiscale":
        upd, _, info = multiscale(
            residual, psf, scales_px=settings.scales_px, scale_bias=settings.scale_bias, **kwargs
        )
    else:
        raise ValueError(f"unknown algorithm {settings.algorithm!r}")
    return upd, info


def stop_rule(
    residual_peak: float,
    noise_sigma: float,
    niter_done: int,
    cycle: int,
    settings: CleanSettings,
    last_minor_niter: int | None = None,
) -> tuple[bool, str]:
    """Decide whether to start another major cycle.

    Parameters
    ----------
    residual_peak : float
        Absolute (masked) peak of the current residual.
    noise_sigma : float
        MAD noise estimate of the current residual.
    niter_done : int
        Components done so far.
    cycle : int
        Major cycles completed so far.
    settings : CleanSettings
    last_minor_niter : int or None
        Components found by the last minor cycle (0 means no progress is possible).

    Returns
    -------
    stop : bool
    reason : str
        One of 'niter', 'threshold', 'auto_threshold', 'nmiter', 'no_progress', or ''.
    """
    if niter_done >= settings.niter:
        return True, "niter"
    if residual_peak <= settings.threshold:
        return True, "threshold"
    if (
        settings.auto_threshold is not None
        and residual_peak <= settings.auto_threshold * noise_sigma
    ):
        return True, "auto_threshold"
    if cycle >= settings.nmiter:
        return True, "nmiter"
    if last_minor_niter == 0:
        return True, "no_progress"
    return False, ""


def _peak(img: np.ndarray, mask: np.ndarray | None) -> float:
    a = np.abs(img)
    if mask is not None:
        a = np.where(mask, a, 0.0)
    return float(a.max())


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
        See :class:`CleanSettings`.
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
            _peak(residual, mask), sigma, niter_done, len(cycles), settings, last
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
            _peak(residual, mask),
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
