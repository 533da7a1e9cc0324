"""Pipeline wall time against the serial major/minor loop, and scaling with workers.

Simulates one observation (once; reused), then images it with identical settings by
  * the serial loop (`arl_mpi.deconvolution.serial_loop.image_serial`, in this process, 1 thread),
  * the pipeline under `mpiexec -n W+2` for W = 1, 2, ... workers (1 thread each),
  * the pipeline on a local Dask cluster,
and prints a table (wall time of the imaging, i.e. everything after the store exists).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_pipeline.py [--ntimes 32] [--max-workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from simstore import ensure_simulated_store  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
MPIEXEC = str(Path(sys.executable).with_name("mpiexec"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="output/bench-pipeline")
    p.add_argument("--ntimes", type=int, default=32)
    p.add_argument("--nchan", type=int, default=8)
    p.add_argument("--rmax", type=float, default=1000.0)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--max-workers", type=int, default=2)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--scale", default="40asec")
    p.add_argument("--niter", type=int, default=2000)
    args = p.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    store = work / "obs.store"
    ensure_simulated_store(store, args.partitions, args.ntimes, args.nchan, args.rmax, env=env)
    flags = ["--vis", str(store), "--size", str(args.size), str(args.size), "--scale", args.scale, "--niter",
             str(args.niter), "--mgain", "0.8", "--auto-threshold", "3", "--no-png", "--no-dashboard",
             "--no-checkpoint", "--log-level", "WARNING"]
    rows = []

    sys.path.insert(0, str(REPO))
    from arl_mpi.deconvolution.serial_loop import image_serial
    from arl_mpi.imaging.stokes import to_stokes
    from arl_mpi.io.store import open_store, read_partition
    from arl_mpi.pipeline.settings import parse_angle

    idx = open_store(store)
    t0 = time.perf_counter()
    parts = [read_partition(idx, k) for k in range(len(idx.partitions))]
    uvw = np.concatenate([v.uvw for v in parts])
    vis, wt, fl = to_stokes(np.concatenate([v.vis for v in parts]), np.concatenate([v.weight for v in parts]),
                            np.concatenate([v.flags for v in parts]), parts[0].polarisations, "I")
    r = image_serial(uvw, parts[0].frequency, vis, wt, fl, args.size, parse_angle(args.scale), niter=args.niter,
                     mgain=0.8, auto_threshold=3.0, nmiter=20)
    t_serial = time.perf_counter() - t0
    nvis = int(vis.size)
    rows.append(("serial loop (1 core)", t_serial, len(r["cycles"])))
    print(f"serial: {t_serial:.1f} s, {nvis / 1e6:.1f} M Stokes-I samples", flush=True)
    for w in range(1, args.max_workers + 1):
        name = work / f"mpi{w}"
        t0 = time.perf_counter()
        subprocess.run([MPIEXEC, "-n", str(w + 2), PY, "-m", "arl_mpi.pipeline", "--name", str(name), *flags],
                       check=True, env=env, cwd=work)
        wall = time.perf_counter() - t0
        s = json.loads(Path(f"{name}-summary.json").read_text())
        rows.append((f"mpiexec -n {w + 2} ({w} worker{'s' if w > 1 else ''})", wall, len(s["cycles"]), s["timings_s"]))
        print(rows[-1], flush=True)
    name = work / "local"
    t0 = time.perf_counter()
    subprocess.run([PY, "-m", "arl_mpi.pipeline", "--name", str(name), "--workers", str(args.max_workers), *flags],
                   check=True, env=env, cwd=work)
    s = json.loads(Path(f"{name}-summary.json").read_text())
    rows.append((f"local cluster ({args.max_workers} workers)", time.perf_counter() - t0, len(s["cycles"]),
                 s["timings_s"]))
    print("\n| run | wall s (incl. start-up) | major cycles | pipeline total_s | gridding (psf+dirty+major) s |")
    print("|---|---|---|---|---|")
    for row in rows:
        t = row[3] if len(row) > 3 else {}
        grid = t.get("psf_dirty_s", 0) + t.get("major_total_s", 0) if t else float("nan")
        print(f"| {row[0]} | {row[1]:.1f} | {row[2]} | {t.get('total_s', row[1]):.1f} | {grid:.1f} |")
    print(f"\n{nvis / 1e6:.1f} M Stokes-I samples, {len(idx.partitions)} partitions, image {args.size}^2, "
          f"niter {args.niter}; serial loop {t_serial:.1f} s")


if __name__ == "__main__":
    main()
