"""The shutdown-noise log filter drops only errors a closing cluster raises."""

from __future__ import annotations

import errno
import logging
import sys

import pytest

from arl_mpi.cluster.quiet import ShutdownNoiseFilter, is_shutdown_error


def record(exc: BaseException | None, msg: str = "something failed") -> logging.LogRecord:
    """A record as ``log.exception(msg)`` would make it while ``exc`` is handled."""
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:  # noqa: BLE001 - captured for the record
            exc_info = sys.exc_info()
    return logging.LogRecord("distributed.core", logging.ERROR, __file__, 1, msg, None, exc_info)


class CommClosedError(OSError):
    """Stands for distributed.comm.core.CommClosedError (matched by class name)."""


class StreamClosedError(OSError):
    """Stands for tornado.iostream.StreamClosedError."""


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        BrokenPipeError(errno.EPIPE, "Broken pipe"),
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        OSError(errno.ENOTCONN, "Transport endpoint is not connected"),
        OSError("Timed out trying to connect to tcp://127.0.0.1:1234 after 5 s"),
        CommClosedError("in <TCP (closed)>: Stream is closed"),
        StreamClosedError("Stream is closed"),
    ],
    ids=["ECONNRESET", "EPIPE", "ECONNREFUSED", "ENOTCONN", "timed-out", "comm-closed", "stream"],
)
def test_shutdown_oserrors_dropped(exc):
    assert is_shutdown_error(exc)
    assert ShutdownNoiseFilter().filter(record(exc)) is False


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        PermissionError(errno.EACCES, "Permission denied", "/scratch/w1"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/obs.store"),
        OSError("HDF5 read failed"),
        ValueError("a bug"),
    ],
    ids=["ENOSPC", "EACCES", "ENOENT", "plain-oserror", "valueerror"],
)
def test_other_errors_kept(exc):
    assert not is_shutdown_error(exc)
    assert ShutdownNoiseFilter().filter(record(exc)) is True


def test_messages_filtered_by_noise_list_without_exception():
    f = ShutdownNoiseFilter()
    broken = "Connection to scheduler broken. Closing without reporting."
    assert f.filter(record(None, broken)) is False
    assert f.filter(record(None, "Compute Failed\nKey: x")) is False
    assert f.filter(record(None, "Worker exceeded 95% memory budget. Restarting...")) is True


def test_kept_oserror_record_still_reaches_handler():
    """End to end through a logger: the ENOSPC traceback is logged, the ECONNRESET one is not."""
    lg = logging.getLogger("arl-test-quiet")
    lg.propagate = False
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            seen.append(rec)

    h = Keep()
    h.addFilter(ShutdownNoiseFilter())
    lg.addHandler(h)
    try:
        for exc in (ConnectionResetError(errno.ECONNRESET, "reset"), OSError(errno.ENOSPC, "full")):
            try:
                raise exc
            except OSError:
                lg.exception("failed")
    finally:
        lg.removeHandler(h)
    assert [r.exc_info[1].errno for r in seen] == [errno.ENOSPC]
