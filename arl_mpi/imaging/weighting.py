"""Imaging weights designed for a distributed sum.

The uv density (:func:`grid_weight_density`) is additive over disjoint partitions of the
visibilities, so a distributed caller sums partial densities and then calls
:func:`apply_weighting` on each partition with the global density.

uv cell mapping: the uv grid of an ``npix_x x npix_y`` image with pixel ``cell`` has spacing
``du = 1 / (npix_x cell)``, ``dv = 1 / (npix_y cell)``. A sample (u, v) in wavelengths is
first folded onto the half plane ``v > 0 or (v == 0 and u >= 0)`` (a visibility and its
Hermitian conjugate are the same measurement), then assigned to cell
``iu = rint(u / du) + npix_x // 2``, ``iv = rint(v / dv) + npix_y // 2``. Samples outside the
grid do not contribute to the density and receive weight 0 under uniform/Briggs weighting
(they would alias in the image anyway).
"""

from __future__ import annotations

import logging

import numpy as np

from arl_mpi.constants import SPEED_OF_LIGHT as C_LIGHT

log = logging.getLogger(__name__)

__all__ = ["grid_weight_density", "apply_weighting", "taper_gaussian"]


def _uv_wavelengths(uvw: np.ndarray, freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uvw = np.asarray(uvw, dtype=np.float64)
    scale = np.atleast_1d(np.asarray(freq, dtype=np.float64)) / C_LIGHT
    return uvw[:, 0:1] * scale[None, :], uvw[:, 1:2] * scale[None, :]


def _cell_index(
    uvw: np.ndarray, freq: np.ndarray, npix_x: int, npix_y: int, cell: float
) -> tuple[np.ndarray, np.ndarray]:
    """Flat uv-cell index [nrow, nchan] and in-grid boolean mask."""
    u, v = _uv_wavelengths(uvw, freq)
    flip = (v < 0) | ((v == 0) & (u < 0))
    u = np.where(flip, -u, u)
    v = np.where(flip, -v, v)
    # floor binning, as WSClean 3.1 grids its weight density (a cell spans [k, k+1) / (N cell))
    iu = np.floor(u * (npix_x * cell)).astype(np.int64) + npix_x // 2
    iv = np.floor(v * (npix_y * cell)).astype(np.int64) + npix_y // 2
    inside = (iu >= 0) & (iu < npix_x) & (iv >= 0) & (iv < npix_y)
    idx = np.where(inside, iv * npix_x + iu, 0)
    return idx, inside


def _good(weight: np.ndarray, flags: np.ndarray | None) -> np.ndarray:
    w = np.asarray(weight, dtype=np.float64)
    if flags is not None:
        w = np.where(np.asarray(flags, dtype=bool), 0.0, w)
    return w


def grid_weight_density(
    uvw: np.ndarray,
    freq: np.ndarray,
    weight: np.ndarray,
    flags: np.ndarray | None,
    npix_x: int,
    npix_y: int,
    cell: float,
) -> np.ndarray:
    """Sum of (unflagged) weights per uv cell of the image's uv grid.

    Parameters
    ----------
    uvw : ndarray [nrow, 3]
        Baselines in metres.
    freq : ndarray [nchan]
        Frequencies in Hz.
    weight : ndarray [nrow, nchan]
        Input (natural) weights.
    flags : ndarray [nrow, nchan] bool or None
        True = flagged (excluded).
    npix_x, npix_y : int
        Image size in pixels.
    cell : float
        Pixel size in radians.

    Returns
    -------
    density : ndarray [npix_y, npix_x] float64
        Row index = v cell, column index = u cell (see module docstring). Additive over
        disjoint partitions of the rows/channels.
    """
    idx, inside = _cell_index(uvw, freq, npix_x, npix_y, cell)
    w = np.broadcast_to(_good(weight, flags), idx.shape)
    dens = np.bincount(idx[inside], weights=w[inside], minlength=npix_x * npix_y)
    return dens.reshape(npix_y, npix_x)


def apply_weighting(
    uvw: np.ndarray,
    freq: np.ndarray,
    weight: np.ndarray,
    flags: np.ndarray | None,
    density: np.ndarray,
    scheme: str = "natural",
    robust: float = 0.0,
    *,
    cell: float,
    npix_x: int,
    npix_y: int,
) -> np.ndarray:
    """Re-weight visibilities given the (global) uv density.

    Parameters
    ----------
    uvw, freq, weight, flags
        Visibility data (see :func:`grid_weight_density`).
    density : ndarray [npix_y, npix_x]
        Global density from :func:`grid_weight_density` (summed over all partitions).
    scheme : {'natural', 'uniform', 'briggs'}
        Weighting scheme.
    robust : float
        Briggs robustness R in [-2, 2]. ``w' = w / (1 + W_k f^2)`` with
        ``f^2 = (5 * 10^-R)^2 / (sum_k W_k^2 / sum_i w_i)``; uniform is ``w' = w / W_k``.
    cell, npix_x, npix_y
        Image geometry that defined ``density``.

    Returns
    -------
    weight : ndarray [nrow, nchan] float64
        New weights; flagged samples get 0. Under uniform/Briggs, samples outside the uv grid
        also get 0.

    Raises
    ------
    ValueError
        Unknown scheme, robust outside [-2, 2], or density of the wrong shape.
    """
    scheme = scheme.lower()
    if scheme not in ("natural", "uniform", "briggs"):
        raise ValueError(f"unknown weighting scheme {scheme!r}")
    if not -2.0 <= robust <= 2.0:
        raise ValueError(f"robust must be in [-2, 2], got {robust}")
    density = np.asarray(density, dtype=np.float64)
    if density.shape != (npix_y, npix_x):
        raise ValueError(f"density shape {density.shape} != {(npix_y, npix_x)}")
    w = _good(weight, flags)
    nrow, nchan = np.asarray(uvw).shape[0], np.atleast_1d(freq).size
    w = np.array(np.broadcast_to(w, (nrow, nchan)))
    if scheme == "natural":
        return w
    idx, inside = _cell_index(uvw, freq, npix_x, npix_y, cell)
    wk = density.ravel()[idx]
    if scheme == "uniform":
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(inside & (wk > 0), w / wk, 0.0)
        return out
    sum_w = density.sum()
    sum_w2 = np.sum(density * density)
    if sum_w <= 0:
        return np.zeros_like(w)
    f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (sum_w2 / sum_w)
    return np.where(inside, w / (1.0 + wk * f2), 0.0)


def taper_gaussian(
    uvw: np.ndarray, freq: np.ndarray, weight: np.ndarray, fwhm_rad: float
) -> np.ndarray:
    """Multiply weights by a Gaussian uv taper (WSClean ``-taper-gaussian`` meaning).

    The taper is the Fourier transform of an image-plane circular Gaussian of FWHM
    ``fwhm_rad`` (radians), normalised to 1 at the uv origin:
    ``t(u, v) = exp(-2 pi^2 sigma^2 (u^2 + v^2))`` with ``sigma = fwhm / (2 sqrt(2 ln 2))``
    and u, v in wavelengths.

    Returns
    -------
    weight : ndarray [nrow, nchan] float64
    """
    u, v = _uv_wavelengths(uvw, freq)
    sigma = fwhm_rad / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    taper = np.exp(-2.0 * np.pi**2 * sigma**2 * (u * u + v * v))
    return np.asarray(weight, dtype=np.float64) * taper
