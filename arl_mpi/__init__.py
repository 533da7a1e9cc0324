"""arl_mpi: distributed radio-interferometric imaging and calibration on MPI + Dask."""

__version__ = "0.1.0"
