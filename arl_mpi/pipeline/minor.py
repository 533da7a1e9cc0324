"""The driver's minor cycle, from pipeline :class:`~arl_mpi.pipeline.settings.Settings`.

Thin layer: the numerics are the pure functions of :mod:`arl_mpi.deconvolution`
(:func:`~arl_mpi.deconvolution.minor_cycle.deconvolve_cube`, which is
:func:`~arl_mpi.deconvolution.minor_cycle.minor_cycle_step` for one channel), so the
distributed pipeline and the serial loop take identical decisions given identical images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from arl_mpi.deconvolution.minor_cycle import (
    deconvolve_cube,
    mfs_image,
    residual_stats,
    taylor_to_channels,
)
from arl_mpi.deconvolution.policy import CleanSettings, stop_rule
from arl_mpi.pipeline.settings import Settings

__all__ = [
    "clean_settings",
    "deconvolve",
    "mfs_image",
    "residual_stats",
    "stop_rule",
    "taylor_to_channels",
]


def clean_settings(s: Settings) -> CleanSettings:
    """CleanSettings of a pipeline run."""
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
