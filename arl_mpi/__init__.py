"""arl_mpi: distributed radio-interferometric imaging and calibration on MPI + Dask."""

import os as _os

# Under an MPI launcher every rank must use only the cores it owns: pin the numeric
# libraries' thread pools before numpy is first imported (later settings have no effect).
if any(k in _os.environ for k in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")):
    _n = _os.environ.get("SLURM_CPUS_PER_TASK") or _os.environ.get("ARL_THREADS") or "1"
    for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        _os.environ.setdefault(_k, _n)

from arl_mpi._offline import configure_astropy_offline  # noqa: E402

__version__ = "0.1.0"

configure_astropy_offline()
