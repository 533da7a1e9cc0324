"""Antenna-gain calibration: gain tables, StefCal solver, application, plots."""

from arl_mpi.calibration.apply import (
    apply_gains,
    corrupt_visibilities,
    interpolate_gains,
    invert_gaintable,
    nearest_solution_indices,
)
from arl_mpi.calibration.gaintable import (
    GainTable,
    GainTableFormatError,
    check_not_inside,
    read_gaintable,
    write_gaintable,
)
from arl_mpi.calibration.solve import solve_gains

__all__ = [
    "GainTable",
    "GainTableFormatError",
    "apply_gains",
    "check_not_inside",
    "corrupt_visibilities",
    "interpolate_gains",
    "invert_gaintable",
    "nearest_solution_indices",
    "read_gaintable",
    "solve_gains",
    "write_gaintable",
]
