"""MeasurementSet / UVFITS into an HDF5 store (the library behind ``python -m arl_mpi.ingest``).

Under MPI every rank reads the rows of its own partitions and writes them (partition
``pid % size == rank``); rank 0 writes the index. The input is opened read-only and is
never modified. One MS field and spectral window per run (``field``, ``spw``); a UVFITS
file's IFs are ingested together when contiguous in frequency, and ``field`` picks a source
of a multi-source file (AIPS SU table). :func:`ensure_store_from_input` lets the pipeline's
``--vis`` take an MS or UVFITS file: it is ingested once into ``INPUT.arlstore`` beside it
(or under ``$ARL_CACHE`` when that directory is not writable), reused while the input is
unchanged and replaced when it changes; the caller reads only the row times (to plan the
partitions, :func:`plan_ingest`) and each partition is read and written by whoever runs its
:class:`PartitionIngester` (the pipeline's Dask workers: :mod:`arl_mpi.graphs.ingest_graph`).
Large inputs log progress lines (with the time left) every few seconds at INFO.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arl_mpi.errors import InputError, StoreError
from arl_mpi.io.atomic import remove_tree, temporary_sibling
from arl_mpi.io.parallel import write_store_parallel
from arl_mpi.io.store import (
    PARTITION_DIR,
    PartitionInfo,
    StoreIndex,
    check_new_store,
    create_store,
    finalize_store,
    open_store,
    plan_partitions,
    store_disk_full,
    write_partition,
)
from arl_mpi.progress import Progress

log = logging.getLogger("arl_mpi.ingest")


def detect_format(path: str | os.PathLike) -> str:
    """``store``, ``ms`` or ``uvfits`` (InputError for anything else)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such visibility store, MeasurementSet or UVFITS file")
    if p.is_dir():
        if (p / "index.h5").exists() or (p / "partitions").is_dir():
            return "store"
        if (p / "table.dat").exists():
            return "ms"
        from arl_mpi.io.msv4 import is_processing_set

        if is_processing_set(p):
            return "msv4"
        raise InputError(
            f"{p}: neither a visibility store (index.h5) nor a MeasurementSet (table.dat)"
        )
    with open(p, "rb") as fh:
        head = fh.read(30)
    if head.startswith(b"SIMPLE  ="):
        return "uvfits"
    if head.startswith(b"\x89HDF"):
        raise InputError(
            f"{p}: an HDF5 file, not a visibility store (a store is a directory holding index.h5)"
        )
    raise InputError(f"{p}: not a MeasurementSet, UVFITS file or visibility store")


def open_reader(
    path: str | os.PathLike,
    column: str = "DATA",
    field: int = 0,
    spw: int = 0,
    *,
    select_rows: bool = True,
):
    """A reader (UVFitsReader or MSReader) for ``path``.

    ``select_rows=False`` (MS only) skips reading the row list and times: enough for
    :meth:`read_rows` of rows someone else planned, as a worker does.
    """
    fmt = detect_format(path)
    if fmt == "uvfits":
        from arl_mpi.io.uvfits import UVFitsReader

        if column != "DATA":
            raise InputError(
                f"{path}: UVFITS has one data column; --column {column} applies to MeasurementSets"
            )
        if spw != 0:
            raise InputError(
                f"{path}: UVFITS IFs are ingested together (contiguous, increasing); --spw applies to "
                "MeasurementSets"
            )
        return UVFitsReader(path, field=field)
    if fmt == "ms":
        from arl_mpi.io.ms import MSReader

        return MSReader(path, column=column, field=field, spw=spw, select_rows=select_rows)
    if fmt == "msv4":
        from arl_mpi.io.msv4 import MSv4Reader

        return MSv4Reader(path, column=column, field=field, spw=spw, select_rows=select_rows)
    raise InputError(f"{path}: is already a visibility store")


@dataclass(frozen=True)
class InputSpec:
    """How to open an input (what a worker needs to open it itself, read-only)."""

    path: str
    column: str = "DATA"
    field: int = 0
    spw: int = 0

    def open(self, select_rows: bool = True):
        """A reader for this input (see :func:`open_reader`)."""
        return open_reader(self.path, self.column, self.field, self.spw, select_rows=select_rows)


