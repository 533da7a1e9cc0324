"""Multiscale CLEAN and multi-frequency (Taylor-term) multiscale CLEAN.

Both use one engine. For Taylor terms t = 0..nterms-1 and frequency offsets
``x_c = (nu_c - nu_ref) / nu_ref`` with channel weights ``w_c`` (normalised to sum 1):

* Taylor residuals ``R_t = sum_c w_c x_c^t D_c`` and PSF moments ``P_q = sum_c w_c x_c^q B_c``
  (q = 0..2 nterms - 2) from per-channel dirty images ``D_c`` and peak-1 PSFs ``B_c``;
* for each scale kernel ``S_s`` (unit sum, :func:`~arl_mpi.deconvolution.common.scale_kernel`)
  the smoothed residuals ``R_ts = R_t * S_s`` and cross PSFs ``P_q,s,s' = P_q * S_s * S_s'``;
* per scale the Hessian ``H_s[t, t'] = P_{t+t'},s,s(0)``; at each pixel the Taylor amplitudes
  are ``a = H_s^-1 R_.s`` and the selection criterion is
  ``bias_s * sqrt(max(0, sum_t a_t R_ts))``, i.e. the square root of the chi-squared
  reduction of a unit-gain component (for one Taylor term ``|R_0s| / sqrt(H_s)``), with
  ``bias_s = 1 - scale_bias * s / max(scales)`` (Cornwell 2008 style small-scale bias);
* the selected component (``gain * a`` at the chosen pixel and scale) is added to the Taylor
  models (shape ``S_s``) and subtracted from all smoothed residuals.

Stopping rules are those of :func:`~arl_mpi.deconvolution.hogbom.hogbom`, applied to the
absolute peak of the (masked) unsmoothed Taylor-0 residual.

The model images are in Jy/pixel; the sky at frequency nu is
``sum_t model_t ((nu - nu_ref) / nu_ref)^t``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.linalg import blas

from arl_mpi.errors import InputError

from .common import axpy_flat, convolve_same, crop_psf, normalise_psf, patch_slices, scale_kernel
from .hogbom import effective_threshold
from .policy import CleanParams, CleanSettings, as_params

log = logging.getLogger(__name__)

__all__ = ["multiscale", "mfs_clean", "spectral_index", "taylor_psfs", "taylor_residuals"]


def taylor_residuals(
    cube: np.ndarray, freqs: np.ndarray, ref_freq: float, nterms: int, weights: np.ndarray
) -> np.ndarray:
    """Weighted Taylor moments ``sum_c w_c x_c^t cube_c`` for t = 0..nterms-1."""
    x = (np.asarray(freqs, dtype=np.float64) - ref_freq) / ref_freq
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return np.stack([np.tensordot(w * x**t, cube, axes=(0, 0)) for t in range(nterms)])


class _LazyRowMax:
    """Per-row upper bounds of a non-negative image, re-scanned lazily.

    ``rowfunc(rows)`` returns the exact maxima of the given rows. ``raise_rows`` adds a
    guaranteed upper bound of the change; ``peak`` re-scans (in one vectorised call) only the
    rows whose bound could exceed the largest exact row maximum.
    """

    def __init__(self, rowfunc: Any, ny: int) -> None:
        self.rowfunc = rowfunc
        self.bound = np.asarray(rowfunc(np.arange(ny)), dtype=np.float64)
        self.exact = np.ones(ny, dtype=bool)

    def peak(self) -> tuple[int, float]:
        y = int(np.argmax(self.bound))
        if not self.exact[y]:
            best_exact = float(np.max(np.where(self.exact, self.bound, -1.0)))
            cand = np.nonzero(~self.exact & (self.bound >= best_exact))[0]
            self.bound[cand] = self.rowfunc(cand)
            self.exact[cand] = True
            y = int(np.argmax(self.bound))
        return y, float(self.bound[y])

    def raise_rows(self, r0: int, r1: int, inc: np.ndarray) -> None:
        self.bound[r0:r1] += inc
        self.exact[r0:r1] = False


def _engine(
    resid_t: np.ndarray,
    psf_q: np.ndarray,
    scales_px: Sequence[float],
    scale_bias: float,
    gain: float,
    niter: int,
    threshold: float,
    auto_threshold: float | None,
    mgain: float | None,
    mask: np.ndarray | None,
    double: bool = False,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """MS-MFS minor cycle (see module docstring).

    ``keep`` (bool [ny, nx] or None): components centred where False are subtracted from the
    residuals but not added to the models (sub-image margins); ``info['kept']`` counts the
    others.

    Implementation: all residual images (``nsc`` smoothed ones and the unsmoothed one, each
    with ``nterms`` Taylor planes) are stored with rows padded to ``nx + px`` and every cross
    PSF zero-padded to the same row length, so each update is one contiguous BLAS ``axpy``
    (as in :func:`~arl_mpi.deconvolution.hogbom.hogbom`). Criterion and residual maxima are
    tracked with lazily re-scanned per-row upper bounds; the criterion is the norm
    ``|| H_s^{-1/2} R ||`` so the bound grows by at most ``||H_s^{-1/2}|| * ||Delta R||``.
    """
    nterms, ny, nx = resid_t.shape
    rdtype = np.float64 if double else np.float32
    axpy = blas.daxpy if double else blas.saxpy
    scales = [float(s) for s in scales_px]
    kernels = [scale_kernel(s) for s in scales]
    smax = max(scales) if max(scales) > 0 else 1.0
    bias = np.array([1.0 - scale_bias * s / smax for s in scales])
    nsc = len(scales)
    nimg = nsc + 1  # image index nsc = unsmoothed residual
    py, px = psf_q.shape[1:]
    pcy, pcx = py // 2, px // 2
    width = nx + px
    work = np.zeros((nimg, nterms, ny, width), dtype=rdtype)
    for t in range(nterms):
        work[nsc, t, :, :nx] = resid_t[t]
        for s in range(nsc):
            work[s, t, :, :nx] = convolve_same(resid_t[t], kernels[s])
    views = work[..., :nx]
    flat = work.reshape(nimg, nterms, ny * width)

    # cross PSFs P(q, s, i) = psf_q[q] * S_s * K_i (K_nsc = delta), padded, and row |max|
    pflat: dict[tuple[int, int, int], np.ndarray] = {}
    prow: dict[tuple[int, int, int], np.ndarray] = {}
    centre: dict[tuple[int, int, int], float] = {}

    def key(q: int, s: int, i: int) -> tuple[int, int, int]:
        return (q, s, i) if i == nsc else (q, min(s, i), max(s, i))

    for s in range(nsc):
        for i in range(s, nimg):
            if i == nsc:
                k2 = kernels[s]
            else:
                k2 = convolve_same(np.pad(kernels[s], _pad_to(kernels[s], kernels[i])), kernels[i])
            for q in range(2 * nterms - 1):
                cp = convolve_same(psf_q[q], k2)
                pad = np.zeros((py, width), dtype=rdtype)
                pad[:, :px] = cp
                pflat[key(q, s, i)] = pad.reshape(-1)
                prow[key(q, s, i)] = np.abs(cp).max(axis=1)
                centre[key(q, s, i)] = float(cp[pcy, pcx])
    hess = np.array(
        [
            [[centre[key(t + t2, s, s)] for t2 in range(nterms)] for t in range(nterms)]
            for s in range(nsc)
        ]
    )
    hinv = np.linalg.inv(hess)
    # ||H^{-1/2}||_2 = sqrt(largest eigenvalue of H^{-1})
    hnorm = np.sqrt(np.array([np.linalg.eigvalsh(h).max() for h in hinv]))
    maskb = None if mask is None else np.asarray(mask, dtype=bool)
    maskf = None if maskb is None else maskb.astype(np.float64)
    models = np.zeros((nterms, ny, nx))
    keepb = None if keep is None else np.asarray(keep, dtype=bool)
    kept = 0

    def crit_rows(sc: int, rows: np.ndarray) -> np.ndarray:
        sub = views[sc][:, rows, :].astype(np.float64)
        if nterms == 1:
            crit = np.abs(sub[0]) * (bias[sc] * np.sqrt(hinv[sc, 0, 0]))
        else:
            a = np.einsum("tu,uyx->tyx", hinv[sc], sub)
            crit = np.sqrt(np.maximum(0.0, np.einsum("tyx,tyx->yx", a, sub))) * bias[sc]
        if maskf is not None:
            crit *= maskf[rows]
        return crit

    def res_rows(rows: np.ndarray) -> np.ndarray:
        r = np.abs(views[nsc, 0][rows].astype(np.float64))
        if maskf is not None:
            r *= maskf[rows]
        return r.max(axis=1)

    res_lazy = _LazyRowMax(res_rows, ny)
    crit_lazy = [
        _LazyRowMax(lambda rows, sc=sc: crit_rows(sc, rows).max(axis=1), ny) for sc in range(nsc)
    ]
    thr, thr_kind, sigma = effective_threshold(resid_t[0], threshold, auto_threshold, maskb)
    start_peak = res_lazy.peak()[1]
    mgain_stop = (1.0 - mgain) * start_peak if mgain is not None else -1.0
    info: dict[str, Any] = {"start_peak": start_peak, "threshold": thr, "sigma": sigma}
    done = 0
    reason = "niter"
    nscale_used = np.zeros(nsc, dtype=np.int64)
    nflat_res, nflat_psf = ny * width, py * width
    while True:
        apk = res_lazy.peak()[1]
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
        peaks = [cl.peak() for cl in crit_lazy]
        s = int(np.argmax([v for _, v in peaks]))
        y = peaks[s][0]
        x = int(np.argmax(crit_rows(s, np.array([y]))[0]))
        amp = gain * (hinv[s] @ views[s][:, y, x].astype(np.float64))
        if keepb is None or keepb[y, x]:
            ksl_img, ksl_k = patch_slices(y, x, (ny, nx), kernels[s].shape)
            for t in range(nterms):
                models[t][ksl_img] += amp[t] * kernels[s][ksl_k]
            kept += 1
        off = (y - pcy) * width + (x - pcx)
        k0, k1 = max(0, off), min(nflat_res, nflat_psf + off)
        r0, r1 = max(0, y - pcy), min(ny, y - pcy + py)
        pr = slice(r0 - y + pcy, r1 - y + pcy)
        absamp = np.abs(amp)
        for i in range(nimg):
            dnorm2 = np.zeros(r1 - r0)
            for t2 in range(nterms):
                drow = np.zeros(r1 - r0)
                for t in range(nterms):
                    kk = key(t + t2, s, i)
                    if k1 > k0:
                        axpy_flat(axpy, pflat[kk], flat[i, t2], k1 - k0, -amp[t], k0 - off, k0)
                    drow += absamp[t] * prow[kk][pr]
                if i == nsc and t2 == 0:
                    res_lazy.raise_rows(r0, r1, drow)
                dnorm2 += drow * drow
            if i < nsc:
                crit_lazy[i].raise_rows(r0, r1, bias[i] * hnorm[i] * np.sqrt(dnorm2))
        nscale_used[s] += 1
        done += 1
    info.update(
        niter=done,
        kept=kept,
        peak=float(res_rows(np.arange(ny)).max()) if ny else 0.0,
        stop_reason=reason,
        components_per_scale=dict(zip(scales, nscale_used.tolist(), strict=True)),
    )
    log.debug("msmfs: %s", info)
    return models, views[nsc].astype(np.float64), info


def _pad_to(k1: np.ndarray, k2: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding of k1 so that the full convolution with k2 fits (kernels are odd-sized)."""
    py = k2.shape[0] // 2
    px = k2.shape[1] // 2
    return ((py, py), (px, px))


