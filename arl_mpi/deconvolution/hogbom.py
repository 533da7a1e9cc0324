"""Hogbom CLEAN minor cycle: sub-minor loops (default), the textbook loop, or Radler."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.linalg import blas

from arl_mpi.errors import ConfigError

from .common import axpy_flat, crop_psf, mad_sigma, normalise_psf
from .policy import CleanParams, CleanSettings, as_params, masked_peak
from .radler_engine import radler_hogbom, resolve_deconvolver
from .subminor import subminor_clean

log = logging.getLogger(__name__)

__all__ = ["hogbom", "hogbom_exact", "effective_threshold"]


def effective_threshold(
    residual: np.ndarray,
    threshold: float,
    auto_threshold: float | None,
    mask: np.ndarray | None = None,
    sigma: float | None = None,
) -> tuple[float, str, float]:
    """Combine absolute and MAD-based thresholds (``sigma`` given: that noise instead of the MAD).

    Returns
    -------
    threshold : float
        ``max(threshold, auto_threshold * sigma)`` with ``sigma = 1.4826 MAD(residual)``.
    kind : str
        ``'auto_threshold'`` if the automatic one is the larger, else ``'threshold'``.
    sigma : float
        The MAD noise estimate (0 if ``auto_threshold`` is None).
    """
    if auto_threshold is None:
        return float(threshold), "threshold", 0.0
    if sigma is None:
        sigma = mad_sigma(residual, mask)
    auto = auto_threshold * sigma
    if auto > threshold:
        return float(auto), "auto_threshold", sigma
    return float(threshold), "threshold", sigma


def hogbom_exact(
    dirty: np.ndarray,
    psf: np.ndarray,
    params: CleanParams | CleanSettings | None = None,
    *,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Textbook Hogbom CLEAN: the global peak every iteration, the whole PSF subtracted each time.

    Exact (the components of a straightforward Hogbom loop) but about 1000 components per
    second on 1024^2; :func:`hogbom` (sub-minor loops) is the default. Same parameters,
    returns and ``info`` as :func:`hogbom` (``info['engine'] == 'exact'``).

    Parameters
    ----------
    dirty : ndarray [ny, nx]
        Residual/dirty image (Jy/beam).
    psf : ndarray [py, px]
        PSF with its peak at ``(py//2, px//2)`` (normalised to 1 here); any size, typically
        the image size (clipped at the edges) or twice the image size (exact everywhere).
    params : CleanParams, CleanSettings or None
        ``gain``, ``niter`` (maximum number of components in this call), ``threshold``,
        ``auto_threshold`` (sigma = 1.4826 MAD of the initial residual, over the mask),
        ``mgain`` (stop at ``(1 - mgain) * starting peak``), ``mask`` (components only where
        True), ``psf_support`` (subtract only the central ``(2 psf_support + 1)^2`` PSF
        patch: faster, approximate) and ``double`` (float64 working residual; default
        float32, about twice as fast; the model is always float64). See
        :class:`~arl_mpi.deconvolution.policy.CleanParams`; scales are ignored.
    keep : ndarray [ny, nx] bool or None
        Components at pixels where False are subtracted from the residual but not added to
        the model (the margin of a sub-image, cleaned by its owner). None = keep all.

    Returns
    -------
    model : ndarray [ny, nx] float64
        Clean components (Jy/pixel).
    residual : ndarray [ny, nx] float64
    info : dict
        ``niter`` (components done), ``peak`` (final absolute masked residual peak),
        ``start_peak``, ``threshold`` (effective), ``sigma`` (MAD noise, 0 if unused),
        ``stop_reason`` in {'niter', 'threshold', 'auto_threshold', 'mgain', 'empty'},
        ``kept`` (components added to the model; ``niter`` unless ``keep`` is given).

    Notes
    -----
    Implementation: the residual is stored with rows padded to ``W = nx + px`` columns and
    the PSF zero-padded to the same row length, so that a 2-D shifted PSF subtraction is
    one contiguous BLAS ``axpy`` over the flattened arrays (the zero padding absorbs the
    row wrap-around). Per-row upper bounds of the absolute residual are kept; subtracting a
    component raises them by ``|amp| * max|PSF row|`` and a row is re-scanned only when its
    bound is the largest, so most iterations scan a handful of rows instead of the image.
    """
    p = as_params(params)
    if p.search_weight is not None:
        raise ConfigError("hogbom_exact: search weights (local RMS) need the sub-minor engine")
    gain, niter, threshold, mask, double = p.gain, p.niter, p.threshold, p.mask, p.double
    dirty = np.asarray(dirty, dtype=np.float64)
    ny, nx = dirty.shape
    rdtype = np.float64 if double else np.float32
    axpy = blas.daxpy if double else blas.saxpy
    psf = crop_psf(normalise_psf(psf), p.psf_support)
    py, px = psf.shape
    cy, cx = py // 2, px // 2
    width = nx + px
    res_pad = np.zeros((ny, width), dtype=rdtype)
    res_pad[:, :nx] = dirty
    residual = res_pad[:, :nx]  # view
    res_flat = res_pad.reshape(-1)
    psf_pad = np.zeros((py, width), dtype=rdtype)
    psf_pad[:, :px] = psf
    psf_flat = psf_pad.reshape(-1)
    nflat_res, nflat_psf = res_flat.size, psf_flat.size
    model = np.zeros((ny, nx))
    maskb = None if mask is None else np.asarray(mask, dtype=bool)
    maskf = None if maskb is None else maskb.astype(rdtype)
    buf = np.empty((ny, nx), dtype=rdtype)
    keepb = None if keep is None else np.asarray(keep, dtype=bool)
    kept = 0

    def absmax_rows(r0: int, r1: int) -> np.ndarray:
        sub = residual[r0:r1]
        if maskf is not None:
            sub = np.multiply(sub, maskf[r0:r1], out=buf[r0:r1])
        return np.maximum(sub.max(axis=1), -sub.min(axis=1))

    thr, thr_kind, sigma = effective_threshold(dirty, threshold, p.auto_threshold, maskb)
    # Lazy row maxima: ``bound[r]`` is an upper bound of the masked |residual| in row r and
    # is exact where ``exact[r]``. Subtracting amp * PSF raises the bound of row r by at most
    # |amp| * max|PSF row|; a row is only re-scanned when its bound is the largest.
    bound = absmax_rows(0, ny).astype(np.float64)
    exact = np.ones(ny, dtype=bool)
    psf_rowabs = np.abs(psf).max(axis=1).astype(np.float64)
    start_peak = float(bound.max()) if ny else 0.0
    mgain_stop = (1.0 - p.mgain) * start_peak if p.mgain is not None else -1.0
    info: dict[str, Any] = {"start_peak": start_peak, "threshold": thr, "sigma": sigma}
    reason = "niter"
    done = 0
    nscan = 0

    def find_peak_row() -> int:
        nonlocal nscan
        y = int(np.argmax(bound))
        if exact[y]:
            return y
        # re-scan, in one vectorised pass, every inexact row that could hold the maximum
        best_exact = float(np.max(np.where(exact, bound, -1.0)))
        cand = np.nonzero(~exact & (bound >= best_exact))[0]
        sub = residual[cand]
        if maskf is not None:
            sub *= maskf[cand]
        bound[cand] = np.maximum(sub.max(axis=1), -sub.min(axis=1))
        exact[cand] = True
        nscan += cand.size
        return int(np.argmax(bound))

    while True:
        y = find_peak_row() if ny else 0
        apk = bound[y] if ny else 0.0
        if apk <= 0.0:
            reason = "empty"
            break
        if apk <= thr:
            reason = thr_kind
            break
        if apk <= mgain_stop:
            reason = "mgain"
            break
        if done >= niter:
            reason = "niter"
            break
        row = residual[y] if maskf is None else residual[y] * maskf[y]
        x = int(np.argmax(np.abs(row)))
        amp = gain * float(residual[y, x])
        if keepb is None or keepb[y, x]:
            model[y, x] += amp
            kept += 1
        # flat offset between residual index k and PSF index q: k = q + off
        off = (y - cy) * width + (x - cx)
        k0 = max(0, off)
        k1 = min(nflat_res, nflat_psf + off)
        if k1 > k0:
            axpy_flat(axpy, psf_flat, res_flat, k1 - k0, -amp, k0 - off, k0)
        r0, r1 = max(0, y - cy), min(ny, y - cy + py)
        bound[r0:r1] += abs(amp) * psf_rowabs[r0 - y + cy : r1 - y + cy]
        exact[r0:r1] = False
        done += 1
    final_peak = 0.0
    if ny:
        bound = absmax_rows(0, ny)
        final_peak = float(bound.max())
    info["row_scans"] = nscan
    info.update(niter=done, kept=kept, peak=final_peak, stop_reason=reason, engine="exact")
    log.debug("hogbom: %s", info)
    return model, residual.astype(np.float64), info


