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
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import dask

from arl_mpi.cluster.quiet import quiet_shutdown_noise, quiet_workers
from arl_mpi.cluster.scratch import run_scratch
from arl_mpi.cluster.settings import ClusterSettings
from arl_mpi.cluster.tls import apply_tls_config, current_security, make_tls_config
from arl_mpi.cluster.watchdog import NETWORK_ADVICE, run_job
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
            # a connection whose data go unacknowledged (a host cut off) is dead after this long
            # (kernel TCP timeouts, Dask's 30 s at most, at least 12 s): the scheduler then drops
            # the cut-off workers and the watchdog sees a cluster with none
            "distributed.comm.timeouts.tcp": f"{min(30, max(12, int(settings.cluster_timeout)))}s",
            # every worker process this job starts (and its restarts) is quiet from the start
            "distributed.worker.preload": _with_worker_setup(
                dask.config.get("distributed.worker.preload", None)
            ),
        }
    )
    quiet_shutdown_noise()
    # an unreachable scheduler is reported once, by the worker's own one-line error
    warnings.filterwarnings("ignore", message="Couldn't detect a suitable IP address", category=RuntimeWarning)


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


def dashboard_message(client, enabled: bool = True) -> str:
    """The dashboard URL and the ssh tunnel that reaches it from a laptop (``"dashboard: off"``
    with ``--no-dashboard``: the scheduler's HTTP server then still listens, without the
    dashboard pages, so its link alone does not tell)."""
    link = getattr(client, "dashboard_link", None)
    if not link or not enabled:
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
            from distributed.exceptions import WorkerStartTimeoutError

            try:
                client.wait_for_workers(1, timeout=settings.cluster_timeout)
            except (WorkerStartTimeoutError, TimeoutError):
                raise ClusterError(missing_workers_line(client, 1, settings)) from None
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
        worker_dashboard_address="127.0.0.1:0",
        # Dask's nannies set OMP_NUM_THREADS=1, which ducc0 would take for its pool size
        env={"DUCC0_NUM_THREADS": str(ducc0_pool_size(threads, settings.gridder_threads))},
        local_directory=scratch,
        **kwargs,
    )
    client = Client(cluster, security=kwargs.get("security"))
    register_plugins(client)
    log.info(
        "local cluster: %d workers x %d threads; %s", n_workers, threads,
        dashboard_message(client, settings.dashboard),
    )
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)


