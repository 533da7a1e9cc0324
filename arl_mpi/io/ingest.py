"""MeasurementSet / UVFITS into an HDF5 store (the library behind ``python -m arl_mpi.ingest``).

Under MPI every rank reads the rows of its own partitions and writes them (partition
``pid % size == rank``); rank 0 writes the index. The input is opened read-only and is
never modified. One MS field and spectral window per run (``field``, ``spw``); a UVFITS
file's IFs are ingested together when contiguous in frequency, and ``field`` picks a source
of a multi-source file (AIPS SU table). :func:`ensure_store_from_input` lets the pipeline's
``--vis`` take an MS or UVFITS file: it is ingested once into ``INPUT.arlstore`` beside it
(or under ``$ARL_CACHE`` when that directory is not writable), reused while the input is
unchanged and replaced when it changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from arl_mpi.errors import InputError, StoreError
from arl_mpi.io.atomic import temporary_sibling
from arl_mpi.io.parallel import write_store_parallel
from arl_mpi.io.store import (
    StoreIndex,
    create_store,
    finalize_store,
    open_store,
    plan_partitions,
    write_partition,
)

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


def open_reader(path: str | os.PathLike, column: str = "DATA", field: int = 0, spw: int = 0):
    """A reader (UVFitsReader or MSReader) for ``path``."""
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

        return MSReader(path, column=column, field=field, spw=spw)
    raise InputError(f"{path}: is already a visibility store")


def _write_one(reader, store: Path, pid: int, plan) -> object:
    tb, fb, tt, cs = plan[pid]
    idx = np.nonzero(np.isin(reader.times, tt))[0]
    vis = reader.read(idx, cs)
    return write_partition(store, vis, pid=pid, time_block=tb, freq_block=fb, chan_start=cs.start)


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
    """Ingest ``input_path`` into a new store (in parallel under MPI; returns the index on rank 0)."""
    reader = open_reader(input_path, column, field, spw)
    plan = plan_partitions(reader.times, reader.frequency.size, time_partitions, freq_partitions)
    return write_store_parallel(
        store, len(plan), lambda pid: _write_one(reader, Path(store), pid, plan), reader.meta
    )


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
    path: str | os.PathLike, time_partitions: int = 4, freq_partitions: int = 1
) -> str:
    """The store for ``--vis PATH``: PATH itself if it is a store, else an ingested copy.

    MS/UVFITS inputs are ingested once into ``PATH.arlstore`` beside the input (or into
    ``$ARL_CACHE``/``~/.cache/arl_mpi`` when that directory is not writable) and reused while
    the input's files are unchanged (sizes and modification times of every file). A store
    ingested from the same input before it changed is re-ingested and replaced. The store is
    written under a temporary name and renamed, so an interrupted ingest leaves nothing
    under the final name. Serial (the pipeline calls it once, on its driver).
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
    reader = open_reader(p)
    plan = plan_partitions(
        reader.times,
        reader.frequency.size,
        min(time_partitions, np.unique(reader.times).size),
        freq_partitions,
    )
    tmp = temporary_sibling(target)
    try:
        create_store(tmp)
        infos = [_write_one(reader, tmp, pid, plan) for pid in range(len(plan))]
        meta = reader.meta()
        meta.provenance["fingerprint"] = fp
        finalize_store(tmp, meta, infos)
        if stale:
            old = temporary_sibling(target)
            os.rename(target, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if target.exists() and _reusable(target, p, fp):  # another process won the race
                log.info("reusing %s (ingested concurrently)", target)
            else:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