def hogbom(
    dirty: np.ndarray,
    psf: np.ndarray,
    params: CleanParams | CleanSettings | None = None,
    *,
    keep: np.ndarray | None = None,
    engine: str = "arl",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Hogbom CLEAN with sub-minor loops (WSClean's optimisation), or the textbook loop.

    Parameters
    ----------
    dirty : ndarray [ny, nx]
        Residual/dirty image (Jy/beam); not modified.
    psf : ndarray [py, px]
        PSF with its peak at ``(py//2, px//2)`` (normalised to 1 here); any size, typically
        the image size (clipped at the edges) or twice the image size (exact everywhere).
    params : CleanParams, CleanSettings or None
        ``gain``, ``niter`` (maximum number of components in this call), ``threshold``,
        ``auto_threshold`` (sigma = 1.4826 MAD of the initial residual, over the mask),
        ``mgain`` (stop at ``(1 - mgain) * starting peak``), ``mask`` (components only where
        True), ``psf_support`` (subtract only the central ``(2 psf_support + 1)^2`` PSF
        patch), ``double`` (float64 working residual; default float32; the model is always
        float64), ``subminor`` (default True: sub-minor loops,
        :func:`~arl_mpi.deconvolution.subminor.subminor_clean`; False:
        :func:`hogbom_exact`), ``nthreads`` (FFT threads), ``search_weight`` (peaks and
        thresholds on ``|residual| * search_weight``: local RMS) and ``noise_sigma`` (the
        auto-threshold's sigma instead of the MAD). See
        :class:`~arl_mpi.deconvolution.policy.CleanParams`; scales are ignored.
    keep : ndarray [ny, nx] bool or None
        Components at pixels where False are subtracted from the residual but not added to
        the model (the margin of a sub-image, cleaned by its owner). None = keep all.
    engine : {'arl', 'radler', 'auto'}
        'radler': Radler's generic CLEAN (the ``[radler]`` extra) where it does what ours does
        (:func:`~arl_mpi.deconvolution.radler_engine.resolve_deconvolver`); else ours.

    Returns
    -------
    model : ndarray [ny, nx] float64
        Clean components (Jy/pixel).
    residual : ndarray [ny, nx] float64
    info : dict
        ``niter`` (components done), ``peak`` (final absolute masked residual peak),
        ``start_peak``, ``threshold`` (effective), ``sigma`` (MAD noise, 0 if unused),
        ``stop_reason`` in {'niter', 'threshold', 'auto_threshold', 'mgain', 'empty'},
        ``kept`` (components added to the model; ``niter`` unless ``keep`` is given),
        ``engine`` ('subminor', 'exact' or 'radler'), and for sub-minor loops ``loops``
        (their number) and ``ffts`` (full-image updates done by FFT).
    """
    p = as_params(params)
    if resolve_deconvolver(engine, keep=keep is not None, params=p) == "radler":
        thr, thr_kind, sigma = effective_threshold(dirty, p.threshold, p.auto_threshold)
        model, residual, info = radler_hogbom(dirty, psf, p, threshold=thr)
        if info["stop_reason"] == "threshold":
            info["stop_reason"] = thr_kind
        info["sigma"] = sigma
        return model, residual, info
    if not p.subminor:
        return hogbom_exact(dirty, psf, p, keep=keep)
    dirty = np.asarray(dirty, dtype=np.float64)
    rdtype = np.float64 if p.double else np.float32
    psf = crop_psf(normalise_psf(psf), p.psf_support)
    maskb = None if p.mask is None else np.asarray(p.mask, dtype=bool)
    thr, thr_kind, sigma = effective_threshold(dirty, p.threshold, p.auto_threshold, maskb, p.noise_sigma)
    weight = None if p.search_weight is None else np.asarray(p.search_weight, dtype=np.float64)
    start_peak = masked_peak(dirty if weight is None else dirty * weight, maskb)
    mgain_stop = (1.0 - p.mgain) * start_peak if p.mgain is not None else -1.0
    residual = dirty.astype(rdtype)
    model, sinfo = subminor_clean(
        residual,
        psf,
        gain=p.gain,
        niter=p.niter,
        level_stop=max(thr, mgain_stop),
        mask=maskb,
        keep=None if keep is None else np.asarray(keep, dtype=bool),
        nthreads=p.nthreads,
        weight=weight,
    )
    peak = masked_peak(residual if weight is None else residual * weight, maskb)
    reason = sinfo["stopped"]  # checked in hogbom_exact's order: empty, threshold, mgain, niter
    if reason == "level":
        reason = thr_kind if peak <= thr else "mgain"
    info: dict[str, Any] = {"start_peak": start_peak, "threshold": thr, "sigma": sigma}
    info.update(
        niter=sinfo["niter"],
        kept=sinfo["kept"],
        peak=peak,
        stop_reason=reason,
        engine="subminor",
        loops=sinfo["loops"],
        ffts=sinfo["ffts"],
    )
    log.debug("hogbom: %s", info)
    return model, residual.astype(np.float64), info
