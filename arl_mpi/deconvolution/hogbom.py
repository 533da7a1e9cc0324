"""Vectorised Hogbom CLEAN minor cycle."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.linalg import blas

from .common import axpy_flat, crop_psf, mad_sigma, normalise_psf
from .policy import CleanParams, CleanSettings, as_params

log = logging.getLogger(__name__)

__all__ = ["hogbom", "effective_threshold"]


def effective_threshold(
    residual: np.ndarray,
    threshold: float,
    auto_threshold: float | None,
    mask: np.ndarray | None = None,
) -> tuple[float, str, float]:
    """Combine absolute and MAD-based thresholds.

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
    sigma = mad_sigma(residual, mask)
    auto = auto_threshold * sigma
    if auto > threshold:
        return float(auto), "auto_threshold", sigma
    return float(threshold), "threshold", sigma


def hogbom(
    dirty: np.ndarray,
    psf: np.ndarray,
    params: CleanParams | CleanSettings | None = None,
    *,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Hogbom CLEAN.

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
    info.update(niter=done, kept=kept, peak=final_peak, stop_reason=reason)
    log.debug("hogbom: %s", info)
    return model, residual.astype(np.float64), info
