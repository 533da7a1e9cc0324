"""arl_mpi: distributed radio-interferometric imaging and calibration on MPI + Dask."""

from arl_mpi.mpienv import pin_threads_for_launch as _pin_threads_for_launch

# Under an MPI launcher (or in a SLURM task) every rank must use only the cores it owns: pin
# the numeric libraries' thread pools before numpy is first imported.
_pin_threads_for_launch()

from arl_mpi._offline import configure_astropy_offline  # noqa: E402

__version__ = "0.1.0"

configure_astropy_offline()
