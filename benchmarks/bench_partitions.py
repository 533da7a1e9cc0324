"""Cycle cost against the number of partitions: the same observation as 4 and as 64 partitions.

The issue's measurement: the LOW-core observation (128 integrations x 4 channels, 25.6 M
visibilities) written as stores of 4 and 64 time partitions, imaged under ``mpiexec -n 4``
(2 workers), 2048^2 at 20 asec, niter 300, 2 major cycles; each store with the default
``--shards worker`` (one shard per worker) and with ``--shards partition`` (one task per
partition, the behaviour before shards). A raw ducc0 reference grids the same Stokes-I
samples in 1, 4 and 64 calls on one thread.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_partitions.py [--ntimes 128] [--size 2048]
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


def raw_ducc0(store: Path, size: int, cell_rad: float, ncalls: list[int]) -> dict[int, float]:
    """Seconds for one ``vis2dirty`` of all Stokes-I samples split into ``n`` calls (1 thread)."""
    import ducc0

    from arl_mpi.imaging.stokes import to_stokes
    from arl_mpi.io.store import open_store, read_partition

    idx = open_store(store)
    parts = [read_partition(idx, k) for k in range(len(idx.partitions))]
    uvw = np.concatenate([v.uvw for v in parts])
    vis, wt, fl = to_stokes(np.concatenate([v.vis for v in parts]), np.concatenate([v.weight for v in parts]),
                            np.concatenate([v.flags for v in parts]), parts[0].polarisations, "I")
    vis, wt = vis.astype(np.complex64), wt.astype(np.float32)
    freq = parts[0].frequency
    out = {}
    for n in ncalls:
        t0 = time.perf_counter()
        for rows in np.array_split(np.arange(uvw.shape[0]), n):
            ducc0.wgridder.vis2dirty(uvw=uvw[rows], freq=freq, vis=vis[rows], wgt=wt[rows], npix_x=size,
                                     npix_y=size, pixsize_x=cell_rad, pixsize_y=cell_rad, epsilon=1e-4,
                                     do_wgridding=True, nthreads=1)
        out[n] = time.perf_counter() - t0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="output/bench-partitions")
    p.add_argument("--ntimes", type=int, default=128)
    p.add_argument("--nchan", type=int, default=4)
    p.add_argument("--partitions", type=int, nargs="+", default=[4, 64])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--scale", default="20asec")
    p.add_argument("--niter", type=int, default=300)
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--shards", nargs="+", default=["worker", "partition"])
    p.add_argument("--no-raw", action="store_true", help="skip the raw ducc0 reference")
    args = p.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    sys.path.insert(0, str(REPO))
    from arl_mpi.pipeline.settings import parse_angle

    rows = []
    for npart in args.partitions:
        store = work / f"obs-{npart}.store"
        ensure_simulated_store(store, npart, args.ntimes, args.nchan, env=env, quiet=True)
        for shards in args.shards:
            name = work / f"p{npart}-{shards}"
            flags = ["--vis", str(store), "--size", str(args.size), str(args.size), "--scale", args.scale,
                     "--niter", str(args.niter), "--nmiter", "2", "--mgain", "0.8", "--no-png", "--no-dashboard",
                     "--no-checkpoint", "--log-level", "WARNING", "--shards", shards]
            t0 = time.perf_counter()
            subprocess.run([MPIEXEC, "-n", str(args.ranks), PY, "-m", "arl_mpi.pipeline", "--name", str(name),
                            *flags], check=True, env=env, cwd=work)
            wall = time.perf_counter() - t0
            s = json.loads(Path(f"{name}-summary.json").read_text())
            t = s["timings_s"]
            per_major = t["major_total_s"] / max(len(s["cycles"]), 1)
            rows.append({"partitions": npart, "shards": shards, "tasks_per_cycle": s["per_cycle"]["gridding_tasks"],
                         "bytes_up": s["per_cycle"]["partial_image_bytes_up"], "psf_dirty_s": t["psf_dirty_s"],
                         "major_cycle_s": per_major, "total_s": t["total_s"], "wall_s": wall,
                         "visibilities": s["visibilities"]["samples"]})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{rows[0]['visibilities'] / 1e6:.1f} M Stokes-I samples (x2 correlations), {args.size}^2 at "
          f"{args.scale}, niter {args.niter}, 2 major cycles, mpiexec -n {args.ranks}\n")
    print("| partitions | --shards | gridding tasks / cycle | MiB up / cycle | PSF + dirty s | one major cycle s "
          "| pipeline total s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['partitions']} | {r['shards']} | {r['tasks_per_cycle']} | {r['bytes_up'] / 2**20:.0f} | "
              f"{r['psf_dirty_s']:.1f} | {r['major_cycle_s']:.1f} | {r['total_s']:.1f} |")
    by = {(r["partitions"], r["shards"]): r for r in rows}
    lo, hi = min(args.partitions), max(args.partitions)
    for shards in args.shards:
        if (lo, shards) in by and (hi, shards) in by:
            a, b = by[(lo, shards)], by[(hi, shards)]
            print(f"\n--shards {shards}: {hi} vs {lo} partitions: "
                  f"major cycle x{b['major_cycle_s'] / a['major_cycle_s']:.2f}, "
                  f"PSF+dirty x{b['psf_dirty_s'] / a['psf_dirty_s']:.2f}, total x{b['total_s'] / a['total_s']:.2f}")
    if not args.no_raw:
        raw = raw_ducc0(work / f"obs-{lo}.store", args.size, parse_angle(args.scale), [1, 4, 64])
        calls = ", ".join(f"{n} call(s) {t:.1f} s" for n, t in raw.items())
        print(f"\nraw ducc0 vis2dirty, Stokes I, 1 thread: {calls}")


if __name__ == "__main__":
    main()
