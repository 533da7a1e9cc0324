"""The one writer of a simulated store: every partition simulated where it is written.

:func:`write_simulated_store` creates the store, has each partition simulated and written by
whoever runs :class:`SimulatedPartitionWriter` for it (this process, a local process pool,
every rank of an MPI job, or Dask workers through ``map_partitions``) and writes the index.
``python -m arl_mpi.simulate``, the pipeline's built-in observation and the benchmarks all
end here, so a simulated store is written one way only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arl_mpi.errors import ConfigError
from arl_mpi.io.parallel import write_store_parallel
from arl_mpi.io.store import PartitionInfo, StoreIndex, create_store, finalize_store
from arl_mpi.simulation.builtin import (
    Simulation,
    SimulationSettings,
    build,
    partition_plan,
    write_simulated_partition,
)

log = logging.getLogger(__name__)

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


def process_pool_map(processes: int) -> PartitionMap:
    """A ``map_partitions`` running the writers in a local pool of ``processes`` processes."""

    def run(write: Callable[[int], PartitionInfo], pids: Sequence[int]) -> list[PartitionInfo]:
        with ProcessPoolExecutor(processes) as ex:
            return list(ex.map(write, pids))

    return run


def write_simulated_store(
    store: str | Path,
    settings: SimulationSettings,
    ntime_parts: int = 4,
    nfreq_parts: int = 1,
    *,
    processes: int = 1,
    map_partitions: PartitionMap | None = None,
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
    if map_partitions is None:  # serially, or every MPI rank its share
        return write_store_parallel(store, writer.npart, writer, writer.sim.meta)
    log.info("simulating %d partitions into %s", writer.npart, store)
    create_store(store)
    infos = list(map_partitions(writer, range(writer.npart)))
    return finalize_store(store, writer.sim.meta(), infos)
