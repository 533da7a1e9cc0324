"""Exact direct-Fourier-transform reference implementations and coordinate helpers.

All functions follow the conventions in ``docs/imaging.md``:

* V(u, v, w) = sum_k I_k exp(+2 pi i (u l_k + v m_k + w (n_k - 1))), u, v, w in wavelengths,
  uvw = antenna2 - antenna1 (the MeasurementSet convention, checked against WSClean on real data);
* image arrays are ``[ny, nx]``; pixel ``(y, x)`` has ``m = (y - ny//2) * cell`` and
  ``l = -(x - nx//2) * cell`` (RA---SIN / DEC--SIN, CDELT1 = -cell, CDELT2 = +cell).

These routines are slow (O(npix * nvis)) and exist to validate the gridders.
"""

from __future__ import annotations

import logging

import numpy as np

from arl_mpi.constants import SPEED_OF_LIGHT

log = logging.getLogger(__name__)

#: Deprecated alias of :data:`arl_mpi.constants.SPEED_OF_LIGHT` (kept for existing importers).
C_LIGHT = SPEED_OF_LIGHT

__all__ = [
    "C_LIGHT",
    "pixel_to_lm",
    "lm_to_pixel",
    "radec_to_lm",
    "lm_to_radec",
    "dft_predict",
    "dft_invert",
]


