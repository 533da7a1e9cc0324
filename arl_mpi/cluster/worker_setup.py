"""Imported at the start of every Dask worker process arl_mpi starts (Dask's
``distributed.worker.preload``, set by :func:`arl_mpi.cluster.runtime.configure_dask`), so
that a worker started by a nanny — after a memory-limit restart too — is quiet from its
first line, not only once it has registered (the ``QuietLogs`` worker plugin).

Two things happen here:

* Dask's shutdown log noise is filtered, as on every other rank;
* a traceback that ``multiprocessing`` prints for a nanny's worker process dying of a
  *shutdown* error is dropped. Seen in CI: the cluster closed while a nanny was restarting
  a worker killed at its memory limit; that worker's ``Worker.close`` called its already
  closed RPC pool and the process ended with ``RuntimeError: ConnectionPool is closed``,
  printed in full above the pipeline's one-line error. Any other error is printed as before.
"""

from __future__ import annotations

import sys

from arl_mpi.cluster.quiet import SHUTDOWN_NOISE, quiet_shutdown_noise


class TeardownTracebackGuard:
    """``sys.stderr`` wrapper: holds back what follows a ``Process Dask Worker process``
    header (the form ``multiprocessing`` uses for an uncaught exception) until the next
    flush, then drops it when it is shutdown noise and writes it through otherwise."""

    HEADER = "Process Dask Worker process"

    def __init__(self, raw) -> None:
        self._raw = raw
        self._held: list[str] | None = None

    def write(self, s: str) -> int:
        if self._held is None and s.startswith(self.HEADER):
            self._held = []
        if self._held is not None:
            self._held.append(s)
            return len(s)
        return self._raw.write(s)

    def flush(self) -> None:
        if self._held is not None:
            text, self._held = "".join(self._held), None
            if not any(n in text for n in SHUTDOWN_NOISE):
                self._raw.write(text)
        self._raw.flush()

    def __getattr__(self, name: str):
        return getattr(self._raw, name)


def install() -> None:
    """Quiet the logs and guard ``sys.stderr`` of this process (once)."""
    quiet_shutdown_noise()
    if not isinstance(sys.stderr, TeardownTracebackGuard):
        sys.stderr = TeardownTracebackGuard(sys.stderr)


install()
