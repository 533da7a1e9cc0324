"""The one writer of a simulated store: every partition simulated where it is written.

:func:`write_simulated_store` creates the store, has each partition simulated and written by
whoever runs :class:`SimulatedPartitionWriter` for it (this process, a local process pool,
every rank of an MPI job, or Dask workers through ``map_partitions``) and writes the index.
``python -m arl_mpi.simulate``, the pipeline's built-in observation and the benchmarks all
end here, so a simulated store is written one way only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arl_mpi.errors import ConfigError
from arl_mpi.io.parallel import write_store_parallel
from arl_mpi.io.store import PartitionInfo, StoreIndex, create_store, finalize_store
from arl_mpi.mpienv import mpi_rank_size
from arl_mpi.progress import Progress
from arl_mpi.simulation.builtin import (
    Simulation,
    SimulationSettings,
    build,
    partition_plan,
    write_simulated_partition,
)

log = logging.getLogger(__name__)

#: Least seconds between two progress lines of a simulation (INFO; none at WARNING).
PROGRESS_INTERVAL_S = 5.0

#: ``map_partitions(write, pids)``: run ``write(pid)`` for every pid (anywhere), return the infos.
PartitionMap = Callable[[Callable[[int], PartitionInfo], Sequence[int]], Iterable[PartitionInfo]]


@dataclass
class SimulatedPartitionWriter:
    """``writer(pid)`` simulates partition ``pid`` of the recipe and writes it into ``store``.

    Pickles as its settings only: a process that receives it rebuilds the (deterministic)
    simulation once, on first use, so visibilities are never shipped between processes.

    Attributes
    ----------
    store : str
        Store directory (already created by :func:`arl_mpi.io.store.create_store`).
    settings : SimulationSettings
        The recipe.
    ntime_parts, nfreq_parts : int
        Partitions along time and frequency.
    """

    store: str
    settings: SimulationSettings
    ntime_parts: int
    nfreq_parts: int
    _sim: Simulation | None = field(default=None, init=False, repr=False, compare=False)
    _plan: Any = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_sim": None, "_plan": None}

    @property
    def sim(self) -> Simulation:
        """The expanded recipe (built on first use in each process)."""
        if self._sim is None:
            self._sim = build(self.settings)
        return self._sim

    @property
    def plan(self) -> list:
        """Partition plan, see :func:`arl_mpi.simulation.builtin.partition_plan`."""
        if self._plan is None:
            self._plan = partition_plan(self.sim, self.ntime_parts, self.nfreq_parts)
        return self._plan

    @property
    def npart(self) -> int:
        """Number of partitions."""
        return len(self.plan)

    def __call__(self, pid: int) -> PartitionInfo:
        return write_simulated_partition(self.store, self.sim, pid, self.plan)


@dataclass
class _Counted:
    """``write(pid)`` that also counts the partition in ``progress`` (in the calling process)."""

    write: Callable[[int], PartitionInfo]
    progress: Progress

    def __call__(self, pid: int) -> PartitionInfo:
        info = self.write(pid)
        self.progress.update(1)
        return info


def _counted_infos(infos: Iterable[PartitionInfo], progress: Progress) -> list[PartitionInfo]:
    """Collect ``infos`` as they arrive, counting each in ``progress``."""
    out = []
    for info in infos:
        out.append(info)
        progress.update(1)
    return out


def process_pool_map(processes: int) -> PartitionMap:
    """A ``map_partitions`` running the writers in a local pool of ``processes`` processes."""

    def run(write: Callable[[int], PartitionInfo], pids: Sequence[int]) -> Iterator[PartitionInfo]:
        # yields each partition's info as it is written (in order), so progress can follow
        with ProcessPoolExecutor(processes) as ex:
            yield from ex.map(write, pids)

    return run


def write_simulated_store(
    store: str | Path,
    settings: SimulationSettings,
    ntime_parts: int = 4,
    nfreq_parts: int = 1,
    *,
    processes: int = 1,
    map_partitions: PartitionMap | None = None,
    progress_interval_s: float | None = None,
) -> StoreIndex | None:
    """Simulate the observation ``settings`` describes into a new store ``store``.

    Parameters
    ----------
    store : str or Path
        Output store directory (must not hold a finished store).
    settings : SimulationSettings
        The recipe.
    ntime_parts, nfreq_parts : int, optional
        Partitions along time and frequency.
    processes : int, optional
        With ``processes > 1`` (and no ``map_partitions``), partitions are written by a
        local process pool.
    map_partitions : callable, optional
        ``map_partitions(writer, pids)`` runs ``writer(pid)`` for every partition wherever
        it likes (e.g. on Dask workers) and returns the :class:`PartitionInfo` s; this
        process then writes the index.
    progress_interval_s : float, optional
        Least seconds between two progress lines (INFO, with an estimate of the time left;
        none when the log level is WARNING or above); default :data:`PROGRESS_INTERVAL_S`.
        Under MPI every rank reports its own share.

    Returns
    -------
    StoreIndex or None
        The index of the finished store. Without ``map_partitions`` and ``processes``, the
        partitions are written serially, or by every rank of an MPI launch
        (:func:`arl_mpi.io.parallel.write_store_parallel`); then ranks other than 0 return
        None.

    Raises
    ------
    ConfigError
        ``processes`` < 1 or an impossible recipe.
    """
    if processes < 1:
        raise ConfigError(f"processes must be >= 1, got {processes}")
    settings.validate()
    writer = SimulatedPartitionWriter(str(store), settings, ntime_parts, nfreq_parts)
    if map_partitions is None and processes > 1:
        map_partitions = process_pool_map(processes)
    interval = PROGRESS_INTERVAL_S if progress_interval_s is None else float(progress_interval_s)
    if map_partitions is None:  # serially, or every MPI rank its share
        rank, size = mpi_rank_size()
        mine = len(range(rank, writer.npart, size))
        what = f"simulation of {store}" + (f" (rank {rank})" if size > 1 else "")
        progress = Progress(what, mine, log, unit="partitions", interval_s=interval)
        index = write_store_parallel(store, writer.npart, _Counted(writer, progress), writer.sim.meta)
        progress.done()
        return index
    log.info("simulating %d partitions into %s", writer.npart, store)
    create_store(store)
    progress = Progress(f"simulation of {store}", writer.npart, log, unit="partitions", interval_s=interval)
    infos = map_partitions(writer, range(writer.npart))
    if isinstance(infos, Sequence):  # all at once (e.g. gathered from Dask): the closing line only
        progress.count = len(infos)
    else:  # as they are written (the process pool)
        infos = _counted_infos(infos, progress)
    progress.done()
    return finalize_store(store, writer.sim.meta(), infos)