def pixel_to_lm(
    x: np.ndarray | float, y: np.ndarray | float, npix_x: int, npix_y: int, cell: float
) -> tuple[np.ndarray, np.ndarray]:
    """Convert (possibly fractional) pixel coordinates to direction cosines.

    Parameters
    ----------
    x, y : array_like
        Column (x, RA axis) and row (y, Dec axis) indices.
    npix_x, npix_y : int
        Image size (columns, rows).
    cell : float
        Pixel size in radians.

    Returns
    -------
    l, m : ndarray
        ``l = -(x - npix_x//2) * cell``, ``m = (y - npix_y//2) * cell``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return -(x - npix_x // 2) * cell, (y - npix_y // 2) * cell


def lm_to_pixel(
    l: np.ndarray | float, m: np.ndarray | float, npix_x: int, npix_y: int, cell: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pixel_to_lm`; returns fractional ``(x, y)`` pixel coordinates."""
    l = np.asarray(l, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    return npix_x // 2 - l / cell, npix_y // 2 + m / cell


def radec_to_lm(
    ra: np.ndarray | float, dec: np.ndarray | float, ra0: float, dec0: float
) -> tuple[np.ndarray, np.ndarray]:
    """SIN-projection direction cosines of (ra, dec) relative to phase centre (ra0, dec0).

    Parameters
    ----------
    ra, dec : array_like
        Source coordinates in radians.
    ra0, dec0 : float
        Phase centre in radians.

    Returns
    -------
    l, m : ndarray
        ``l = cos(dec) sin(ra - ra0)`` (positive towards East),
        ``m = sin(dec) cos(dec0) - cos(dec) sin(dec0) cos(ra - ra0)`` (towards North).
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    dra = ra - ra0
    l = np.cos(dec) * np.sin(dra)
    m = np.sin(dec) * np.cos(dec0) - np.cos(dec) * np.sin(dec0) * np.cos(dra)
    return l, m


def lm_to_radec(
    l: np.ndarray | float, m: np.ndarray | float, ra0: float, dec0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`radec_to_lm` (for directions on the front hemisphere, n > 0)."""
    l = np.asarray(l, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    n = np.sqrt(np.maximum(0.0, 1.0 - l * l - m * m))
    dec = np.arcsin(np.clip(m * np.cos(dec0) + n * np.sin(dec0), -1.0, 1.0))
    ra = ra0 + np.arctan2(l, n * np.cos(dec0) - m * np.sin(dec0))
    return ra, dec


def _n_minus_1(l: np.ndarray, m: np.ndarray) -> np.ndarray:
    r2 = l * l + m * m
    # numerically stable form of sqrt(1 - r2) - 1
    return -r2 / (np.sqrt(np.maximum(0.0, 1.0 - r2)) + 1.0)


def dft_predict(
    l: np.ndarray,
    m: np.ndarray,
    flux: np.ndarray,
    uvw: np.ndarray,
    freq: np.ndarray,
    *,
    chunk: int = 4096,
) -> np.ndarray:
    """Predict visibilities of point sources by direct Fourier transform.

    Parameters
    ----------
    l, m : ndarray [ncomp]
        Direction cosines of the components.
    flux : ndarray [ncomp, nchan] or [ncomp]
        Flux densities in Jy (one value per channel, or frequency independent).
    uvw : ndarray [nrow, 3]
        Baseline coordinates in metres.
    freq : ndarray [nchan]
        Channel frequencies in Hz.
    chunk : int
        Rows processed at once (bounds memory to ``chunk * ncomp`` complex numbers).

    Returns
    -------
    vis : ndarray [nrow, nchan] complex128
        ``sum_k flux_k exp(+2 pi i (u l_k + v m_k + w (n_k - 1)))`` (full w term, no 1/n).
    """
    l = np.atleast_1d(np.asarray(l, dtype=np.float64))
    m = np.atleast_1d(np.asarray(m, dtype=np.float64))
    freq = np.atleast_1d(np.asarray(freq, dtype=np.float64))
    uvw = np.asarray(uvw, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    if flux.ndim == 1:
        flux = np.repeat(flux[:, None], freq.size, axis=1)
    ncomp = l.size
    if flux.shape != (ncomp, freq.size):
        raise ValueError(f"flux shape {flux.shape} != (ncomp, nchan) = {(ncomp, freq.size)}")
    nm1 = _n_minus_1(l, m)
    lmn = np.stack([l, m, nm1])  # [3, ncomp]
    nrow = uvw.shape[0]
    vis = np.zeros((nrow, freq.size), dtype=np.complex128)
    for r0 in range(0, nrow, chunk):
        r1 = min(nrow, r0 + chunk)
        delay = uvw[r0:r1] @ lmn  # [rows, ncomp] metres
        for c, f in enumerate(freq):
            ph = np.exp((2j * np.pi * f / SPEED_OF_LIGHT) * delay)
            vis[r0:r1, c] = ph @ flux[:, c]
    return vis


def dft_invert(
    uvw: np.ndarray,
    freq: np.ndarray,
    vis: np.ndarray,
    weight: np.ndarray,
    flags: np.ndarray | None,
    npix_x: int,
    npix_y: int,
    cell: float,
    *,
    chunk_pix: int = 4096,
    chunk_vis: int = 8192,
) -> np.ndarray:
    """Exact (weighted, normalised) dirty image by direct Fourier transform.

    Parameters
    ----------
    uvw, freq, vis, weight, flags
        Visibility data in the conventions of :mod:`arl_mpi.imaging.gridding`.
    npix_x, npix_y : int
        Image size.
    cell : float
        Pixel size in radians.
    chunk_pix, chunk_vis : int
        Chunk sizes; memory is bounded by ``chunk_pix * chunk_vis`` floats.

    Returns
    -------
    image : ndarray [npix_y, npix_x] float64
        ``Re(sum w V exp(-2 pi i (u l + v m + w (n - 1)))) / sum w`` at every pixel.
    """
    freq = np.atleast_1d(np.asarray(freq, dtype=np.float64))
    uvw = np.asarray(uvw, dtype=np.float64)
    wgt = np.asarray(weight, dtype=np.float64)
    if flags is not None:
        wgt = np.where(flags, 0.0, wgt)
    sel = wgt != 0
    rows, chans = np.nonzero(sel)
    wv = (wgt * vis)[sel]
    scale = freq[chans] / SPEED_OF_LIGHT
    uvw_l = uvw[rows] * scale[:, None]  # [nvis, 3] in wavelengths
    sumwt = wgt.sum()
    yy, xx = np.mgrid[0:npix_y, 0:npix_x]
    l, m = pixel_to_lm(xx.ravel(), yy.ravel(), npix_x, npix_y, cell)
    lmn = np.stack([l, m, _n_minus_1(l, m)])
    out = np.zeros(l.size)
    for p0 in range(0, l.size, chunk_pix):
        p1 = min(l.size, p0 + chunk_pix)
        acc = np.zeros(p1 - p0)
        for v0 in range(0, wv.size, chunk_vis):
            v1 = min(wv.size, v0 + chunk_vis)
            ph = (2 * np.pi) * (uvw_l[v0:v1] @ lmn[:, p0:p1])
            acc += wv[v0:v1].real @ np.cos(ph) + wv[v0:v1].imag @ np.sin(ph)
        out[p0:p1] = acc
    if sumwt == 0:
        return np.zeros((npix_y, npix_x))
    return (out / sumwt).reshape(npix_y, npix_x)
