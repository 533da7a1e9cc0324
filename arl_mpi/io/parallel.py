"""Write a store's partitions from every MPI rank at once (or serially), then its index."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from arl_mpi.io.store import PartitionInfo, StoreIndex, StoreMeta, create_store, finalize_store
from arl_mpi.mpienv import mpi_rank_size


def write_store_parallel(store: str | Path, npart: int, write_one: Callable[[int], PartitionInfo],
                         meta: Callable[[], StoreMeta]) -> StoreIndex | None:
    """Create ``store``, call ``write_one(pid)`` for every partition, write the index.

    Under MPI every rank writes partitions ``pid % size == rank`` and rank 0 writes the
    index; any rank's failure is sent to all ranks and raised everywhere, so no rank waits
    forever. Returns the index on rank 0 (None elsewhere).
    """
    rank, size = mpi_rank_size()
    if size == 1:
        create_store(store)
        return finalize_store(store, meta(), [write_one(pid) for pid in range(npart)])
    from mpi4py import MPI

    comm = MPI.COMM_WORLD

    def agree(err: Exception | None) -> None:
        err = comm.bcast(err, root=0)
        if err is not None:
            raise err

    err = None
    if rank == 0:
        try:
            create_store(store)
        except Exception as e:  # noqa: BLE001 - shared with every rank below
            err = e
    agree(err)
    mine, my_err = [], None
    try:
        mine = [write_one(pid) for pid in range(rank, npart, size)]
    except Exception as e:  # noqa: BLE001
        my_err = e
    gathered = comm.gather((mine, my_err), root=0)
    result, err = None, None
    if rank == 0:
        errs = [e for _, e in gathered if e is not None]
        err = errs[0] if errs else None
        if err is None:
            try:
                result = finalize_store(store, meta(), [i for part, _ in gathered for i in part])
            except Exception as e:  # noqa: BLE001
                err = e
    agree(err)
    return result
