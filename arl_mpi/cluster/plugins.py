"""Dask scheduler plugins (imported lazily: this module imports ``distributed``)."""

from __future__ import annotations

import logging
import time

from distributed.diagnostics.plugin import SchedulerPlugin

log = logging.getLogger(__name__)


class ReviveLooseTasks(SchedulerPlugin):
    """Once a second, hand to the running workers the tasks stuck in ``no-worker`` only because the workers
    they *preferred* are gone (loose restrictions: ``workers=[...]``, ``allow_other_workers=True``,
    which is how the pipeline spreads partitions over the workers).

    Dask's own check when a worker joins (``bulk_schedule_unrunnable_after_adding_worker``)
    revives a ``no-worker`` task only if the new worker is in its restriction set. So a loosely
    placed task that became ``no-worker`` while *every* worker was being restarted (both nannies
    hit their memory limit at once) waited forever, although any worker may run it: the run hung.
    Found by ``benchmarks/soak.py --no-stream --memory-limit 300MB``; tested by
    ``tests/cluster/test_reliability.py::test_all_workers_restarted_at_once_run_completes``.
    """

    name = "arl-mpi-revive-loose-tasks"
    idempotent = True
    interval_ms = 1000

    async def start(self, scheduler) -> None:
        # A periodic check rather than the add_worker hook: a joining worker becomes
        # "running" only some time after the scheduler has called add_worker.
        from tornado.ioloop import PeriodicCallback

        pc = PeriodicCallback(lambda: self.revive(scheduler), self.interval_ms)
        scheduler.periodic_callbacks[self.name] = pc
        pc.start()

    @staticmethod
    def revive(scheduler) -> None:
        """Send loosely restricted ``no-worker`` tasks to ``processing`` (any running worker)."""
        if not scheduler.unrunnable or not scheduler.running:
            return
        recs = {ts.key: "processing" for ts in list(scheduler.unrunnable) if ts.loose_restrictions}
        if recs:
            log.warning("rescheduling %d task(s) whose preferred workers were lost", len(recs))
            scheduler.transitions(recs, stimulus_id=f"arl-revive-loose-{time.time()}")
