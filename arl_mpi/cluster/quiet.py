"""Dask's shutdown chatter kept out of the logs; every other warning and error kept in.

Imports only :mod:`logging` at module level, so the worker preload
(:mod:`arl_mpi.cluster.worker_setup`) stays light.
"""

from __future__ import annotations

import contextlib
import errno
import logging

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

# Exception types only a closing connection raises (matched by name: no import needed).
CLOSED_COMM_TYPES = ("CommClosedError", "StreamClosedError", "CancelledError")
# errnos of an OSError from a connection the other end closed or refused.
CLOSING_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.EPIPE,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.ENOTCONN,
        errno.ESHUTDOWN,
    }
)

# The loggers of Dask (and tornado) that log shutdown chatter.
DASK_LOGGERS = (
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
)


def is_shutdown_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` is an error only a closing cluster raises.

    That is: Dask's/tornado's closed-comm errors and ``CancelledError``; an ``OSError``
    whose errno is one of :data:`CLOSING_ERRNOS` (connection reset, broken pipe, refused,
    ...) or whose message contains one of :data:`SHUTDOWN_NOISE`. Any other ``OSError``
    (a full disk, a permission error, a missing file) is not.

    Parameters
    ----------
    exc : BaseException or None

    Returns
    -------
    bool
    """
    if exc is None:
        return False
    if any(c.__name__ in CLOSED_COMM_TYPES for c in type(exc).__mro__):
        return True
    if isinstance(exc, OSError):
        if exc.errno in CLOSING_ERRNOS:
            return True
        return any(n in str(exc) for n in SHUTDOWN_NOISE)
    return False


class ShutdownNoiseFilter(logging.Filter):
    """Drop the records Dask logs while a cluster closes: a traceback of a shutdown error
    (:func:`is_shutdown_error`) or a message containing one of :data:`SHUTDOWN_NOISE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for shutdown noise, True (keep) for everything else."""
        if record.exc_info and is_shutdown_error(record.exc_info[1]):
            return False
        msg = record.getMessage()
        return not any(n in msg for n in SHUTDOWN_NOISE)


def quiet_shutdown_noise() -> None:
    """Keep Dask's own chatter to warnings and drop shutdown noise (every rank/process)."""
    f = ShutdownNoiseFilter()
    for name in DASK_LOGGERS:
        lg = logging.getLogger(name)
        lg.setLevel(logging.WARNING)
        if not any(isinstance(x, ShutdownNoiseFilter) for x in lg.filters):
            lg.addFilter(f)
    for h in logging.getLogger().handlers:
        if not any(isinstance(x, ShutdownNoiseFilter) for x in h.filters):
            h.addFilter(f)


def quiet_workers(client) -> None:
    """Install the same log filter in worker processes this process did not configure itself
    (a LocalCluster's nanny-spawned workers, and their replacements after a restart), so a
    task's failure reaches the user once, as the driver's one-line error, not as a worker
    traceback. Best effort: a cluster that cannot import arl_mpi does without."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietLogs(WorkerPlugin):
        name = "arl-mpi-quiet-logs"

        def setup(self, worker) -> None:
            quiet_shutdown_noise()

    with contextlib.suppress(Exception):
        client.register_plugin(QuietLogs())
