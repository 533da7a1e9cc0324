"""Atomic file output: write to a temporary name in the target directory, then rename."""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from arl_mpi.errors import OutputError

#: errors that mean the target filesystem is full, turned into a one-line OutputError
_FULL = (errno.ENOSPC, errno.EDQUOT)


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A unique temporary name beside ``path`` (same directory, so rename is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path; on success fsync and rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is untouched, so a killed
    or failed writer never leaves a truncated file under the final name. A full disk
    (or quota) is raised as :class:`~arl_mpi.errors.OutputError` naming ``path``.

    Parameters
    ----------
    path : path-like
        Final destination.
    mode : int
        Permission bits of the final file.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
        os.replace(tmp, final)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(e, OSError) and not isinstance(e, OutputError) and e.errno in _FULL:
            raise OutputError(f"{final}: {os.strerror(e.errno)} while writing it (the files written "
                              f"before it are complete; free space and run again)") from None
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)
