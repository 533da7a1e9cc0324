"""Strong and weak scaling of the major cycle with workers, with a table and a PNG plot.

* strong: one observation (``--strong-ntimes`` integrations of the LOW-core array, 4 channels;
  the default 256 gives 51 M visibilities) imaged with 1..N workers;
* weak: ``--weak-ntimes`` integrations per worker, so the visibilities grow with the workers.

Every run is ``mpiexec -n W+2 python -m arl_mpi.pipeline`` (1 thread per worker, 2 major
cycles); its summary gives, per major cycle, the wall time and its split into gridding (the
busiest worker's gridding tasks), reduction (the tree sum's critical path) and overhead
(scheduling, transfers), plus the minor cycle. Efficiency: strong ``T1 / (W T_W)``, weak
``T1 / T_W``, on the median major cycle.

    PYTHONPATH=. .venv/bin/python benchmarks/scaling.py --workers 1 2 [--size 1024]
    # on a 16-core machine: --workers 1 2 4 8 14
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


def run(work: Path, name: str, store: Path, workers: int, args, env: dict) -> dict:
    """One pipeline run; returns the figures of its summary."""
    flags = ["--vis", str(store), "--size", str(args.size), str(args.size), "--scale", args.scale,
             "--niter", str(args.niter), "--nmiter", "3", "--mgain", "0.5", "--no-png", "--no-dashboard",
             "--no-checkpoint", "--log-level", "WARNING", "--threads-per-worker", "1"]
    t0 = time.perf_counter()
    subprocess.run([MPIEXEC, "-n", str(workers + 2), PY, "-m", "arl_mpi.pipeline", "--name", str(work / name),
                    *flags], check=True, env=env, cwd=work)
    wall = time.perf_counter() - t0
    s = json.loads((work / f"{name}-summary.json").read_text())
    cyc = s["cycles"]
    med = {k: float(np.median([c[k] for c in cyc])) for k in ("major_s", "gridding_s", "reduction_s", "overhead_s",
                                                            "minor_s")}
    return {"name": name, "workers": workers, "size": args.size, "visibilities": s["visibilities"]["samples"],
            "shards": s["shards"], "chunks": s["per_cycle"]["chunks"],
            "bytes_up": s["per_cycle"]["partial_image_bytes_up"], "psf_dirty_s": s["timings_s"]["psf_dirty_s"],
            "total_s": s["timings_s"]["total_s"], "wall_s": wall, **med}


def table(rows: list[dict], kind: str) -> str:
    base = rows[0]
    out = [f"| {kind} | workers | M samples | chunks | major cycle s | gridding s | reduction s | overhead s | "
           "minor s | efficiency |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        eff = base["major_s"] / (r["workers"] * r["major_s"]) * base["workers"] if kind == "strong" \
            else base["major_s"] / r["major_s"]
        r[f"{kind}_efficiency"] = eff
        out.append(f"| {kind} | {r['workers']} | {r['visibilities'] / 1e6:.1f} | {r['chunks']} | {r['major_s']:.2f} | "
                   f"{r['gridding_s']:.2f} | {r['reduction_s']:.3f} | {r['overhead_s']:.2f} | {r['minor_s']:.2f} | "
                   f"{eff:.0%} |")
    return "\n".join(out)


def plot(strong: list[dict], weak: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for rows, kind, mark in ((strong, "strong", "o-"), (weak, "weak", "s--")):
        if rows:
            ax.plot([r["workers"] for r in rows], [r[f"{kind}_efficiency"] * 100 for r in rows], mark, label=kind)
    ax.axhline(85, color="grey", lw=0.8, ls=":", label="85% goal")
    ax.set_xlabel("workers")
    ax.set_ylabel("efficiency of a major cycle (%)")
    ax.set_ylim(0, 110)
    ax.legend()
    ax.set_title("scaling efficiency")
    ax = axes[1]
    rows = [(f"S{r['workers']}", r) for r in strong] + [(f"W{r['workers']}", r) for r in weak]
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    parts = (("gridding_s", "gridding"), ("reduction_s", "reduction"), ("overhead_s", "scheduling + transfers"),
             ("minor_s", "minor cycle"))
    for key, label in parts:
        vals = np.array([r[key] for _, r in rows])
        ax.bar(x, vals, bottom=bottom, label=label)
        bottom += vals
    ax.set_xticks(x, [n for n, _ in rows])
    ax.set_ylabel("seconds per major cycle (median)")
    ax.set_title("time split (S: strong, W: weak; number = workers)")
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="output/bench-scaling")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--strong-ntimes", type=int, default=256)
    p.add_argument("--weak-ntimes", type=int, default=64)
    p.add_argument("--nchan", type=int, default=4)
    p.add_argument("--partitions-per-integration", type=float, default=0.25,
                   help="time partitions per integration of the stores")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--scale", default="40asec")
    p.add_argument("--niter", type=int, default=200)
    p.add_argument("--skip-weak", action="store_true")
    p.add_argument("--plot", default="docs/img/scaling.png")
    p.add_argument("--json", default=None, help="write the rows here (default WORK/scaling.json)")
    args = p.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    nparts = max(1, int(args.strong_ntimes * args.partitions_per_integration))
    store = work / f"strong-{args.strong_ntimes}.store"
    ensure_simulated_store(store, nparts, args.strong_ntimes, args.nchan, env=env, quiet=True)
    strong = [run(work, f"strong-w{w}", store, w, args, env) for w in args.workers]
    for r in strong:
        print(json.dumps(r), flush=True)
    weak = []
    if not args.skip_weak:
        for w in args.workers:
            nt = args.weak_ntimes * w
            st = work / f"weak-{nt}.store"
            ensure_simulated_store(st, max(1, int(nt * args.partitions_per_integration)), nt, args.nchan, env=env,
                                   quiet=True)
            weak.append(run(work, f"weak-w{w}", st, w, args, env))
            print(json.dumps(weak[-1]), flush=True)
    print(f"\nimage {args.size}^2 at {args.scale}, niter {args.niter}, 1 thread per worker, "
          f"{os.cpu_count()} cores\n")
    print(table(strong, "strong"))
    if weak:
        print()
        print(table(weak, "weak"))
    (Path(args.json) if args.json else work / "scaling.json").write_text(json.dumps({"strong": strong, "weak": weak},
                                                                                     indent=1))
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        title = (f"major cycle, {args.size}^2, {strong[0]['visibilities'] / 1e6:.1f} M Stokes samples (strong), "
                 f"{os.cpu_count()} cores")
        plot(strong, weak, Path(args.plot), title)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
