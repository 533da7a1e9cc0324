"""Minor-cycle deconvolution: algorithms, clean policy, sub-image (parallel) minor cycle.

Pure numpy in, numpy out. The serial major/minor loops, which compose imaging with
deconvolution, are in :mod:`arl_mpi.deconvolution.serial_loop` (not imported here, so that
importing this package does not import :mod:`arl_mpi.imaging`).
"""

from .common import mad_sigma
from .hogbom import hogbom
from .minor_cycle import (
    deconvolve_cube,
    mfs_image,
    minor_cycle_step,
    residual_stats,
    taylor_to_channels,
)
from .msmfs import mfs_clean, multiscale, spectral_index
from .policy import CleanParams, CleanSettings, stop_rule
from .subimages import parallel_minor_cycle, plan_subimages, subimage_task

__all__ = [
    "CleanParams",
    "CleanSettings",
    "deconvolve_cube",
    "hogbom",
    "mad_sigma",
    "mfs_clean",
    "mfs_image",
    "minor_cycle_step",
    "multiscale",
    "parallel_minor_cycle",
    "plan_subimages",
    "residual_stats",
    "spectral_index",
    "stop_rule",
    "subimage_task",
    "taylor_to_channels",
]
