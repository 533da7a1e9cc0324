"""Shared command-line plumbing: logging set-up and one-line errors with non-zero exit."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable

from arl_mpi.errors import ArlError
from arl_mpi.mpienv import mpi_rank_size

__all__ = ["enable_stack_dumps", "run_cli", "setup_logging"]

log = logging.getLogger("arl_mpi")


def setup_logging(
    level: str = "INFO", rank: int | None = None, cluster_roles: bool = False
) -> None:
    """Log to stderr with the MPI rank (and, for the pipeline, its role) in every line."""
    r, size = mpi_rank_size()
    rank = r if rank is None else rank
    if cluster_roles and size > 1:
        role = {0: "scheduler", 1: "driver"}.get(rank, "worker")
    else:
        role = "main" if size == 1 else f"of {size}"
    fmt = f"%(asctime)s [rank {rank} {role}] %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), format=fmt, stream=sys.stderr,
        force=True,
    )


def enable_stack_dumps() -> None:
    """Make ``SIGUSR1`` print every thread's Python stack to stderr and carry on.

    For a job that seems stuck: ``kill -USR1 PID``, or ``scancel --signal=USR1 JOBID`` for
    every rank of a SLURM job step; the stacks land in the job's error log.
    """
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):
        with contextlib.suppress(ValueError, OSError, RuntimeError):  # not the main thread
            faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)


def run_cli(
    main: Callable[[list[str] | None], int], argv: list[str] | None = None, prog: str = "arl_mpi"
) -> int:
    """Run ``main``; turn :class:`ArlError` (and a few OS errors) into a one-line message.

    Returns the exit status: 0 on success, 2 for user errors, 130 on Ctrl-C.
    """
    enable_stack_dumps()
    try:
        return int(main(argv) or 0)
    except ArlError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"{prog}: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: keep the traceback in the log, end with one line
        log.error("unexpected failure", exc_info=True)
        print(f"{prog}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