def ducc0_pool_size(threads: int, gridder_threads: int) -> int:
    """Threads of a worker's ducc0 pool, which is one per process and caps every call's
    ``nthreads``: room for each of the worker's ``threads`` to run a call with
    ``gridder_threads`` threads, or (``gridder_threads`` 0) for one call on all of them, as a
    worker grids its shard in one task at a time."""
    return max(1, threads) * max(1, gridder_threads)


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
    pool = ducc0_pool_size(threads, settings.gridder_threads)
    os.environ["DUCC0_NUM_THREADS"] = str(pool)
    if "ducc0" in sys.modules:  # imported already (by the caller): its pool was sized at import
        sys.modules["ducc0"].misc.resize_thread_pool(pool)
    tls = None
    if settings.tls:
        tls = comm.bcast(make_tls_config() if rank == 0 else None, root=0)
        apply_tls_config(tls)
    try:
        is_driver = initialize(
            interface=settings.interface,
            nthreads=threads,
            local_directory=scratch,
            memory_limit=settings.memory_limit,
            dashboard=settings.dashboard,
            dashboard_address=settings.dashboard_address,
            protocol="tls" if tls else None,
            # the worker's HTTP server (/health, /metrics) on loopback, as the dashboard: Dask
            # binds it to every interface otherwise
            worker_options={"death_timeout": settings.cluster_timeout, "dashboard_address": "127.0.0.1:0"},
            comm=comm,
            exit=False,
        )
    except Exception as e:  # noqa: BLE001 - a worker that never reached the scheduler
        if rank < 2:
            raise
        log.error("%s", unreachable_scheduler_line(e, settings))
        log.debug("the worker's start failed", exc_info=True)
        is_driver = False
    if not is_driver:
        # Scheduler (rank 0) or worker (2+): its event loop has ended. Exit as the driver did.
        status, lost = comm.recv(source=1, tag=STATUS_TAG)
        if lost:  # no collective with a lost rank: its dead peer would hold MPI's progress forever
            _exit_without_finalize(int(status))
        else:
            _settle(comm)
        return int(status)
    status, error = 1, None
    client = None
    try:
        from distributed import Client
        from distributed.exceptions import WorkerStartTimeoutError

        address = dask.config.get("scheduler-address", None)
        try:
            client = Client(timeout=settings.cluster_timeout, security=current_security())
        except (OSError, TimeoutError) as e:
            raise ClusterError(
                f"the driver (rank 1) cannot reach the Dask scheduler at {address} within "
                f"{settings.cluster_timeout:.0f} s ({_root_cause(e)}): {NETWORK_ADVICE}"
            ) from None
        try:
            client.wait_for_workers(size - 2, timeout=settings.cluster_timeout)
        except (WorkerStartTimeoutError, TimeoutError):
            raise ClusterError(missing_workers_line(client, size - 2, settings)) from None
        register_plugins(client)
        log.info(
            "MPI cluster up: scheduler on rank 0 (%s), driver on rank 1, %d workers (ranks 2-%d) "
            "x %d threads; %s",
            client.scheduler.address,
            size - 2,
            size - 1,
            threads,
            dashboard_message(client, settings.dashboard),
        )
        status = int(run_job(job, client, settings, expected_workers=size - 2) or 0)
    except BaseException as e:  # noqa: BLE001 - every failure must end every rank
        error = e
        status = 2 if isinstance(e, ArlError) else 1
    finally:
        # Worker ranks the scheduler lost, where the launcher kept the others running (srun
        # --no-kill --kill-on-bad-exit=0): they get the status last, and no rank then calls MPI
        # again (a send to or a barrier with a dead rank waits forever inside MPI's progress).
        lost = _lost_ranks(client, size) if "SLURM_STEP_ID" in os.environ else []
        _shutdown(client)
        _send_status(comm, (status, lost), last=lost)
        if lost:
            log.warning("worker rank(s) %s left the job during the run (their share was redone by the "
                        "others); the other ranks end without MPI_Finalize, which would wait for them",
                        ", ".join(map(str, lost)))
            _exit_without_finalize(status)
        else:
            _settle(comm)
    if error is not None:
        raise error
    return status


def _root_cause(e: BaseException) -> str:
    """``Type: message`` of the innermost OSError in ``e``'s chain (else of ``e`` itself)."""
    seen, cur, found = set(), e, None
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and not isinstance(cur, TimeoutError) and str(cur):
            found = cur
        cur = cur.__cause__ or cur.__context__
    shown = found or e
    text = str(shown).splitlines()[0] if str(shown) else ""
    return f"{type(shown).__name__}: {text}" if text else type(shown).__name__


def unreachable_scheduler_line(e: BaseException, settings: ClusterSettings) -> str:
    """One line for a worker rank whose Dask worker could not start (almost always: the
    scheduler could not be reached from this host).

    Parameters
    ----------
    e : BaseException
        What the worker's start raised; the innermost OSError of its chain is shown.
    settings : ClusterSettings

    Returns
    -------
    str
        Host, scheduler address (dask-mpi's ``scheduler-address``), timeout, interface, cause.
    """
    address = dask.config.get("scheduler-address", None) or "?"
    return (
        f"this worker ({socket.gethostname()}) could not join the Dask scheduler at {address} "
        f"within {settings.cluster_timeout:.0f} s (--interface {settings.interface or 'default'}): "
        f"{_root_cause(e)}"
    )