def row_runs(rows: np.ndarray) -> np.ndarray:
    """``rows`` as runs of consecutive numbers: an int64 array [nrun, 2] of (start, stop)."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.zeros((0, 2), np.int64)
    cuts = np.nonzero(np.diff(rows) != 1)[0] + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [rows.size]])
    return np.stack([rows[starts], rows[stops - 1] + 1], axis=1)


@dataclass(frozen=True)
class PartitionTask:
    """One partition to ingest: its block coordinates and its rows of the input file.

    The rows are kept as runs of consecutive row numbers (``runs``, [nrun, 2] start/stop):
    a time-ordered MS gives one run per partition, so a task pickles to a few hundred bytes;
    the worker reads the rows' times itself.
    """

    pid: int
    time_block: int
    freq_block: int
    chans: slice
    runs: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        """The row numbers, in order."""
        if len(self.runs) == 0:
            return np.zeros(0, np.int64)
        return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in self.runs])

    @property
    def nrow(self) -> int:
        """Rows in this partition."""
        return int((self.runs[:, 1] - self.runs[:, 0]).sum())


def plan_ingest(reader, time_partitions: int, freq_partitions: int = 1) -> list[PartitionTask]:
    """Partition tasks for ``reader``'s rows (in partition-id order; see ``plan_partitions``)."""
    plan = plan_partitions(reader.times, reader.frequency.size, time_partitions, freq_partitions)
    tasks = []
    for pid, (tb, fb, tt, cs) in enumerate(plan):
        idx = np.nonzero(np.isin(reader.times, tt))[0]
        tasks.append(PartitionTask(pid, tb, fb, cs, row_runs(reader.rows[idx])))
    return tasks


def write_task(reader, store: str | os.PathLike, task: PartitionTask, on_rows=None) -> PartitionInfo:
    """Read ``task``'s rows and channels with ``reader`` and write them as its partition of ``store``."""
    vis = reader.read_rows(task.rows, None, task.chans, on_rows)
    return write_partition(store, vis, pid=task.pid, time_block=task.time_block,
                           freq_block=task.freq_block, chan_start=task.chans.start)  # fmt: skip


@dataclass(frozen=True)
class PartitionIngester:
    """``ingester(task)`` opens the input read-only, reads ``task``'s rows, writes its partition.

    Pickles as the input's description and the store's path only, so it can run in any
    process (a Dask worker, an MPI rank); the input is opened afresh for every task (cheap:
    no row list is read) so that tasks in several threads never share a casacore table.
    """

    spec: InputSpec
    store: str

    def __call__(self, task: PartitionTask) -> PartitionInfo:
        reader = self.spec.open(select_rows=False)
        try:
            return write_task(reader, self.store, task)
        finally:
            reader.close()


#: ``map_partitions(ingester, tasks)``: run ``ingester(task)`` for every task (anywhere) and
#: yield the PartitionInfos, in any order, as they finish.
PartitionMap = Callable[[Callable[[PartitionTask], PartitionInfo], Sequence[PartitionTask]], Iterable[PartitionInfo]]


#: Least seconds between two progress lines of an ingest.
PROGRESS_INTERVAL_S = 5.0


def _progress(what: str, tasks: Sequence[PartitionTask]) -> Progress:
    return Progress(f"ingest of {what}", sum(t.nrow for t in tasks), log, unit="rows",
                    interval_s=PROGRESS_INTERVAL_S)  # fmt: skip


def ingest(
    input_path: str | os.PathLike,
    store: str | os.PathLike,
    *,
    time_partitions: int = 4,
    freq_partitions: int = 1,
    column: str = "DATA",
    field: int = 0,
    spw: int = 0,
) -> StoreIndex | None:
    """Ingest ``input_path`` into a new store (in parallel under MPI; returns the index on rank 0).

    Under MPI every rank opens the input read-only, plans the partitions from its times and
    reads and writes only the rows of its own partitions (``pid % size == rank``); rank 0
    writes the index. Each rank logs progress lines for its share every few seconds at INFO.
    The store is written under a temporary name beside ``store`` and renamed when finished,
    so a failed ingest (a full disk: one line naming ``store``) leaves nothing under ``store``.
    """
    from arl_mpi.mpienv import mpi_rank_size

    final = check_new_store(store, unfinished=False)
    reader = open_reader(input_path, column, field, spw)
    tasks = plan_ingest(reader, time_partitions, freq_partitions)
    rank, size = mpi_rank_size()
    mine = tasks[rank::size]
    prog = _progress(f"{Path(input_path).name}" + (f" (rank {rank}'s share)" if size > 1 else ""), mine)
    tmp = temporary_sibling(final)
    if size > 1:  # one temporary name for every rank: rank 0's
        from mpi4py import MPI

        tmp = MPI.COMM_WORLD.bcast(tmp, root=0)

    def write_one(pid: int) -> PartitionInfo:
        return write_task(reader, tmp, tasks[pid], prog.update)

    try:
        idx = write_store_parallel(tmp, len(tasks), write_one, reader.meta)
        if idx is None:
            return None
        for d in (final / PARTITION_DIR, final):  # an empty directory left for it (create_store allows one)
            if d.is_dir():
                d.rmdir()
        os.rename(tmp, final)
        return open_store(final)
    except BaseException as e:
        if rank == 0:
            remove_tree(tmp)
        full = store_disk_full(final, e)
        if full is not None:
            raise full from None
        raise
    finally:
        prog.done()
        reader.close()


