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
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import dask

from arl_mpi.cli import mpi_rank_size
from arl_mpi.cluster.settings import ClusterSettings
from arl_mpi.errors import ArlError, ClusterError

log = logging.getLogger(__name__)

SCHEDULER_ENV = "ARL_DASK_SCHEDULER"
SCHEDULER_FILE_ENV = "ARL_DASK_SCHEDULER_FILE"
_TLS_KEYS = (
    "ca-file",
    "scheduler.cert",
    "scheduler.key",
    "worker.cert",
    "worker.key",
    "client.cert",
    "client.key",
)


def scratch_directory(settings: ClusterSettings) -> str:
    """Dask's temporary directory (never a shared ``/tmp/dask-scratch-space`` by default)."""
    d = settings.scratch or os.environ.get("ARL_SCRATCH")
    if not d:
        base = os.environ.get("SLURM_TMPDIR") or os.environ.get("TMPDIR")
        d = str(Path(base) / "arl-scratch") if base else str(Path.cwd() / "arl-scratch")
    Path(d).mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def cores_per_rank() -> int:
    """Cores this process may use: SLURM_CPUS_PER_TASK, else OMP_NUM_THREADS, else 1."""
    for k in ("SLURM_CPUS_PER_TASK", "ARL_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(k)
        if v and v.isdigit() and int(v) > 0:
            return int(v)
    return 1


def pin_numeric_threads(n: int) -> None:
    """Limit BLAS/OpenMP threads of numeric libraries to ``n`` (set before heavy imports)."""
    for k in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "DUCC0_NUM_THREADS",
    ):
        os.environ[k] = str(n)


def make_tls_config() -> dict[str, str]:
    """Fresh per-job credentials (self-signed CA = cert, in memory) as Dask config values."""
    from distributed.security import Security

    try:
        sec = Security.temporary()
    except ImportError as e:  # pragma: no cover - cryptography is a dependency
        raise ClusterError(
            f"TLS needs the 'cryptography' package ({e}); or pass --no-tls"
        ) from None
    return {
        "ca-file": sec.tls_ca_file,
        "scheduler.cert": sec.tls_scheduler_cert,
        "scheduler.key": sec.tls_scheduler_key,
        "worker.cert": sec.tls_worker_cert,
        "worker.key": sec.tls_worker_key,
        "client.cert": sec.tls_client_cert,
        "client.key": sec.tls_client_key,
    }


def apply_tls_config(tls: dict[str, str]) -> None:
    """Make ``tls`` this process's Dask TLS configuration (encryption required)."""
    cfg = {f"distributed.comm.tls.{k}": v for k, v in tls.items()}
    cfg["distributed.comm.require-encryption"] = True
    cfg["distributed.comm.default-scheme"] = "tls"
    dask.config.set(cfg)


def current_security():
    """A Security object from this process's Dask config (TLS when configured)."""
    from distributed.security import Security

    return Security()


WORKER_SETUP = "arl_mpi.cluster.worker_setup"


