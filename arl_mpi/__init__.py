"""arl_mpi: distributed radio-interferometric imaging and calibration on MPI + Dask."""

from arl_mpi._offline import configure_astropy_offline

__version__ = "0.1.0"

configure_astropy_offline()
