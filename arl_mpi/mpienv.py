"""The MPI launch environment of this process: rank and size, and the cores it owns.

The bottom layer of arl_mpi: it imports nothing of the package (``arl_mpi/__init__.py`` may
call it before numpy is first imported) and imports ``mpi4py`` only when a launcher started
this process.

Launch detection uses one list of variables, :data:`MPI_LAUNCH_VARS`, which MPI launchers
set in every rank:

``PMI_RANK``, ``PMI_SIZE``
    MPICH's hydra (``mpiexec``), Intel MPI, and SLURM's ``srun --mpi=pmi2``;
``PMIX_RANK``
    PMIx launchers: Open MPI 5 ``mpirun`` and ``srun --mpi=pmix``;
``OMPI_COMM_WORLD_RANK``, ``OMPI_COMM_WORLD_SIZE``
    Open MPI's ``mpirun``;
``MPI_LOCALRANKID``
    MPICH/Intel MPI (hydra).

``SLURM_PROCID`` alone (``srun --mpi=none``, or a batch script) is not an MPI launch: those
processes share no MPI world, so they are single processes here. They still own only the
cores SLURM gave them, so :func:`pin_threads_for_launch` pins their thread pools as well.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Variables every rank of an MPI launch has (see the module docstring).
MPI_LAUNCH_VARS = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MPI_LOCALRANKID",
)
# A task of a SLURM job step (with or without MPI).
SLURM_TASK_VARS = ("SLURM_PROCID",)
# Where the cores of this rank are read from, in order (positive integers only).
CORES_VARS = ("SLURM_CPUS_PER_TASK", "ARL_THREADS", "OMP_NUM_THREADS")
# The thread pools of the numeric libraries (BLAS, OpenMP, numexpr, ducc0).
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "DUCC0_NUM_THREADS",
)


def launched_by_mpi(env: Mapping[str, str] | None = None) -> bool:
    """Whether an MPI launcher started this process (any of :data:`MPI_LAUNCH_VARS` set).

    Parameters
    ----------
    env : mapping, optional
        The environment to inspect (default ``os.environ``).

    Returns
    -------
    bool
    """
    env = os.environ if env is None else env
    return any(k in env for k in MPI_LAUNCH_VARS)


def mpi_rank_size() -> tuple[int, int]:
    """(rank, size) of this process in ``MPI.COMM_WORLD``, or (0, 1) without a launcher.

    ``mpi4py`` (and so ``MPI_Init``) is imported only when :func:`launched_by_mpi` is true.

    Returns
    -------
    tuple of int
        The rank and the number of ranks.
    """
    if not launched_by_mpi():
        return 0, 1
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    return comm.Get_rank(), comm.Get_size()


def cores_per_rank(env: Mapping[str, str] | None = None) -> int:
    """Cores this process may use: the first positive integer of :data:`CORES_VARS`, else 1.

    Parameters
    ----------
    env : mapping, optional
        The environment to inspect (default ``os.environ``).

    Returns
    -------
    int
    """
    env = os.environ if env is None else env
    for k in CORES_VARS:
        v = env.get(k)
        if v and v.isdigit() and int(v) > 0:
            return int(v)
    return 1


def pin_numeric_threads(n: int, override: bool = True) -> None:
    """Limit the thread pools of the numeric libraries (:data:`THREAD_VARS`) to ``n``.

    Only effective before the library is first imported (numpy's BLAS reads its variable
    once).

    Parameters
    ----------
    n : int
        Threads per pool (>= 1).
    override : bool
        Replace values already set; False keeps what the user (or the batch script) set.
    """
    for k in THREAD_VARS:
        if override:
            os.environ[k] = str(n)
        else:
            os.environ.setdefault(k, str(n))


def pin_threads_for_launch() -> bool:
    """Under an MPI launcher or in a SLURM task, pin the numeric thread pools to
    :func:`cores_per_rank` (values already set are kept), so that every rank uses only the
    cores it owns. Call before numpy is first imported.

    Returns
    -------
    bool
        Whether this process was launched so (and its pools were pinned).
    """
    if not (launched_by_mpi() or any(k in os.environ for k in SLURM_TASK_VARS)):
        return False
    pin_numeric_threads(cores_per_rank(), override=False)
    return True
