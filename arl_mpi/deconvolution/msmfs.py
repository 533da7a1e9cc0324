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

from .common import convolve_same, crop_psf, normalise_psf, patch_slices, scale_kernel
from .hogbom import effective_threshold

log = logging.getLogger(__name__)

__all__ = ["multiscale", "mfs_clean", "spectral_index", "taylor_residuals"]


def taylor_residuals(
    cube: np.ndarray, freqs: np.ndarray, ref_freq: float, nterms: int, weights: np.ndarray
) -> np.ndarray:
    """Weighted Taylor moments ``sum_c w_c x_c^t cube_c`` for t = 0..nterms-1."""
    x = (np.asarray(freqs, dtype=np.float64) - ref_freq) / ref_freq
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return np.stack([np.tensordot(w * x**t, cube, axes=(0, 0)) for t in range(nterms)])


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
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    nterms, ny, nx = resid_t.shape
    scales = [float(s) for s in scales_px]
    kernels = [scale_kernel(s) for s in scales]
    smax = max(scales) if max(scales) > 0 else 1.0
    bias = np.array([1.0 - scale_bias * s / smax for s in scales])
    nsc = len(scales)
    psf_shape = psf_q.shape[1:]
    pcy, pcx = psf_shape[0] // 2, psf_shape[1] // 2
    # smoothed residuals: index 0 .. nsc-1 per scale; unsmoothed kept separately
    resid = resid_t.copy()
    rs = np.stack(
        [np.stack([convolve_same(resid[t], k) for t in range(nterms)]) for k in kernels]
    )  # [nsc, nterms, ny, nx]
    # cross PSFs P[q, s, s'] and P[q, s, delta]
    pss = np.empty((2 * nterms - 1, nsc, nsc) + psf_shape)
    ps0 = np.empty((2 * nterms - 1, nsc) + psf_shape)
    for s in range(nsc):
        for q in range(2 * nterms - 1):
            ps0[q, s] = convolve_same(psf_q[q], kernels[s])
        for s2 in range(s, nsc):
            k2 = convolve_same(np.pad(kernels[s], _pad_to(kernels[s], kernels[s2])), kernels[s2])
            for q in range(2 * nterms - 1):
                pss[q, s, s2] = convolve_same(psf_q[q], k2)
                pss[q, s2, s] = pss[q, s, s2]
    hess = np.empty((nsc, nterms, nterms))
    for s in range(nsc):
        for t in range(nterms):
            for t2 in range(nterms):
                hess[s, t, t2] = pss[t + t2, s, s, pcy, pcx]
    hinv = np.linalg.inv(hess)
    maskb = None if mask is None else np.asarray(mask, dtype=bool)
    models = np.zeros((nterms, ny, nx))

    maskf = None if maskb is None else maskb.astype(np.float64)

    def crit_rows(sc: int, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
        """Criterion (bias * sqrt(chi2 reduction)) and Taylor amplitudes for rows r0:r1."""
        sub = rs[sc][:, r0:r1]
        a = np.einsum("tu,uyx->tyx", hinv[sc], sub)
        crit = np.sqrt(np.maximum(0.0, np.einsum("tyx,tyx->yx", a, sub))) * bias[sc]
        if maskf is not None:
            crit *= maskf[r0:r1]
        return crit, a

    def res_rowmax(r0: int, r1: int) -> np.ndarray:
        r = np.abs(resid[0][r0:r1])
        if maskf is not None:
            r *= maskf[r0:r1]
        return r.max(axis=1)

    # cached criterion images and per-row maxima; only rows touched by the PSF are updated
    crits = np.empty((nsc, ny, nx))
    crit_rowmax = np.empty((nsc, ny))
    for sc in range(nsc):
        crits[sc] = crit_rows(sc, 0, ny)[0]
        crit_rowmax[sc] = crits[sc].max(axis=1)
    rowmax0 = res_rowmax(0, ny)

    thr, thr_kind, sigma = effective_threshold(resid[0], threshold, auto_threshold, maskb)
    start_peak = float(rowmax0.max())
    mgain_stop = (1.0 - mgain) * start_peak if mgain is not None else -1.0
    info: dict[str, Any] = {"start_peak": start_peak, "threshold": thr, "sigma": sigma}
    done = 0
    reason = "niter"
    nscale_used = np.zeros(nsc, dtype=np.int64)
    while True:
        apk = float(rowmax0.max())
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
        rows = np.argmax(crit_rowmax, axis=1)
        vals = crit_rowmax[np.arange(nsc), rows]
        s = int(np.argmax(vals))
        y = int(rows[s])
        x = int(np.argmax(crits[s, y]))
        best_a = hinv[s] @ rs[s][:, y, x]
        amp = gain * best_a
        ksl_img, ksl_k = patch_slices(y, x, (ny, nx), kernels[s].shape)
        for t in range(nterms):
            models[t][ksl_img] += amp[t] * kernels[s][ksl_k]
        img_sl, psf_sl = patch_slices(y, x, (ny, nx), psf_shape)
        for t2 in range(nterms):
            upd0 = sum(amp[t] * ps0[t + t2, s][psf_sl] for t in range(nterms))
            resid[t2][img_sl] -= upd0
            for s2 in range(nsc):
                upd = sum(amp[t] * pss[t + t2, s, s2][psf_sl] for t in range(nterms))
                rs[s2, t2][img_sl] -= upd
        r0, r1 = img_sl[0].start, img_sl[0].stop
        for sc in range(nsc):
            crits[sc, r0:r1] = crit_rows(sc, r0, r1)[0]
            crit_rowmax[sc, r0:r1] = crits[sc, r0:r1].max(axis=1)
        rowmax0[r0:r1] = res_rowmax(r0, r1)
        nscale_used[s] += 1
        done += 1
    info.update(
        niter=done,
        peak=float(rowmax0.max()),
        stop_reason=reason,
        components_per_scale=dict(zip(scales, nscale_used.tolist(), strict=True)),
    )
    log.debug("msmfs: %s", info)
    return models, resid, info


def _pad_to(k1: np.ndarray, k2: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding of k1 so that the full convolution with k2 fits (kernels are odd-sized)."""
    py = k2.shape[0] // 2
    px = k2.shape[1] // 2
    return ((py, py), (px, px))


def multiscale(
    dirty: np.ndarray,
    psf: np.ndarray,
    *,
    scales_px: Sequence[float] = (0, 4, 8, 16),
    scale_bias: float = 0.6,
    gain: float = 0.1,
    niter: int = 1000,
    threshold: float = 0.0,
    auto_threshold: float | None = None,
    mgain: float | None = None,
    mask: np.ndarray | None = None,
    psf_support: int | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Multiscale CLEAN (single frequency).

    Parameters
    ----------
    dirty : ndarray [ny, nx]
    psf : ndarray [py, px]
        Peak at ``(py//2, px//2)``; same size as the image or larger (see
        :mod:`arl_mpi.deconvolution.common`).
    scales_px : sequence of float
        Component full widths in pixels (0 = point).
    scale_bias : float
        Small-scale bias: scale s is weighted by ``1 - scale_bias * s / max(scales)``.
    gain, niter, threshold, auto_threshold, mgain, mask
        As for :func:`~arl_mpi.deconvolution.hogbom.hogbom`.
    psf_support : int or None
        Use only the central ``(2 psf_support + 1)^2`` PSF patch (faster, approximate).

    Returns
    -------
    model : ndarray [ny, nx] (Jy/pixel)
    residual : ndarray [ny, nx]
    info : dict
        As for hogbom plus ``components_per_scale``.
    """
    psf = crop_psf(normalise_psf(psf), psf_support)
    models, resid, info = _engine(
        np.asarray(dirty, dtype=np.float64)[None],
        psf[None],
        scales_px,
        scale_bias,
        gain,
        niter,
        threshold,
        auto_threshold,
        mgain,
        mask,
    )
    return models[0], resid[0], info


def mfs_clean(
    dirty_cube: np.ndarray,
    psf_cube: np.ndarray,
    freqs: np.ndarray,
    ref_freq: float,
    nterms: int = 2,
    *,
    channel_weights: np.ndarray | None = None,
    scales_px: Sequence[float] = (0,),
    scale_bias: float = 0.6,
    gain: float = 0.1,
    niter: int = 1000,
    threshold: float = 0.0,
    auto_threshold: float | None = None,
    mgain: float | None = None,
    mask: np.ndarray | None = None,
    psf_support: int | None = None,
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
    channel_weights : ndarray [nchan] or None
        Relative weight of each channel (e.g. its sum of weights); default equal.
    scales_px, scale_bias, gain, niter, threshold, auto_threshold, mgain, mask
    psf_support
        As for :func:`multiscale`; thresholds apply to the Taylor-0 residual.

    Returns
    -------
    models : ndarray [nterms, ny, nx]
        Taylor-coefficient model images (Jy/pixel).
    residuals : ndarray [nterms, ny, nx]
        Weighted Taylor-moment residual images ``sum_c w_c x_c^t R_c``.
    info : dict
    """
    dirty_cube = np.asarray(dirty_cube, dtype=np.float64)
    nchan = dirty_cube.shape[0]
    freqs = np.asarray(freqs, dtype=np.float64)
    if freqs.shape != (nchan,) or np.asarray(psf_cube).shape[0] != nchan:
        raise ValueError("dirty_cube, psf_cube and freqs must agree in nchan")
    w = np.ones(nchan) if channel_weights is None else np.asarray(channel_weights, float)
    psfs = np.stack([crop_psf(normalise_psf(p), psf_support) for p in psf_cube])
    resid_t = taylor_residuals(dirty_cube, freqs, ref_freq, nterms, w)
    psf_q = taylor_residuals(psfs, freqs, ref_freq, 2 * nterms - 1, w)
    return _engine(
        resid_t,
        psf_q,
        scales_px,
        scale_bias,
        gain,
        niter,
        threshold,
        auto_threshold,
        mgain,
        mask,
    )


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
