"""Atomic file output: write to a temporary name in the target directory, then rename.

A full disk (or quota) while writing is raised as one line naming the file
(:class:`DiskFullError`), the temporary file removed. HDF5 files are built in memory and
written with plain file I/O (:func:`atomic_h5`): h5py 3.16 / HDF5 2.0 can crash the process
(a segmentation fault in ``File.close``) after a write to a full disk failed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from arl_mpi.errors import OutputError

#: errors that mean the target filesystem is full, turned into a one-line OutputError
_FULL = (errno.ENOSPC, errno.EDQUOT)
#: :func:`atomic_h5` builds files up to this size (bytes of data) in memory; larger ones are
#: written by HDF5 directly once the disk is seen to have room for them
IN_MEMORY_H5_BYTES = 256 << 20


class DiskFullError(OutputError):
    """The disk (or quota) filled up while ``path`` was written; the message is the one line shown.

    Attributes
    ----------
    path : str, the final name of the file that did not fit
    reason : str, e.g. "No space left on device"
    """

    def __init__(self, message: str, path: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.path, self.reason = path, reason

    def __reduce__(self):  # keeps path and reason through pickling (a Dask worker's error)
        return (type(self), (str(self), self.path, self.reason))


def disk_full(path: str | os.PathLike, err: int = errno.ENOSPC) -> DiskFullError:
    """The one-line error for ``path`` not fitting on its disk (``err``: ENOSPC or EDQUOT)."""
    reason = os.strerror(err)
    return DiskFullError(f"{path}: {reason} while writing it (the files written before it are complete; "
                         "free space and run again)", str(path), reason)


def is_disk_full(e: BaseException) -> bool:
    """True for an OSError meaning a full disk or quota (not an OutputError already made of one)."""
    return isinstance(e, OSError) and not isinstance(e, OutputError) and e.errno in _FULL


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A unique temporary name beside ``path`` (same directory, so rename is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644, make_parents: bool = True) -> Iterator[Path]:
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
    make_parents : bool
        Create missing parent directories; False for a file inside a directory that must
        exist already (a store's partition: a late task must not re-create a store directory
        removed after a failure).
    """
    final = Path(path)
    if make_parents:
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
        if is_disk_full(e):
            raise disk_full(final, e.errno) from None
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes | memoryview, mode: int = 0o644,
                       make_parents: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (``make_parents``: see :func:`atomic_path`)."""
    with atomic_path(path, mode, make_parents) as tmp:
        tmp.write_bytes(data)


def require_free(path: str | os.PathLike, nbytes: int) -> None:
    """Raise :class:`DiskFullError` naming ``path`` when its directory's filesystem has less
    than ``nbytes`` free (for this user); nothing when that cannot be told."""
    where = Path(path).parent
    while not where.exists() and where != where.parent:  # the filesystem it will be created on
        where = where.parent
    try:
        st = os.statvfs(where)
    except OSError:
        return
    if st.f_bavail * st.f_frsize < nbytes:
        raise disk_full(path)


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike, mode: int = 0o644, nbytes: int | None = None,
              make_parents: bool = True, **kwargs: Any) -> Iterator[Any]:
    """Yield a new ``h5py.File``; on success it is written to ``path`` atomically.

    Up to :data:`IN_MEMORY_H5_BYTES` of data (``nbytes``; None: small, e.g. a gain table)
    the file is built in memory and written with one plain ``write``: HDF5 never meets the
    disk, so a full disk is an ordinary ``OSError``, raised as :class:`DiskFullError` naming
    ``path`` (see the module's note). Larger files are written by HDF5 under the temporary
    name, after a check that the disk has room for ``nbytes`` and 5 % more. Nothing is
    written when the block raises.

    Parameters
    ----------
    path : path-like
        Final destination.
    mode : int
        Permission bits of the final file.
    nbytes : int, optional
        About how many bytes of data the file will hold.
    make_parents : bool
        See :func:`atomic_path`.
    **kwargs
        Passed to ``h5py.File`` (e.g. ``libver="latest"``).
    """
    import h5py

    if nbytes is not None and nbytes > IN_MEMORY_H5_BYTES:
        require_free(path, nbytes + nbytes // 20 + (1 << 20))
        with atomic_path(path, mode, make_parents) as tmp, h5py.File(tmp, "w", **kwargs) as f:
            yield f
        return
    buf = io.BytesIO()
    with h5py.File(buf, "w", **kwargs) as f:
        yield f
    write_bytes_atomic(path, buf.getbuffer(), mode, make_parents)


def remove_tree(path: str | os.PathLike, wait: float = 10.0) -> None:
    """Remove the directory ``path`` and all in it, retrying for up to ``wait`` s while tasks
    that were still running when a write failed (a cancelled Dask task runs to its end) add
    files to it; nothing when it does not exist."""
    import shutil
    import time

    p, end = Path(path), time.monotonic() + wait
    while True:
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists() or time.monotonic() > end:
            return
        time.sleep(0.1)
