"""The driver's minor cycle, from pipeline :class:`~arl_mpi.pipeline.settings.Settings`.

Thin layer: the numerics are the pure functions of :mod:`arl_mpi.deconvolution`
(:func:`~arl_mpi.deconvolution.minor_cycle.deconvolve_cube`, which is
:func:`~arl_mpi.deconvolution.minor_cycle.minor_cycle_step` for one channel), so the
distributed pipeline and the serial loop take identical decisions given identical images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from arl_mpi.deconvolution.minor_cycle import (
    deconvolve_cube,
    mfs_image,
    residual_stats,
    taylor_to_channels,
)
from arl_mpi.deconvolution.policy import CleanSettings, stop_rule
from arl_mpi.errors import InputError
from arl_mpi.pipeline.settings import Settings

__all__ = [
    "check_masks",
    "clean_settings",
    "deconvolve",
    "load_fits_mask",
    "mfs_image",
    "residual_stats",
    "stop_rule",
    "taylor_to_channels",
]


def load_fits_mask(path: str, size: tuple[int, int]) -> np.ndarray:
    """The clean mask of ``--fits-mask``: True where the FITS image is non-zero (and not NaN).

    Parameters
    ----------
    path : str
        FITS file; its first HDU is one image plane (leading axes of length 1 allowed), stored
        as the images are written (``[y, x]``, no flip).
    size : (nx, ny)
        The image size (``--size``).

    Raises
    ------
    InputError
        One line naming the file: missing, unreadable, not one plane, or a shape that is not the
        image's (both shapes named).
    """
    from astropy.io import fits

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such FITS mask (--fits-mask)")
    try:
        with fits.open(p, mode="readonly", memmap=False) as hdul:
            data = hdul[0].data
            data = None if data is None else np.asarray(data)
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: not a readable FITS mask ({e})") from None
    if data is None or data.ndim < 2 or any(n != 1 for n in data.shape[:-2]):
        shape = "no data" if data is None else "x".join(str(n) for n in data.shape[::-1])
        raise InputError(f"{p}: a FITS mask must be one image plane, got {shape}")
    plane = data.reshape(data.shape[-2:])
    nx, ny = size
    if plane.shape != (ny, nx):
        raise InputError(
            f"{p}: mask is {plane.shape[1]} x {plane.shape[0]} pixels but the image is {nx} x {ny} (--size)"
        )
    return np.nan_to_num(plane.astype(np.float64), nan=0.0) != 0


def check_masks(s: Settings) -> None:
    """Before any cluster starts: the ``--fits-mask`` exists and has the image's shape (InputError)."""
    if s.fits_mask:
        load_fits_mask(s.fits_mask, s.size)


def clean_settings(s: Settings) -> CleanSettings:
    """CleanSettings of a pipeline run (the ``--fits-mask`` read and checked here)."""
    return CleanSettings(
        algorithm="multiscale" if s.multiscale else "hogbom",
        niter=s.niter,
        gain=s.gain,
        mgain=s.mgain if s.mgain < 1.0 else None,
        threshold=s.threshold_jy,
        auto_threshold=s.auto_threshold,
        nmiter=s.nmiter,
        scales_px=list(s.multiscale_scales),
        scale_bias=s.multiscale_scale_bias,
        deconvolver=s.deconvolver,
        mask=load_fits_mask(s.fits_mask, s.size) if s.fits_mask else None,
        auto_mask=s.auto_mask,
        local_rms_window=s.local_rms_window if s.local_rms else None,
    )


def deconvolve(
    residual: np.ndarray,
    psf: np.ndarray,
    sumwt: np.ndarray,
    freqs_out: np.ndarray,
    cs: CleanSettings,
    niter_done: int,
    nterms: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One minor cycle on ``[nout, ny, nx]`` residual/PSF cubes; returns the model increment cube.

    See :func:`arl_mpi.deconvolution.minor_cycle.deconvolve_cube` (Hogbom/multiscale for
    ``nout == 1``, MS-MFS with ``nterms`` Taylor terms otherwise; Taylor models in
    ``info['taylor']``).
    """
    return deconvolve_cube(residual, psf, sumwt, freqs_out, cs, niter_done, nterms)
