"""A job on a Dask cluster that cannot make progress ends with a one-line error, not a hang.

:func:`run_job` runs ``job(client)`` under a :class:`WorkerWatchdog` and turns Dask's
``KilledWorker`` and a stalled cluster into one-line :class:`~arl_mpi.errors.ClusterError`\\ s.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import dask

from arl_mpi.cluster.settings import ClusterSettings
from arl_mpi.errors import ClusterError

log = logging.getLogger(__name__)

MEMORY_ADVICE = (
    "raise --memory-limit, use --stream if not already, or split the store into more, smaller "
    "partitions"
)
#: What to check when workers and the scheduler cannot reach each other (one line).
NETWORK_ADVICE = (
    "check that --interface names a network every node of the job shares (`ip addr` on each node; "
    "the scheduler's address must be reachable from the worker nodes), that no firewall blocks TCP "
    "between the nodes, and the workers' own log lines ('[rank N worker]')"
)


def killed_worker_error(e: BaseException, settings: ClusterSettings) -> ClusterError:
    """A one-line ClusterError for Dask's KilledWorker (workers died running the same task,
    almost always because the task needs more memory than the worker's limit).

    Parameters
    ----------
    e : distributed.KilledWorker
    settings : ClusterSettings
        Its ``memory_limit`` is shown when the worker's own limit is unknown.

    Returns
    -------
    ClusterError
    """
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
    records why (:attr:`reason`) and closes the client, which releases the driver's wait;
    :func:`run_job` then raises a one-line ClusterError. :attr:`polls` counts the polls.
    """

    def __init__(self, client, grace: float, poll: float = 2.0, expected: int | None = None):
        self.client, self.grace, self.poll = client, grace, poll
        self.expected = expected  # the workers the job started with (MPI: ranks - 2), if known
        self.reason: str | None = None
        self.polls = 0
        self._limit = 0  # the largest worker memory limit seen (bytes; 0: none or unknown)
        # --memory-limit as given: the limit shown when no live worker was ever seen (a nanny
        # that gave up before the first poll)
        self.limit_setting: str | None = None
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

    def _known_limit(self) -> int:
        """The largest limit seen, else ``--memory-limit`` in bytes (0: none, auto or unknown)."""
        if self._limit or not self.limit_setting:
            return self._limit
        from dask.utils import parse_bytes

        try:
            return int(parse_bytes(self.limit_setting))
        except (TypeError, ValueError):  # "auto" and the like
            return 0

    def _why(self, state: str) -> str:
        limit = self._known_limit()
        shown = f"{limit / 2**20:.0f} MiB" if limit else "its limit"
        if state == "none":
            hint = (
                f"; if the lines above say 'exceeded 95% memory budget', the worker memory limit "
                f"({shown}) is too small: raise --memory-limit or use --stream"
                if limit
                else ""
            )
            try:
                address = self.client.scheduler.address
            except Exception:  # noqa: BLE001 - only for the message
                address = "?"
            lost = f"all {self.expected} workers" if self.expected else "all workers"
            return (
                f"the Dask cluster has had no worker for {self.grace:.0f} s: {lost} left the "
                f"scheduler at {address} and none came back (they died{hint}, or lost the "
                f"network to the scheduler: {NETWORK_ADVICE}); the last checkpoint, if any, can "
                "be continued with --resume"
            )
        pause = dask.config.get("distributed.worker.memory.pause", 0.8)
        at = (
            f"{pause:.0%} of"
            if isinstance(pause, (int, float)) and pause
            else "the pause threshold of"
        )
        return (
            f"every Dask worker has been paused at {at} its memory limit ({shown}) for "
            f"{self.grace:.0f} s with work waiting, and spilling cannot free that memory: "
            f"{MEMORY_ADVICE}"
        )

    def _run(self) -> None:
        since, last = 0.0, None  # when the current bad state ("none"/"paused") began
        while not self._stop.wait(self.poll):
            self.polls += 1
            state = self._state()
            if state in (None, "ok"):
                last = None
                continue
            if state != last:
                since, last = time.monotonic(), state
            if time.monotonic() - since >= self.grace:
                self.reason = self._why(state)
                # the job's one-line error says it (run_job raises it); once is enough
                log.debug("%s", self.reason)
                with contextlib.suppress(Exception):
                    self.client.close(timeout=5)
                return


def run_job(
    job: Callable[..., int], client, settings: ClusterSettings, expected_workers: int | None = None
) -> int:
    """``job(client)`` under a :class:`WorkerWatchdog` (grace ``settings.cluster_timeout``),
    with Dask's KilledWorker and a stalled cluster turned into one-line ClusterErrors.

    Parameters
    ----------
    job : callable
        ``job(client) -> exit status``.
    client : distributed.Client
    settings : ClusterSettings
    expected_workers : int, optional
        How many workers the job started with (for the message when none is left).

    Returns
    -------
    int
        What ``job`` returned.
    """
    from distributed import KilledWorker

    dog = WorkerWatchdog(client, grace=settings.cluster_timeout)
    dog.expected = expected_workers
    dog.limit_setting = settings.memory_limit
    with dog:
        try:
            return job(client)
        except KilledWorker as e:
            raise killed_worker_error(e, settings) from None
        except BaseException:  # the closed client cancels the driver's futures (CancelledError)
            if dog.reason:
                raise ClusterError(dog.reason) from None
            raise
