"""Restoring beam: elliptical Gaussian fit to the PSF, Gaussian kernel and restore.

Beam parameters are ``(bmaj, bmin, bpa)`` in radians: FWHM of the major and minor axes and
the position angle of the major axis measured from North (+m) through East (+l), the FITS
BPA convention, normalised to (-pi/2, pi/2]. Because ``l = -(x - nx//2) cell``, East is
towards *decreasing* column index x.

The Gaussian is ``exp(-4 ln2 [(a / bmaj)^2 + (b / bmin)^2])`` with
``a = l sin(bpa) + m cos(bpa)`` (along the major axis) and ``b = l cos(bpa) - m sin(bpa)``.
"""

from __future__ import annotations

import logging

import ducc0
import numpy as np
from scipy import ndimage, optimize

log = logging.getLogger(__name__)

__all__ = ["fit_beam", "gaussian_kernel", "restore"]

_FOUR_LN2 = 4.0 * np.log(2.0)


def _quad_to_beam(a: float, b: float, c: float) -> tuple[float, float, float]:
    """Convert exp(-(a l^2 + b l m + c m^2)) to (bmaj, bmin, bpa)."""
    mat = np.array([[a, 0.5 * b], [0.5 * b, c]])
    evals, evecs = np.linalg.eigh(mat)  # ascending: evals[0] -> major axis
    if evals[0] <= 0:
        raise ValueError("PSF main lobe is not a bounded ellipse; cannot fit beam")
    bmaj = np.sqrt(_FOUR_LN2 / evals[0])
    bmin = np.sqrt(_FOUR_LN2 / evals[1])
    el, em = evecs[:, 0]
    bpa = np.arctan2(el, em)
    # normalise to (-pi/2, pi/2]
    if bpa <= -np.pi / 2:
        bpa += np.pi
    elif bpa > np.pi / 2:
        bpa -= np.pi
    return float(bmaj), float(bmin), float(bpa)


def _beam_to_quad(bmaj: float, bmin: float, bpa: float) -> tuple[float, float, float]:
    s, c = np.sin(bpa), np.cos(bpa)
    ka, kb = _FOUR_LN2 / bmaj**2, _FOUR_LN2 / bmin**2
    # ka (l s + m c)^2 + kb (l c - m s)^2
    return ka * s * s + kb * c * c, 2.0 * (ka - kb) * s * c, ka * c * c + kb * s * s


def fit_beam(
    psf: np.ndarray, cell: float, *, threshold: float = 0.35
) -> tuple[float, float, float]:
    """Fit an elliptical Gaussian to the PSF main lobe.

    Parameters
    ----------
    psf : ndarray [ny, nx]
        PSF with its peak at ``(ny//2, nx//2)`` (it is normalised to that peak here).
    cell : float
        Pixel size in radians.
    threshold : float
        Pixels above ``threshold`` (relative to the peak) connected to the centre form the
        main lobe used in the fit.

    Returns
    -------
    bmaj, bmin, bpa : float
        FWHM of major/minor axes (radians), position angle North through East (radians).
    """
    psf = np.asarray(psf, dtype=np.float64)
    ny, nx = psf.shape
    cy, cx = ny // 2, nx // 2
    peak = psf[cy, cx]
    if peak <= 0:
        raise ValueError("PSF centre pixel must be positive")
    p = psf / peak
    labels, _ = ndimage.label(p > threshold)
    lobe = labels == labels[cy, cx]
    yy, xx = np.nonzero(lobe)
    if yy.size < 5:
        # grow a 5x5 box for badly under-sampled PSFs
        yy, xx = np.mgrid[cy - 2 : cy + 3, cx - 2 : cx + 3]
        yy, xx = yy.ravel(), xx.ravel()
    l = -(xx - cx) * cell
    m = (yy - cy) * cell
    vals = p[yy, xx]
    # linear least squares on -log(p) = a l^2 + b l m + c m^2 for a starting point
    pos = vals > 1e-3
    design = np.stack([l * l, l * m, m * m], axis=1)
    start, *_ = np.linalg.lstsq(design[pos], -np.log(vals[pos]), rcond=None)
    scale = cell**-2

    def resid(q: np.ndarray) -> np.ndarray:
        return np.exp(-(design @ (q * scale))) - vals

    sol = optimize.least_squares(resid, start / scale, method="lm")
    a, b, c = sol.x * scale
    return _quad_to_beam(a, b, c)


def gaussian_kernel(
    beam: tuple[float, float, float], cell: float, shape: tuple[int, int]
) -> np.ndarray:
    """Peak-normalised elliptical Gaussian centred at ``(ny//2, nx//2)``.

    Parameters
    ----------
    beam : (bmaj, bmin, bpa)
        In radians (see module docstring for conventions).
    cell : float
        Pixel size in radians.
    shape : (ny, nx)

    Returns
    -------
    kernel : ndarray [ny, nx] float64, value 1 at the centre.
    """
    ny, nx = shape
    a, b, c = _beam_to_quad(*beam)
    m = (np.arange(ny) - ny // 2)[:, None] * cell
    l = -(np.arange(nx) - nx // 2)[None, :] * cell
    return np.exp(-(a * l * l + b * l * m + c * m * m))


def restore(
    model: np.ndarray,
    residual: np.ndarray,
    beam: tuple[float, float, float],
    cell: float,
    *,
    nthreads: int = 1,
) -> np.ndarray:
    """Restored image: model (Jy/pixel) convolved with the peak-normalised beam + residual.

    The convolution is linear (zero-padded by the beam's reach, 8 sigma, so no wrap-around),
    via ``ducc0.fft``. Output is in Jy/beam.

    Parameters
    ----------
    model : ndarray [ny, nx]
    residual : ndarray [ny, nx]
    beam : (bmaj, bmin, bpa) radians
    cell : float
    nthreads : int

    Returns
    -------
    restored : ndarray [ny, nx] float64
    """
    model = np.asarray(model, dtype=np.float64)
    ny, nx = model.shape
    # Pad by the kernel's reach only (8 sigma of the major axis: exp(-32) of the peak), not to
    # twice the size: a circular convolution of length n + r has no wrap-around for a kernel of
    # half-width r, and a 16k^2 image then needs about 5 planes of its own size, not 20.
    reach = int(np.ceil(8.0 * float(beam[0]) / (2.0 * np.sqrt(2.0 * np.log(2.0))) / cell)) + 1
    py, px = ny + min(reach, ny), nx + min(reach, nx)
    py, px = py + py % 2, px + px % 2
    kern = np.fft.ifftshift(gaussian_kernel(beam, cell, (py, px)))  # centre -> (0, 0)
    fk = ducc0.fft.r2c(kern, axes=(0, 1), nthreads=nthreads)
    del kern
    pad = np.zeros((py, px))
    pad[:ny, :nx] = model
    fm = ducc0.fft.r2c(pad, axes=(0, 1), nthreads=nthreads)
    del pad
    fm *= fk
    del fk
    conv = ducc0.fft.c2r(fm, axes=(0, 1), lastsize=px, forward=False, inorm=2, nthreads=nthreads)
    return conv[:ny, :nx] + np.asarray(residual, dtype=np.float64)