def _fingerprint(path: Path) -> str:
    st_items = []
    for f in sorted([path] + (list(path.rglob("*")) if path.is_dir() else [])):
        if f.is_file():
            st = f.stat()
            st_items.append(f"{f.relative_to(path.parent)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(st_items).encode()).hexdigest()[:16]


def _reusable(target: Path, src: Path, fp: str) -> bool:
    """True when ``target`` is a finished store ingested from ``src`` in its current state.

    False when it was ingested from ``src`` before ``src`` changed (stale: safe to replace);
    StoreError when it is something else (another input's store, or not a store at all).
    """
    try:
        idx = open_store(target)
    except StoreError as e:
        raise StoreError(
            f"{target}: exists and is not a usable store ({e}); remove it to re-ingest"
        ) from None
    prov = idx.meta.provenance
    if prov.get("fingerprint") == fp:
        return True
    if prov.get("ingested_from") == str(src.resolve()):
        return False
    raise StoreError(
        f"{target}: exists but was not ingested from {src}; remove it or pass the store itself"
    )


def ensure_store_from_input(
    path: str | os.PathLike,
    time_partitions: int = 4,
    freq_partitions: int = 1,
    *,
    map_partitions: PartitionMap | None = None,
) -> str:
    """The store for ``--vis PATH``: PATH itself if it is a store, else an ingested copy.

    MS/UVFITS inputs are ingested once into ``PATH.arlstore`` beside the input (or into
    ``$ARL_CACHE``/``~/.cache/arl_mpi`` when that directory is not writable) and reused while
    the input's files are unchanged (sizes and modification times of every file). A store
    ingested from the same input before it changed is re-ingested and replaced. The store is
    written under a temporary name and renamed, so an interrupted ingest leaves nothing
    under the final name.

    This process reads only the row times (to plan the partitions) and the metadata; the
    partitions are read and written by ``map_partitions`` (e.g. on Dask workers, see
    :mod:`arl_mpi.graphs.ingest_graph`), or here, one after the other, without it. Progress
    lines every few seconds at INFO.
    """
    p = Path(path)
    if detect_format(p) == "store":
        return str(p)
    fp = _fingerprint(p)
    target = p.with_name(p.name + ".arlstore")
    if not os.access(p.parent, os.W_OK):
        cache = Path(os.environ.get("ARL_CACHE", Path.home() / ".cache" / "arl_mpi"))
        cache.mkdir(parents=True, exist_ok=True)
        target = cache / f"{p.name}-{fp}.arlstore"
    stale = False
    if target.exists():
        if _reusable(target, p, fp):
            log.info("reusing %s (ingested from %s)", target, p)
            return str(target)
        stale = True
        log.info("%s changed since %s was ingested from it: re-ingesting", p, target)
    else:
        log.info("ingesting %s into %s", p, target)
    t0 = time.perf_counter()
    reader = open_reader(p)
    tmp = temporary_sibling(target)
    try:
        tasks = plan_ingest(reader, min(time_partitions, np.unique(reader.times).size), freq_partitions)
        meta = reader.meta()
        meta.provenance["fingerprint"] = fp
        prog = _progress(p.name, tasks)
        create_store(tmp)
        if map_partitions is None:
            infos = [write_task(reader, tmp, t, prog.update) for t in tasks]
        else:
            reader.close()  # the workers open the input themselves
            infos = []
            for info in map_partitions(PartitionIngester(InputSpec(str(p)), str(tmp)), tasks):
                infos.append(info)
                prog.update(info.nrow)
        prog.done()
        finalize_store(tmp, meta, infos)
        if stale:
            old = temporary_sibling(target)
            os.rename(target, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, target)
            log.info("ingested %s in %.1f s (%d partitions, %s)", p.name, time.perf_counter() - t0, len(tasks),
                     "on the workers" if map_partitions is not None else "in this process")
        except OSError:
            if target.exists() and _reusable(target, p, fp):  # another process won the race
                log.info("reusing %s (ingested concurrently)", target)
            else:
                raise
    except BaseException as e:  # a full disk: one line naming the store, not its temporary name
        full = store_disk_full(target, e)
        if full is not None:
            raise full from None
        raise
    finally:
        reader.close()
        remove_tree(tmp)  # after a failure, partitions still being written on the workers too
    return str(target)
