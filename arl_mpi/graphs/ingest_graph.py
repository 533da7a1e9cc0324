"""Ingest of a MeasurementSet / UVFITS file on the Dask workers (one task per partition).

The driver plans the partitions from the input's row times
(:func:`arl_mpi.io.ingest.plan_ingest`); :func:`ingest_on_workers` returns the
``map_partitions`` that :func:`arl_mpi.io.ingest.ensure_store_from_input` hands each
partition's task to: every task opens the input read-only on its worker, reads its rows and
channels and writes its partition file into the (temporary) store. Tasks are spread over
the workers round-robin (any worker may still take one), and the results come back as they
finish, so the driver can log progress and finish the index as soon as the last one lands.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence

from arl_mpi.io.ingest import PartitionMap, PartitionTask
from arl_mpi.io.store import PartitionInfo

log = logging.getLogger(__name__)


def ingest_on_workers(client) -> PartitionMap:
    """A ``map_partitions`` running every partition's ingest on ``client``'s workers.

    Parameters
    ----------
    client : distributed.Client
        Connected client; its workers must see the input and the store's directory
        (the same file system, as under ``mpiexec`` on one machine or a cluster's shared one).

    Returns
    -------
    callable
        ``run(ingester, tasks)`` yielding each task's :class:`PartitionInfo` as it finishes.
        If a task fails, the rest are cancelled and the error is raised here.
    """

    def run(ingester: Callable[[PartitionTask], PartitionInfo],
            tasks: Sequence[PartitionTask]) -> Iterator[PartitionInfo]:  # fmt: skip
        from distributed import as_completed

        workers = sorted(client.scheduler_info()["workers"])
        run_id = uuid.uuid4().hex[:8]
        futures = [
            client.submit(ingester, t, key=f"ingest-partition-{t.pid}-{run_id}",
                          workers=[workers[k % len(workers)]] if workers else None,
                          allow_other_workers=True)
            for k, t in enumerate(tasks)
        ]  # fmt: skip
        log.info("ingest: %d partitions on %d workers", len(futures), len(workers))
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            client.cancel([f for f in futures if not f.done()])

    return run