def missing_workers_line(client, expected: int, settings: ClusterSettings) -> str:
    """One line for a cluster whose workers did not all reach the scheduler in time.

    Parameters
    ----------
    client : distributed.Client
        Connected to the scheduler (asked how many workers arrived).
    expected : int
        Workers the job waited for.
    settings : ClusterSettings

    Returns
    -------
    str
        Arrived of expected, the scheduler's address, and what to check (:data:`NETWORK_ADVICE`).
    """
    try:
        arrived = len(client.scheduler_info()["workers"])
    except Exception:  # noqa: BLE001 - the count is best effort
        arrived = 0
    address = getattr(client.scheduler, "address", None) or dask.config.get("scheduler-address", "?")
    return (
        f"only {arrived} of {expected} Dask workers reached the scheduler at {address} within "
        f"{settings.cluster_timeout:.0f} s (--cluster-timeout; --interface "
        f"{settings.interface or 'default'}): {NETWORK_ADVICE}"
    )


#: MPI tag of the driver's exit status, sent to every other rank.
STATUS_TAG = 7301
_UNWAITED: list = []  # sends to lost ranks, never completed


def _lost_ranks(client, size: int) -> list[int]:
    """Worker ranks (2 … ``size - 1``) whose Dask worker the scheduler no longer has (dask-mpi
    names each worker after its rank and runs it without a nanny: a lost worker is a lost
    rank, or one cut off from the scheduler); ``[]`` when the scheduler cannot be asked."""
    if client is None or getattr(client, "status", "closed") in ("closing", "closed"):
        return []
    try:
        names = {str(w.get("name")) for w in client.scheduler_info()["workers"].values()}
    except Exception:  # noqa: BLE001 - best effort: the scheduler may be gone
        return []
    return [r for r in range(2, size) if str(r) not in names]


def _send_status(comm, message, last: list[int] = (), wait: float = 5.0) -> None:
    """Send the driver's ``(status, lost ranks)`` to every other rank, point to point (a
    broadcast tree may route it through a lost rank: under ``srun --no-kill`` the scheduler
    rank then waited forever). Waits at most ``wait`` s for the sends, except to the ranks in
    ``last``, which are sent to after the others and not waited for."""
    me, size = comm.Get_rank(), comm.Get_size()
    reqs = []
    for dest in [r for r in range(size) if r != me and r not in last]:
        with contextlib.suppress(Exception):
            reqs.append(comm.isend(message, dest=dest, tag=STATUS_TAG))
    t_end = time.monotonic() + wait
    for req in reqs:
        with contextlib.suppress(Exception):
            while not req.test()[0] and time.monotonic() < t_end:
                time.sleep(0.05)
    for dest in last:  # a rank that is only cut off from the scheduler still gets the status
        with contextlib.suppress(Exception):
            _UNWAITED.append(comm.isend(message, dest=dest, tag=STATUS_TAG))  # kept until the exit


def _exit_without_finalize(status: int) -> None:
    """Make this process exit with ``status`` without ``MPI_Finalize``: after a rank of the job
    was lost (a launcher that keeps the others, e.g. ``srun --no-kill --kill-on-bad-exit=0``),
    MPICH's ``MPI_Finalize`` waits for it forever. Registered with :mod:`atexit`, so the caller's
    error line and the logs are written first, and mpi4py's own finalize (due after it) never runs."""
    import atexit

    def _exit() -> None:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)

    atexit.register(_exit)


def _settle(comm, wait: float = 5.0) -> None:
    """Wait (at most ``wait`` s) until every rank has the driver's status, so that the driver's
    one-line error is the job's last line; a rank that is gone does not hold this one up."""
    with contextlib.suppress(Exception):
        req = comm.Ibarrier()
        t_end = time.monotonic() + wait
        while not req.Test() and time.monotonic() < t_end:
            time.sleep(0.05)


def _shutdown(client) -> None:
    """Close scheduler and workers from the driver, quietly, without waiting on stragglers.

    A client that is gone (never connected, or closed by the watchdog) cannot tell the
    scheduler to stop: a fresh one does, else rank 0 would serve forever."""
    if client is None or getattr(client, "status", "closed") in ("closing", "closed"):
        from distributed import Client

        address = dask.config.get("scheduler-address", None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=5)
        with contextlib.suppress(Exception):
            with Client(address, timeout=10, security=current_security()) as fresh:
                fresh.shutdown()
        return
    with contextlib.suppress(Exception):
        client.shutdown()
    with contextlib.suppress(Exception):
        client.close(timeout=5)
