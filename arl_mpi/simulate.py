"""``python -m arl_mpi.simulate STORE``: write a simulated observation as an HDF5 store.

Partitions are simulated and written in parallel: by the ranks of an MPI job when launched
with ``mpiexec -n N`` (every rank writes its share, rank 0 finishes the index), or by a
local process pool with ``--processes N``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from arl_mpi.cli import run_cli, setup_logging
from arl_mpi.errors import ConfigError
from arl_mpi.io.store import StoreIndex
from arl_mpi.mpienv import mpi_rank_size
from arl_mpi.simulation.builtin import SimulationSettings
from arl_mpi.simulation.writer import write_simulated_store

log = logging.getLogger("arl_mpi.simulate")


def add_simulation_args(p: argparse.ArgumentParser) -> None:
    """Add one ``--sim-<field>`` flag per :class:`SimulationSettings` field."""
    g = p.add_argument_group("simulation (the built-in observation)")
    for f in dataclasses.fields(SimulationSettings):
        if f.name == "extra":
            continue
        g.add_argument(f"--sim-{f.name.replace('_', '-')}", dest=f"sim_{f.name}", type=type(f.default), default=None,
                       help=f"default {f.default}")


def settings_from_args(args: argparse.Namespace, base: SimulationSettings | None = None) -> SimulationSettings:
    """SimulationSettings from ``--sim-*`` flags over ``base``."""
    s = dataclasses.replace(base or SimulationSettings())
    for f in dataclasses.fields(SimulationSettings):
        v = getattr(args, f"sim_{f.name}", None)
        if v is not None:
            setattr(s, f.name, v)
    s.validate()
    return s


def simulate_store(store: str | Path, settings: SimulationSettings, ntime_parts: int, nfreq_parts: int,
                   processes: int = 1) -> StoreIndex:
    """Simulate and write a store with a local process pool (``processes`` > 1) or serially."""
    return write_simulated_store(store, settings, ntime_parts, nfreq_parts, processes=processes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m arl_mpi.simulate", description=__doc__)
    p.add_argument("store", help="output store directory (must not exist)")
    p.add_argument("--time-partitions", type=int, default=4)
    p.add_argument("--freq-partitions", type=int, default=1)
    p.add_argument("--processes", type=int, default=1, help="local worker processes (ignored under MPI)")
    p.add_argument("--log-level", default="INFO")
    add_simulation_args(p)
    args = p.parse_args(argv)
    rank, size = mpi_rank_size()
    setup_logging(args.log_level, rank)
    settings = settings_from_args(args)
    if args.processes < 1:
        raise ConfigError("--processes must be >= 1")
    # under MPI every rank simulates and writes its own partitions (rank 0 gets the index)
    idx = write_simulated_store(args.store, settings, args.time_partitions, args.freq_partitions,
                                processes=1 if size > 1 else args.processes)
    if idx is not None:
        log.info("wrote %s: %d partitions, %d visibilities", idx.path, len(idx.partitions), idx.nvis)
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(run_cli(main, prog="arl_mpi.simulate"))


if __name__ == "__main__":
    entry()
