"""Soak: image a store larger than the workers' total memory limit with ``--stream``.

Simulates a LOW-core observation (default ~1 GB of visibilities on disk), then runs the
continuum pipeline on a local cluster of 2 workers, each with a memory limit well below
half the store, and samples every worker process's resident memory every 0.2 s.
Prints the store size, the limits, the peak RSS of each worker, and the wall time.

    PYTHONPATH=. .venv/bin/python benchmarks/soak.py [--ntimes 192] [--memory-limit 350MB] [--no-stream]

``--no-stream`` runs the default (partitions resident on the workers) mode on the same store,
to show what happens without streaming when the store does not fit (``--timeout`` bounds it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from simstore import ensure_simulated_store  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--work", default="output/soak")
    p.add_argument("--ntimes", type=int, default=192)
    p.add_argument("--nchan", type=int, default=8)
    p.add_argument("--partitions", type=int, default=24)
    p.add_argument("--memory-limit", default="350MB")
    p.add_argument("--niter", type=int, default=300)
    p.add_argument(
        "--no-stream",
        dest="stream",
        action="store_false",
        help="partitions resident (default mode)",
    )
    p.add_argument(
        "--timeout", type=float, default=900, help="kill the pipeline after this many seconds"
    )
    args = p.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    store = work / "big.store"
    ensure_simulated_store(store, args.partitions, args.ntimes, args.nchan, env=env, quiet=True)
    size = du(store)
    cmd = [
        sys.executable,
        "-m",
        "arl_mpi.pipeline",
        "--vis",
        str(store),
        "--name",
        str(work / "soak"),
        "--workers",
        "2",
        "--threads-per-worker",
        "1",
        "--memory-limit",
        args.memory_limit,
        "--size",
        "512",
        "512",
        "--scale",
        "40asec",
        "--niter",
        str(args.niter),
        "--mgain",
        "0.5",
        "--no-png",
        "--no-dashboard",
        "--no-checkpoint",
        "--log-level",
        "WARNING",
    ]
    if args.stream:
        cmd.append("--stream")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=work)
    peaks: dict[int, int] = {}
    done = threading.Event()

    scratch = work / "arl-scratch"  # the pipeline's default scratch (spill) directory, cwd=work
    spill_peak = [0]

    def sample() -> None:
        parent = psutil.Process(proc.pid)
        n = 0
        while not done.is_set():
            n += 1
            if n % 5 == 0:  # once a second: bytes Dask has spilled to the scratch directory
                try:
                    spill_peak[0] = max(spill_peak[0], du(scratch))
                except OSError:
                    pass
            try:
                for c in parent.children(recursive=True):
                    if "resource_tracker" in " ".join(c.cmdline()):
                        continue
                    peaks[c.pid] = max(peaks.get(c.pid, 0), c.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        rc = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = f"killed after {args.timeout:.0f} s"
    done.set()
    th.join()
    wall = time.perf_counter() - t0
    summary = json.loads((work / "soak-summary.json").read_text()) if rc == 0 else {}
    (work / "soak-summary.json").unlink(missing_ok=True)
    print(
        f"exit {rc}; store {size / 2**20:.0f} MiB on disk "
        f"({summary.get('visibilities', {}).get('samples', 0) / 1e6:.1f} M Stokes-I samples); "
        f"{'--stream' if args.stream else 'resident (no --stream)'}; "
        f"2 workers x memory limit {args.memory_limit}; wall {wall:.0f} s; "
        f"worker processes seen {len(peaks)} (restarts {max(0, len(peaks) - 2)}); "
        f"major cycles {len(summary.get('cycles', []))}; "
        f"peak scratch (spill) {spill_peak[0] / 2**20:.0f} MiB"
    )
    for pid, rss in sorted(peaks.items(), key=lambda kv: -kv[1]):
        print(f"  worker process {pid}: peak RSS {rss / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
