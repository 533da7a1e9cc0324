"""Imaging weights designed for a distributed sum, with WSClean 3.1's semantics.

The uv density (:func:`grid_weight_density`) is additive over disjoint partitions of the
visibilities, so a distributed caller sums partial densities, turns the global density into
one weight per uv cell once (:func:`cell_weights`), and then weights each partition with it
(:func:`apply_cell_weights`); :func:`apply_weighting` does both steps for one data set.

uv cell mapping: the weighting grid of ``nx x ny`` cells (the image's, or, as WSClean does by
default, the image padded by ``-padding``: :func:`padded_size`) with pixel ``cell`` has spacing
``du = 1 / (nx cell)``, ``dv = 1 / (ny cell)``. A sample (u, v) in wavelengths is first folded
onto the half plane ``v > 0 or (v == 0 and u >= 0)`` (a visibility and its Hermitian
conjugate are the same measurement), then assigned to cell
``iu = floor(u / du) + nx // 2``, ``iv = floor(v / dv) + ny // 2`` (cell edges at integer
multiples of the spacing, as WSClean 3.1 bins). Samples outside the grid do not contribute
to the density and receive weight 0 under uniform/Briggs weighting (they would alias in the
image anyway). Only the rows ``iv >= ny // 2`` (the folded half plane) are ever filled.

Cell weights (WSClean's ``ImageWeights``): uniform ``1 / W_k`` (0 for an empty cell); Briggs
``1 / (1 + W_k f^2)`` with ``f^2 = (5 * 10^-R)^2 / (sum_k W_k^2 / sum_k W_k)`` (1 for an empty
cell). Then, with ``-weighting-rank-filter LEVEL`` (WSClean's default 3; values below 1 turn
it off), every non-zero cell weight larger than ``LEVEL`` times the mean of the non-zero cell
weights in its window is set to that value (:func:`rank_filter`). The window of cell
``(x, y)`` for ``-weighting-rank-filter-size N`` (default 16) spans ``x - N//2 .. x + N//2 - 1``
and the same in y, clipped to the half-plane grid.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from arl_mpi.constants import SPEED_OF_LIGHT as C_LIGHT

log = logging.getLogger(__name__)

__all__ = [
    "grid_weight_density",
    "apply_weighting",
    "apply_cell_weights",
    "cell_weights",
    "padded_size",
    "rank_filter",
    "taper_gaussian",
]

#: WSClean 3.1 defaults: ``-padding``, ``-weighting-rank-filter``, ``-weighting-rank-filter-size``.
DEFAULT_PADDING = 1.2
DEFAULT_RANK_FILTER = 3.0
DEFAULT_RANK_FILTER_SIZE = 16


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


def padded_size(npix: int, padding: float = DEFAULT_PADDING) -> int:
    """WSClean's padded image size: ``ceil(npix * padding)`` rounded up to a multiple of 4.

    The weighting grid of a run is the padded image's uv grid (WSClean 3.1 grids its weight
    density on it); ``padding = 1`` gives the image's own grid when ``npix`` is a multiple of 4.

    Raises
    ------
    ValueError
        ``padding`` below 1.
    """
    if not padding >= 1.0:
        raise ValueError(f"padding must be >= 1, got {padding}")
    n = int(math.ceil(npix * padding))
    return n + (4 - n % 4) % 4


def _windowed(values: np.ndarray, d: int) -> np.ndarray:
    """Sum of ``values`` over the window ``[i - d, i + d)`` of each index, along both axes,
    clipped to the array (separable running sums: one cumulative sum per axis)."""
    out = values
    for axis in (0, 1):
        n = out.shape[axis]
        c = np.cumsum(out, axis=axis)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
        i = np.arange(n)
        hi = np.minimum(i + d, n)
        lo = np.maximum(i - d, 0)
        out = np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)
    return out


def rank_filter(weights: np.ndarray, level: float = DEFAULT_RANK_FILTER,
                size: int = DEFAULT_RANK_FILTER_SIZE) -> np.ndarray:
    """Cap each non-zero cell weight at ``level`` x the mean non-zero weight of its window.

    WSClean's ``-weighting-rank-filter LEVEL -weighting-rank-filter-size SIZE``: the window of
    cell ``(y, x)`` spans rows ``y - SIZE//2 .. y + SIZE//2 - 1`` and the same columns, clipped
    to the grid; zero cells are neither changed nor counted. ``level < 1`` leaves the weights
    unchanged (as WSClean does).

    Parameters
    ----------
    weights : ndarray [ny, nx]
        Cell weights (the half-plane grid that holds data).
    level : float
        Filter level.
    size : int
        Window size in cells (>= 2).

    Returns
    -------
    ndarray [ny, nx] float64
        The filtered weights (a new array).
    """
    g = np.asarray(weights, dtype=np.float64)
    if level < 1.0:
        return g.copy()
    if size < 2:
        raise ValueError(f"rank filter size must be >= 2, got {size}")
    nonzero = g != 0
    d = int(size) // 2
    total = _windowed(np.where(nonzero, g, 0.0), d)
    count = _windowed(nonzero.astype(np.float64), d)
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = level * total / count
    return np.where(nonzero & (g > cap), cap, g)


def cell_weights(
    density: np.ndarray,
    scheme: str,
    robust: float = 0.0,
    rank_filter_level: float = 0.0,
    rank_filter_size: int = DEFAULT_RANK_FILTER_SIZE,
) -> np.ndarray:
    """The weight of each uv cell, from the global density (uniform or Briggs).

    Computed once from the summed density (on the driver); each visibility's new weight is
    its input weight times its cell's weight (:func:`apply_cell_weights`).

    Parameters
    ----------
    density : ndarray [ny, nx]
        Global density from :func:`grid_weight_density` on the weighting grid.
    scheme : {'uniform', 'briggs'}
    robust : float
        Briggs robustness R in [-2, 2].
    rank_filter_level, rank_filter_size
        :func:`rank_filter` of the cell weights (level < 1: off).

    Returns
    -------
    ndarray [ny, nx] float64
        Rows below ``ny // 2`` (never filled, see the module docstring) are 0.

    Raises
    ------
    ValueError
        Unknown scheme or robust outside [-2, 2].
    """
    scheme = scheme.lower()
    if scheme not in ("uniform", "briggs"):
        raise ValueError(f"cell weights need uniform or briggs weighting, not {scheme!r}")
    if not -2.0 <= robust <= 2.0:
        raise ValueError(f"robust must be in [-2, 2], got {robust}")
    dens = np.asarray(density, dtype=np.float64)
    half = dens[dens.shape[0] // 2:]  # the folded half plane, as WSClean's grid
    if scheme == "uniform":
        with np.errstate(divide="ignore"):
            g = np.where(half > 0, 1.0 / half, 0.0)
    else:
        sum_w = half.sum()
        if sum_w <= 0:
            g = np.zeros_like(half)
        else:
            f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (np.sum(half * half) / sum_w)
            g = 1.0 / (1.0 + half * f2)  # 1 in an empty cell, as WSClean
    g = rank_filter(g, rank_filter_level, rank_filter_size)
    out = np.zeros_like(dens)
    out[dens.shape[0] // 2:] = g
    return out


def apply_cell_weights(
    uvw: np.ndarray,
    freq: np.ndarray,
    weight: np.ndarray,
    flags: np.ndarray | None,
    weights_grid: np.ndarray,
    cell: float,
) -> np.ndarray:
    """Multiply each visibility's weight by its uv cell's weight (:func:`cell_weights`).

    Parameters
    ----------
    uvw, freq, weight, flags
        Visibility data (see :func:`grid_weight_density`).
    weights_grid : ndarray [ny, nx]
        Cell weights on the weighting grid; its shape defines the uv cells.
    cell : float
        Image pixel size in radians.

    Returns
    -------
    weight : ndarray [nrow, nchan] float64
        Flagged samples and samples outside the grid get 0.
    """
    grid = np.asarray(weights_grid, dtype=np.float64)
    ny, nx = grid.shape
    w = _good(weight, flags)
    nrow, nchan = np.asarray(uvw).shape[0], np.atleast_1d(freq).size
    w = np.broadcast_to(w, (nrow, nchan))
    idx, inside = _cell_index(uvw, freq, nx, ny, cell)
    return np.where(inside, w * grid.ravel()[idx], 0.0)


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
    rank_filter_level: float = 0.0,
    rank_filter_size: int = DEFAULT_RANK_FILTER_SIZE,
) -> np.ndarray:
    """Re-weight visibilities given the (global) uv density.

    Parameters
    ----------
    uvw, freq, weight, flags
        Visibility data (see :func:`grid_weight_density`).
    density : ndarray [npix_y, npix_x]
        Global density from :func:`grid_weight_density` (summed over all partitions) on the
        weighting grid of ``npix_x x npix_y`` cells (the image, or the padded image).
    scheme : {'natural', 'uniform', 'briggs'}
        Weighting scheme.
    robust : float
        Briggs robustness R in [-2, 2]. ``w' = w / (1 + W_k f^2)`` with
        ``f^2 = (5 * 10^-R)^2 / (sum_k W_k^2 / sum_i w_i)``; uniform is ``w' = w / W_k``.
    cell, npix_x, npix_y
        Pixel size and the weighting grid that defined ``density``.
    rank_filter_level, rank_filter_size
        WSClean's rank filter of the cell weights (:func:`rank_filter`; level < 1: off, the
        default here; WSClean's default is 3).

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
    if scheme == "natural":
        w = _good(weight, flags)
        nrow, nchan = np.asarray(uvw).shape[0], np.atleast_1d(freq).size
        return np.array(np.broadcast_to(w, (nrow, nchan)))
    grid = cell_weights(density, scheme, robust, rank_filter_level, rank_filter_size)
    return apply_cell_weights(uvw, freq, weight, flags, grid, cell)


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
