"""Continuum subtraction in the uv plane: a weighted polynomial in frequency per row."""

from __future__ import annotations

import numpy as np


def uv_continuum_subtract(vis: np.ndarray, weight: np.ndarray, flags: np.ndarray, freq: np.ndarray, order: int,
                          fit_channels: np.ndarray | None = None) -> np.ndarray:
    """Subtract, row by row (one baseline and time), a weighted polynomial fit over channels.

    Parameters
    ----------
    vis : ndarray [nrow, nchan] complex
    weight : ndarray [nrow, nchan]
    flags : ndarray [nrow, nchan] bool (True = bad; not used in the fit)
    freq : ndarray [nchan] Hz
    order : int, polynomial order (0 = constant)
    fit_channels : ndarray [nchan] bool or None, channels free of line emission to fit on

    Returns
    -------
    ndarray [nrow, nchan], ``vis`` minus the fitted continuum (rows with fewer good channels
    than coefficients are returned unchanged).
    """
    nrow, nchan = vis.shape
    if order < 0:
        return vis.copy()
    f0 = float(np.mean(freq))
    x = (np.asarray(freq, dtype=np.float64) - f0) / f0
    a = x[:, None] ** np.arange(order + 1)[None, :]  # [nchan, ncoef]
    w = np.where(flags, 0.0, np.asarray(weight, dtype=np.float64))
    if fit_channels is not None:
        w = w * np.asarray(fit_channels, dtype=bool)[None, :]
    # normal equations per row: (A^T W A) c = A^T W v
    m = np.einsum("rc,ck,cj->rkj", w, a, a)
    rhs = np.einsum("rc,ck,rc->rk", w, a, vis.astype(np.complex128))
    ok = np.count_nonzero(w > 0, axis=1) >= order + 1
    coef = np.zeros((nrow, order + 1), dtype=np.complex128)
    if ok.any():
        coef[ok] = np.linalg.solve(m[ok], rhs[ok][..., None])[..., 0]
    return vis - (coef @ a.T).astype(vis.dtype)
