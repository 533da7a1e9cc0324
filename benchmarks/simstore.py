"""Shared by the benchmarks: simulate the LOW-core observation into a store, once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ensure_simulated_store(
    store: Path,
    partitions: int,
    ntimes: int,
    nchan: int,
    rmax_m: float = 1000.0,
    processes: int = 2,
    env: dict | None = None,
    quiet: bool = False,
) -> list[str]:
    """Run ``python -m arl_mpi.simulate`` for ``store`` unless it is already finished
    (``index.h5`` present); returns the command (for the benchmark's report)."""
    cmd = [sys.executable, "-m", "arl_mpi.simulate", str(store), "--time-partitions", str(partitions),
           "--sim-ntimes", str(ntimes), "--sim-nchan", str(nchan), "--sim-rmax-m", str(rmax_m),
           "--processes", str(processes)]  # fmt: skip
    if quiet:
        cmd += ["--log-level", "WARNING"]
    if not (Path(store) / "index.h5").exists():
        subprocess.run(cmd, check=True, env=env or dict(os.environ, PYTHONPATH=str(REPO)))
    return cmd
