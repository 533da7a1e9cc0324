"""How to start or reach the Dask cluster: the cluster's settings, defined once.

The pipeline's :class:`~arl_mpi.pipeline.settings.Settings` inherits these fields, so each
flag, default and help text lives here only. Field metadata (the convention of every settings
dataclass of arl_mpi):

``help``
    the ``--help`` text of the flag;
``flag``
    the flag when it is not ``--`` + the field name with ``-`` for ``_`` (e.g. ``--no-tls``);
``images``
    True when the value changes the images (a checkpoint must match it to resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def setting(default, help: str, *, flag: str | None = None, images: bool = False, **meta):  # noqa: A002
    """A dataclass field carrying its flag, help text and whether it affects the images."""
    md = {"help": help, "images": images, **meta}
    if flag:
        md["flag"] = flag
    if isinstance(default, list | dict | set):
        return field(default_factory=lambda: type(default)(default), metadata=md)
    return field(default=default, metadata=md)


@dataclass
class ClusterSettings:
    """How to start or reach the Dask cluster (see the ``help`` metadata of each field)."""

    threads_per_worker: int | None = setting(
        None, "threads of each worker (default: the cores this rank owns, from SLURM_CPUS_PER_TASK or "
              "OMP_NUM_THREADS, else 1 under MPI; local cluster: cores / workers)")
    gridder_threads: int = setting(
        1, "ducc0 threads per gridding task; 0: the worker's threads (--threads-per-worker; each worker "
           "grids its visibilities in one task at a time). Above 1 the images are not bit-reproducible",
        group="image geometry and gridding")
    memory_limit: str = setting("auto", "per worker, e.g. 4GB (Dask's meaning; 0 = none; default auto)")
    workers: int | None = setting(None, "local cluster only: number of worker processes")
    scratch: str | None = setting(
        None, "Dask scratch/spill directory (default $ARL_SCRATCH, $SLURM_TMPDIR, $TMPDIR, then a per-run "
              "directory that is removed at the end)")
    dashboard: bool = setting(True, "do not serve the Dask dashboard", flag="--no-dashboard")
    dashboard_address: str = setting(
        "127.0.0.1:8787", "dashboard address; default 127.0.0.1:8787 (use an ssh tunnel); 0.0.0.0:8787 exposes it")
    tls: bool = setting(True, "unencrypted cluster traffic (trusted networks only)", flag="--no-tls")
    interface: str | None = setting(None, "network interface for scheduler and workers, e.g. ib0")
    cluster_timeout: float = setting(60.0, "seconds to wait for the scheduler and for all workers; a cluster "
                                           "with no usable worker for this long ends the job")