def multiscale(
    dirty: np.ndarray,
    psf: np.ndarray,
    params: CleanParams | CleanSettings | None = None,
    *,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Multiscale CLEAN (single frequency).

    Parameters
    ----------
    dirty : ndarray [ny, nx]
    psf : ndarray [py, px]
        Peak at ``(py//2, px//2)``; same size as the image or larger (see
        :mod:`arl_mpi.deconvolution.common`).
    params : CleanParams, CleanSettings or None
        ``scales_px`` (component full widths in pixels, 0 = point), ``scale_bias`` (scale s
        is weighted by ``1 - scale_bias * s / max(scales)``), and ``gain``, ``niter``,
        ``threshold``, ``auto_threshold``, ``mgain``, ``mask``, ``psf_support``, ``double``
        as for :func:`~arl_mpi.deconvolution.hogbom.hogbom`.
    keep : ndarray [ny, nx] bool or None
        As for :func:`~arl_mpi.deconvolution.hogbom.hogbom` (component centres).

    Returns
    -------
    model : ndarray [ny, nx] (Jy/pixel)
    residual : ndarray [ny, nx]
    info : dict
        As for hogbom plus ``components_per_scale``.
    """
    p = as_params(params)
    psf = crop_psf(normalise_psf(psf), p.psf_support)
    models, resid, info = _run_engine(np.asarray(dirty, dtype=np.float64)[None], psf[None], p, keep)
    return models[0], resid[0], info


def _run_engine(
    resid_t: np.ndarray, psf_q: np.ndarray, p: CleanParams, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    return _engine(
        resid_t,
        psf_q,
        p.scales_px,
        p.scale_bias,
        p.gain,
        p.niter,
        p.threshold,
        p.auto_threshold,
        p.mgain,
        p.mask,
        p.double,
        keep,
    )


def taylor_psfs(
    psf_cube: np.ndarray,
    freqs: np.ndarray,
    ref_freq: float,
    nterms: int,
    weights: np.ndarray,
    psf_support: int | None = None,
) -> np.ndarray:
    """PSF moments ``P_q = sum_c w_c x_c^q B_c`` (q = 0..2 nterms - 2) of peak-1 PSFs."""
    psfs = np.stack([crop_psf(normalise_psf(p), psf_support) for p in psf_cube])
    return taylor_residuals(psfs, freqs, ref_freq, 2 * nterms - 1, weights)


def mfs_clean(
    dirty_cube: np.ndarray,
    psf_cube: np.ndarray,
    freqs: np.ndarray,
    ref_freq: float,
    nterms: int = 2,
    params: CleanParams | CleanSettings | None = None,
    *,
    channel_weights: np.ndarray | None = None,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Multi-frequency (multiscale) CLEAN with Taylor terms (MS-MFS).

    Parameters
    ----------
    dirty_cube : ndarray [nchan, ny, nx]
        Per-channel dirty/residual images, each normalised (Jy/beam).
    psf_cube : ndarray [nchan, py, px]
        Per-channel PSFs (each normalised to peak 1 here), peak at ``(py//2, px//2)``.
    freqs : ndarray [nchan]
        Channel (or sub-band) frequencies in Hz.
    ref_freq : float
        Reference frequency of the Taylor expansion.
    nterms : int
        Number of Taylor terms.
    params : CleanParams, CleanSettings or None
        As for :func:`multiscale` (``scales_px=(0,)`` for point components); thresholds
        apply to the Taylor-0 residual. None = defaults with point components only.
    channel_weights : ndarray [nchan] or None
        Relative weight of each channel (e.g. its sum of weights); default equal.
    keep : ndarray [ny, nx] bool or None
        As for :func:`multiscale`.

    Returns
    -------
    models : ndarray [nterms, ny, nx]
        Taylor-coefficient model images (Jy/pixel).
    residuals : ndarray [nterms, ny, nx]
        Weighted Taylor-moment residual images ``sum_c w_c x_c^t R_c``.
    info : dict
    """
    p = CleanParams(scales_px=(0,)) if params is None else as_params(params)
    dirty_cube = np.asarray(dirty_cube, dtype=np.float64)
    nchan = dirty_cube.shape[0]
    freqs = np.asarray(freqs, dtype=np.float64)
    if freqs.shape != (nchan,) or np.asarray(psf_cube).shape[0] != nchan:
        raise InputError("dirty_cube, psf_cube and freqs must agree in nchan")
    w = np.ones(nchan) if channel_weights is None else np.asarray(channel_weights, float)
    resid_t = taylor_residuals(dirty_cube, freqs, ref_freq, nterms, w)
    psf_q = taylor_psfs(psf_cube, freqs, ref_freq, nterms, w, p.psf_support)
    return _run_engine(resid_t, psf_q, p, keep)


def spectral_index(taylor0: np.ndarray, taylor1: np.ndarray, threshold: float) -> np.ndarray:
    """Spectral index ``alpha = taylor1 / taylor0`` where ``taylor0 > threshold`` (else NaN).

    For ``I(nu) = I0 (nu / nu_ref)^alpha`` the first-order Taylor expansion in
    ``(nu - nu_ref) / nu_ref`` has coefficients ``I0`` and ``alpha I0``.
    """
    t0 = np.asarray(taylor0, dtype=np.float64)
    t1 = np.asarray(taylor1, dtype=np.float64)
    out = np.full(t0.shape, np.nan)
    sel = t0 > threshold
    out[sel] = t1[sel] / t0[sel]
    return out
