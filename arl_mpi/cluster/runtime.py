"""Where graphs run: dask-mpi inside an MPI job, an existing scheduler, or a local cluster.

``run_with_client(job, settings)`` is the one entry point. It picks the mode:

* **mpi** — launched by ``mpiexec``/``srun`` with >= 3 ranks: dask-mpi puts the scheduler on
  rank 0 and workers on ranks 2+; rank 1 (the driver) gets a connected Client, waits for
  every worker, runs ``job(client)``, then shuts the cluster down. Every rank then receives
  the driver's exit status over MPI and exits with it, so a failing driver makes the whole
  job fail promptly (never a hang, never a silent success).
* **external** — ``ARL_DASK_SCHEDULER=host:port`` (or ``ARL_DASK_SCHEDULER_FILE``) names a
  running scheduler: connect with a timeout and a clear error when it is not there.
* **local** — neither: a ``LocalCluster`` sized to this machine.

Traffic is TLS by default, with credentials created per job in memory: under MPI rank 0
creates them and sends them to the other ranks over MPI; they are never written to disk.

The parts it uses, one job each: :mod:`~arl_mpi.cluster.scratch` (the run's scratch
directory), :mod:`~arl_mpi.cluster.tls` (credentials), :mod:`~arl_mpi.cluster.quiet` (Dask's
shutdown noise), :mod:`~arl_mpi.cluster.watchdog` (a stalled job ends with one line) and
:mod:`arl_mpi.mpienv` (MPI detection, cores and thread pinning).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import dask

from arl_mpi.cluster.quiet import quiet_shutdown_noise, quiet_workers
from arl_mpi.cluster.scratch import run_scratch
from arl_mpi.cluster.settings import ClusterSettings
from arl_mpi.cluster.tls import apply_tls_config, current_security, make_tls_config
from arl_mpi.cluster.watchdog import run_job
from arl_mpi.errors import ArlError, ClusterError
from arl_mpi.mpienv import cores_per_rank, mpi_rank_size, pin_numeric_threads

log = logging.getLogger(__name__)

SCHEDULER_ENV = "ARL_DASK_SCHEDULER"
SCHEDULER_FILE_ENV = "ARL_DASK_SCHEDULER_FILE"
WORKER_SETUP = "arl_mpi.cluster.worker_setup"


def configure_dask(settings: ClusterSettings) -> None:
    """Process-wide Dask settings: quiet shutdown, worker preload, timeouts, no work stealing
    of partition-resident tasks (their data already sit on one worker). The scratch directory
    is set by :func:`run_with_client` for the length of the run."""
    dask.config.set(
        {
            "distributed.scheduler.work-stealing": False,
            "distributed.worker.daemon": False,
            "distributed.admin.tick.limit": "30s",
            "distributed.comm.timeouts.connect": f"{int(settings.cluster_timeout)}s",
            # every worker process this job starts (and its restarts) is quiet from the start
            "distributed.worker.preload": _with_worker_setup(
                dask.config.get("distributed.worker.preload", None)
            ),
        }
    )
    quiet_shutdown_noise()


def _with_worker_setup(preload) -> list[str]:
    """The configured worker preloads plus :mod:`arl_mpi.cluster.worker_setup` (once)."""
    mods = [preload] if isinstance(preload, str) else list(preload or [])
    return mods if WORKER_SETUP in mods else [*mods, WORKER_SETUP]


def register_plugins(client) -> None:
    """Scheduler plugin :class:`~arl_mpi.cluster.plugins.ReviveLooseTasks` and the worker log
    filter (best effort: an external cluster whose processes cannot import arl_mpi does
    without)."""
    from arl_mpi.cluster.plugins import ReviveLooseTasks

    try:
        client.register_plugin(ReviveLooseTasks())
    except Exception as e:  # noqa: BLE001
        log.warning("scheduler plugin not registered (%s: %s)", type(e).__name__, e)
    quiet_workers(client)


def dashboard_message(client) -> str:
    """The dashboard URL and the ssh tunnel that reaches it from a laptop."""
    link = getattr(client, "dashboard_link", None)
    if not link:
        return "dashboard: off"
    try:
        port = int(link.rsplit(":", 1)[-1].split("/")[0])
    except ValueError:
        port = 8787
    host = str(client.scheduler.address).split("://")[-1].rsplit(":", 1)[0]
    with contextlib.suppress(OSError):
        host = socket.gethostbyaddr(host)[0]
    return (
        f"dashboard: http://localhost:{port}/status on {host} (bound to localhost; from your "
        f"laptop: ssh -N -L 8787:localhost:{port} [-J you@login-node] you@{host}, then open "
        "http://localhost:8787/status)"
    )


def detect_mode() -> str:
    """``mpi``, ``external`` or ``local``."""
    _, size = mpi_rank_size()
    if size > 1:
        return "mpi"
    if os.environ.get(SCHEDULER_ENV) or os.environ.get(SCHEDULER_FILE_ENV):
        return "external"
    return "local"


def run_with_client(job: Callable[..., int], settings: ClusterSettings | None = None) -> int:
    """Run ``job(client)`` wherever this process was launched; see the module docstring.

    The run's scratch directory (:func:`~arl_mpi.cluster.scratch.run_scratch`) is Dask's
    temporary directory while it runs; a per-run one is removed at the end, on every rank.

    Parameters
    ----------
    job : callable
        ``job(client) -> exit status``, run on the driver.
    settings : ClusterSettings, optional

    Returns
    -------
    int
        The job's exit status on every rank (non-driver ranks return the driver's).
        Exceptions from ``job`` propagate on the driver after the cluster was shut down.
    """
    settings = settings or ClusterSettings()
    mode = detect_mode()
    with run_scratch(settings) as scratch, dask.config.set({"temporary-directory": scratch}):
        if mode == "mpi":
            return _run_mpi(job, settings, scratch)
        configure_dask(settings)
        if mode == "external":
            with connect_external(settings) as client:
                return run_job(job, client, settings)
        with local_client(settings, scratch) as client:
            return run_job(job, client, settings)


@contextlib.contextmanager
def connect_external(settings: ClusterSettings):
    """Client connected to ``$ARL_DASK_SCHEDULER`` / ``$ARL_DASK_SCHEDULER_FILE``."""
    from distributed import Client

    addr = os.environ.get(SCHEDULER_ENV)
    sfile = os.environ.get(SCHEDULER_FILE_ENV)
    target = addr or sfile
    kwargs = {"scheduler_file": sfile} if (sfile and not addr) else {"address": addr}
    if sfile and not addr and not Path(sfile).is_file():
        raise ClusterError(f"{SCHEDULER_FILE_ENV}={sfile}: no such scheduler file")
    try:
        client = Client(**kwargs, timeout=settings.cluster_timeout, security=current_security())
    except (OSError, TimeoutError) as e:
        raise ClusterError(
            f"{SCHEDULER_ENV}={target}: cannot reach the Dask scheduler within "
            f"{settings.cluster_timeout:.0f} s ({type(e).__name__})"
        ) from None
    nworkers = len(client.scheduler_info()["workers"])
    register_plugins(client)
    log.info(
        "connected to external scheduler %s with %d workers; %s",
        client.scheduler.address,
        nworkers,
        dashboard_message(client),
    )
    try:
        if nworkers == 0:
            client.wait_for_workers(1, timeout=settings.cluster_timeout)
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def local_client(settings: ClusterSettings, scratch: str):
    """A LocalCluster sized to this machine (TLS on localhost unless disabled), its workers'
    directories under ``scratch``."""
    from distributed import Client, LocalCluster

    ncores = os.cpu_count() or 1
    n_workers = settings.workers or max(1, min(ncores, 4))
    threads = settings.threads_per_worker or max(1, ncores // n_workers)
    kwargs = {}
    if settings.tls:
        apply_tls_config(make_tls_config())
        kwargs = {"security": current_security(), "protocol": "tls://"}
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads,
        processes=True,
        memory_limit=settings.memory_limit,
        host="127.0.0.1",
        dashboard_address=settings.dashboard_address if settings.dashboard else None,
        local_directory=scratch,
        **kwargs,
    )
    client = Client(cluster, security=kwargs.get("security"))
    register_plugins(client)
    log.info(
        "local cluster: %d workers x %d threads; %s", n_workers, threads, dashboard_message(client)
    )
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)


def _run_mpi(job: Callable[..., int], settings: ClusterSettings, scratch: str) -> int:
    from dask_mpi import initialize
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if size < 3:
        raise ClusterError(
            f"{size} MPI rank(s) is too few: arl_mpi needs at least 3 — rank 0 runs the Dask "
            "scheduler, rank 1 the driver (major/minor cycles), ranks 2+ the workers. Use e.g. "
            "mpiexec -n 4, or run without mpiexec for a local cluster."
        )
    configure_dask(settings)
    threads = settings.threads_per_worker or cores_per_rank()
    pin_numeric_threads(threads)
    tls = None
    if settings.tls:
        tls = comm.bcast(make_tls_config() if rank == 0 else None, root=0)
        apply_tls_config(tls)
    is_driver = initialize(
        interface=settings.interface,
        nthreads=threads,
        local_directory=scratch,
        memory_limit=settings.memory_limit,
        dashboard=settings.dashboard,
        dashboard_address=settings.dashboard_address,
        protocol="tls" if tls else None,
        worker_options={"death_timeout": settings.cluster_timeout},
        comm=comm,
        exit=False,
    )
    if not is_driver:
        # Scheduler (rank 0) or worker (2+): its event loop has ended. Exit as the driver did.
        status = comm.bcast(None, root=1)
        return int(status)
    status, error = 1, None
    client = None
    try:
        from distributed import Client

        client = Client(timeout=settings.cluster_timeout, security=current_security())
        client.wait_for_workers(size - 2, timeout=settings.cluster_timeout)
        register_plugins(client)
        log.info(
            "MPI cluster up: scheduler on rank 0 (%s), driver on rank 1, %d workers (ranks 2-%d) "
            "x %d threads; %s",
            client.scheduler.address,
            size - 2,
            size - 1,
            threads,
            dashboard_message(client),
        )
        status = int(run_job(job, client, settings) or 0)
    except BaseException as e:  # noqa: BLE001 - every failure must end every rank
        error = e
        status = 2 if isinstance(e, ArlError) else 1
    finally:
        _shutdown(client)
        comm.bcast(status, root=1)
    if error is not None:
        raise error
    return status


def _shutdown(client) -> None:
    """Close scheduler and workers from the driver, quietly, without waiting on stragglers."""
    if client is None:
        from dask_mpi.execute import send_close_signal

        with contextlib.suppress(Exception):
            send_close_signal()
        return
    with contextlib.suppress(Exception):
        client.shutdown()
    with contextlib.suppress(Exception):
        client.close(timeout=5)