def configure_dask(settings: ClusterSettings) -> None:
    """Process-wide Dask settings: scratch directory, quiet shutdown, no work stealing of
    partition-resident tasks (their data already sit on one worker)."""
    dask.config.set(
        {
            "temporary-directory": scratch_directory(settings),
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


# Messages of Dask's shutdown chatter (and of errors only a closing cluster raises).
SHUTDOWN_NOISE = (
    "CommClosedError",
    "StreamClosedError",
    "Stream is closed",
    "Connection refused",
    "Failed to reconnect",
    "Timed out trying to connect",
    "Closing Nanny",
    "Connection to scheduler broken",
    "caused the cluster to lose",
    "ConnectionPool is closed",
    # a task's exception reaches the driver, which reports it once (with a traceback
    # in the log when it is a bug): the worker's copy is noise
    "Compute Failed",
)


class _ShutdownNoiseFilter(logging.Filter):
    """Drop the CommClosedError/StreamClosedError tracebacks Dask logs while a cluster closes."""

    NOISE = SHUTDOWN_NOISE

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            name = record.exc_info[0].__name__
            if name in ("CommClosedError", "StreamClosedError", "CancelledError", "OSError"):
                return False
        msg = record.getMessage()
        return not any(n in msg for n in self.NOISE)


def quiet_shutdown_noise() -> None:
    """Keep Dask's own chatter to warnings and drop shutdown noise (all ranks)."""
    f = _ShutdownNoiseFilter()
    for name in (
        "distributed",
        "distributed.core",
        "distributed.worker",
        "distributed.scheduler",
        "distributed.comm",
        "distributed.comm.tcp",
        "distributed.batched",
        "distributed.nanny",
        "distributed.client",
        "distributed.utils",
        "distributed.utils_perf",
        "distributed.http.proxy",
        "tornado.application",
    ):
        lg = logging.getLogger(name)
        lg.setLevel(logging.WARNING)
        lg.addFilter(f)
    for h in logging.getLogger().handlers:
        h.addFilter(f)


def quiet_workers(client) -> None:
    """Install the same log filter in worker processes this process did not configure itself
    (a LocalCluster's nanny-spawned workers, and their replacements after a restart), so a
    task's failure reaches the user once, as the driver's one-line error, not as a worker traceback."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietLogs(WorkerPlugin):
        name = "arl-mpi-quiet-logs"

        def setup(self, worker) -> None:
            quiet_shutdown_noise()

    with contextlib.suppress(Exception):
        client.register_plugin(QuietLogs())


def register_plugins(client) -> None:
    """Scheduler plugin :class:`~arl_mpi.cluster.plugins.ReviveLooseTasks` and the worker log
    filter (best effort: an external cluster whose processes cannot import arl_mpi does without)."""
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
        f"dashboard: http://localhost:{port}/status on {host} (bound to localhost; from your laptop: "
        f"ssh -N -L 8787:localhost:{port} [-J you@login-node] you@{host}, then open "
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


MEMORY_ADVICE = (
    "raise --memory-limit, use --stream if not already, or split the store into more, smaller "
    "partitions"
)


def killed_worker_error(e: BaseException, settings: ClusterSettings) -> ClusterError:
    """A one-line ClusterError for Dask's KilledWorker (workers died running the same task,
    almost always because the task needs more memory than the worker's limit)."""
    ws = getattr(e, "last_worker", None)
    limit = getattr(ws, "memory_limit", 0) or 0
    shown = f"{limit / 2**20:.0f} MiB" if limit else settings.memory_limit
    key = getattr(e, "task", "?")
    tries = getattr(e, "allowed_failures", 0) + 1
    return ClusterError(
        f"task {key} was tried on {tries} workers and each died running it (usually the worker "
        f"memory limit, here {shown}, is too small for one partition; see the nanny's "
        f"'exceeded 95% memory budget' lines): {MEMORY_ADVICE}"
    )


class WorkerWatchdog:
    """Ends a job whose cluster cannot make progress for ``grace`` seconds.

    Two ways a Dask cluster waits forever, both seen here:

    * no worker at all (the soak benchmark: after eleven memory-limit restarts in a row the
      LocalCluster's nannies stopped starting workers and the driver sat in
      ``Future.result()``);
    * every worker *paused* while the driver waits on a task: Dask pauses a worker at 80 % of
      its memory limit (``distributed.worker.memory.pause``) and starts nothing on it until
      spilling brings it below; memory that cannot be spilled (the interpreter and libraries
      themselves, with a limit of ~100 MB) keeps it paused for good, and no KilledWorker
      ever comes.

    A thread polls the scheduler every ``poll`` s; after ``grace`` s in either state it
    records why and closes the client, which releases the driver's wait; :func:`_run_job`
    then raises a one-line ClusterError.
    """

    def __init__(self, client, grace: float, poll: float = 2.0):
        import threading

        self.client, self.grace, self.poll = client, grace, poll
        self.reason: str | None = None
        self._limit = 0  # the largest worker memory limit seen (bytes; 0: none or unknown)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arl-worker-watchdog", daemon=True)

    def __enter__(self) -> WorkerWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.poll + 5)

    def _state(self) -> str | None:
        """``"none"`` (no worker), ``"paused"`` (every worker paused while the driver waits on
        a future), ``"ok"``, or None when the scheduler cannot be asked this time."""
        try:
            workers = self.client.scheduler_info()["workers"]
        except Exception:  # noqa: BLE001 - a busy or closing scheduler: no verdict this time
            return None
        if not workers:
            return "none"
        self._limit = max((w.get("memory_limit") or 0) for w in workers.values())
        if all(w.get("status") == "paused" for w in workers.values()) and self._waiting():
            return "paused"
        return "ok"

    def _waiting(self) -> bool:
        """Whether this client holds a future that has not finished."""
        try:
            return any(f.status == "pending" for f in list(self.client.futures.values()))
        except Exception:  # noqa: BLE001 - the dict changed under us: assume it waits
            return True

    def _why(self, state: str) -> str:
        limit = self._limit
        shown = f"{limit / 2**20:.0f} MiB" if limit else "its limit"
        if state == "none":
            hint = (
                f"; if the lines above say 'exceeded 95% memory budget', the worker memory limit "
                f"({shown}) is too small: raise --memory-limit or use --stream"
                if limit
                else ""
            )
            return (
                f"the Dask cluster has had no worker for {self.grace:.0f} s (all workers died "
                f"and none came back{hint}); the last checkpoint, if any, can be continued "
                "with --resume"
            )
        import dask

        pause = dask.config.get("distributed.worker.memory.pause", 0.8)
        at = f"{pause:.0%} of" if isinstance(pause, (int, float)) and pause else "the pause threshold of"
        return (
            f"every Dask worker has been paused at {at} its memory limit ({shown}) for "
            f"{self.grace:.0f} s with work waiting, and spilling cannot free that memory: "
            f"{MEMORY_ADVICE}"
        )

    def _run(self) -> None:
        import time

        since, last = 0.0, None  # when the current bad state ("none"/"paused") began
        while not self._stop.wait(self.poll):
            state = self._state()
            if state in (None, "ok"):
                last = None
                continue
            if state != last:
                since, last = time.monotonic(), state
            if time.monotonic() - since >= self.grace:
                self.reason = self._why(state)
                log.error("%s", self.reason)
                with contextlib.suppress(Exception):
                    self.client.close(timeout=5)
                return


def _run_job(job: Callable[..., int], client, settings: ClusterSettings) -> int:
    """``job(client)`` under a :class:`WorkerWatchdog`, with Dask's KilledWorker and a
    worker-less cluster turned into one-line ClusterErrors."""
    from distributed import KilledWorker

    with WorkerWatchdog(client, grace=settings.cluster_timeout) as dog:
        try:
            return job(client)
        except KilledWorker as e:
            raise killed_worker_error(e, settings) from None
        except BaseException:  # the closed client cancels the driver's futures (CancelledError)
            if dog.reason:
                raise ClusterError(dog.reason) from None
            raise


def run_with_client(job: Callable[..., int], settings: ClusterSettings | None = None) -> int:
    """Run ``job(client)`` wherever this process was launched; see the module docstring.

    Returns the job's exit status on every rank (non-driver ranks return the driver's).
    Exceptions from ``job`` propagate on the driver after the cluster was shut down.
    """
    settings = settings or ClusterSettings()
    mode = detect_mode()
    if mode == "mpi":
        return _run_mpi(job, settings)
    configure_dask(settings)
    if mode == "external":
        with connect_external(settings) as client:
            return _run_job(job, client, settings)
    with local_client(settings) as client:
        return _run_job(job, client, settings)


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
def local_client(settings: ClusterSettings):
    """A LocalCluster sized to this machine (TLS on localhost unless disabled)."""
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
        local_directory=scratch_directory(settings),
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


def _run_mpi(job: Callable[..., int], settings: ClusterSettings) -> int:
    from dask_mpi import initialize
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if size < 3:
        raise ClusterError(
            f"{size} MPI rank(s) is too few: arl_mpi needs at least 3 — rank 0 runs the Dask scheduler, "
            "rank 1 the driver (major/minor cycles), ranks 2+ the workers. Use e.g. mpiexec -n 4, "
            "or run without mpiexec for a local cluster."
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
        local_directory=scratch_directory(settings),
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
        status = int(_run_job(job, client, settings) or 0)
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
