"""One major cycle of the pipeline against raw ducc0 ``dirty2vis`` + ``vis2dirty`` of the same data.

Issue 13, part 2: a major cycle should cost at most 1.10x one raw ducc0 predict + invert of the
same visibilities, with the same weights, image size, epsilon, w-correction and the same total
threads. In ONE run, repeated and interleaved (the machine may be shared, so medians are
reported with their spread):

* **raw**: all Stokes-I samples of the store in memory, weighted exactly as the pipeline weights
  them (our ``load_shard`` + ``reweight_shard`` over the whole store, then concatenated), then
  ``model -> dirty2vis -> vis - model_vis -> vis2dirty`` in one call each on ``--threads``
  threads; once with ducc0's own oversampling choice (its default, ``raw``) and once with the
  pipeline's fixed one (``raw_fixed_sigma``, ``GridSpec.sigma``);
* **ours (LocalCluster)**: the same cycle in this process (``local_cycles``) on a LocalCluster
  of 2 workers x 1 thread, with the CPU seconds of every process (workers, scheduler, driver):
  on a shared machine CPU seconds are a steadier measure than wall time;
* **ours**: ``mpiexec -n 4 python -m arl_mpi.pipeline`` (1 scheduler, 1 driver, 2 workers x 1
  thread), each major cycle's wall time from the summary (``cycles[].major_s``) with its split
  from Dask's task stream (gridding = the busiest worker's gridding tasks, reduction = the tree
  sum, overhead = the rest).

The model given to the raw calls is the pipeline's final model (``PREFIX-model.fits``), so both
degrid the same components.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_major_cycle.py [--ntimes 100] [--nchan 4]
        [--size 1024] [--scale 1arcmin] [--weight briggs 0] [--niter 3000] [--nmiter 4] [--repeat 3]
    # after one such run: the raw cycle cut into 1, 2, 4 contiguous call pairs (the cost of a call)
    PYTHONPATH=. .venv/bin/python benchmarks/bench_major_cycle.py --split-calls 1 2 4 --repeat 3
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


def load_weighted(store: Path, grid, weight: list[str]):
    """All Stokes-I samples of ``store`` with the pipeline's imaging weights, as flat arrays."""
    from arl_mpi.graphs import shard_tasks as tasks
    from arl_mpi.io.store import open_store
    from arl_mpi.pipeline.settings import _parse_weight

    idx = open_store(store)
    shard = tasks.load_shard(str(store), tuple((k,) for k in range(len(idx.partitions))), "I", True)
    scheme, robust = _parse_weight(weight, "--weight")
    wt = tasks.Weighting(scheme, robust)
    if scheme != "natural":
        wt = tasks.Weighting(scheme, robust, density=tasks.density_shard(shard, grid))
    shard = tasks.reweight_shard(shard, grid, wt)
    freq = shard.blocks[0].freq
    if any(b.freq.size != freq.size or np.any(b.freq != freq) for b in shard.blocks):
        raise SystemExit(f"{store}: bench_major_cycle needs one channel set (one spectral window)")
    cat = {k: np.concatenate([getattr(b, k) for b in shard.blocks]) for k in ("uvw", "vis", "weight", "flags")}
    return cat["uvw"], freq, cat["vis"], cat["weight"], cat["flags"]


def raw_cycle(data, model: np.ndarray, grid, threads: int, sigma) -> tuple[float, float]:
    """Wall and CPU seconds of one raw ``dirty2vis`` + ``vis2dirty`` (residual of ``model``)."""
    import ducc0

    uvw, freq, vis, wgt, flags = data
    mask = None if not flags.any() else np.ascontiguousarray(~flags).view(np.uint8)
    sig = {} if sigma is None else {"sigma_min": sigma[0], "sigma_max": sigma[1]}
    kw = {"pixsize_x": grid.cell, "pixsize_y": grid.cell, "epsilon": grid.epsilon, "do_wgridding": grid.do_wgridding,
          "nthreads": threads, "divide_by_n": False, "flip_v": True, **sig}
    t0, c0 = time.perf_counter(), time.process_time()
    mv = ducc0.wgridder.dirty2vis(uvw=uvw, freq=freq, dirty=np.ascontiguousarray(model.T, dtype=np.float32),
                                  mask=mask, **kw)
    ducc0.wgridder.vis2dirty(uvw=uvw, freq=freq, vis=vis - mv, wgt=wgt, mask=mask, npix_x=grid.npix_x,
                             npix_y=grid.npix_y, **kw)
    return time.perf_counter() - t0, time.process_time() - c0


def local_cycles(store: Path, grid, weight: list[str], model: np.ndarray, ncycles: int, nworkers: int):
    """Wall and CPU seconds (the workers, and this process with the scheduler and driver) of ``ncycles``
    major cycles run as the pipeline runs them (``major_cycle.clean_loop``: ``image_from(invert_graph(data, grid,
    model_constant(model)))``) on a LocalCluster of ``nworkers`` x 1 thread (no TLS)."""
    from distributed import Client, LocalCluster, wait

    from arl_mpi.graphs import shard_graphs as graphs
    from arl_mpi.graphs.shard_tasks import Weighting
    from arl_mpi.io.store import open_store
    from arl_mpi.pipeline.common import image_from
    from arl_mpi.pipeline.settings import _parse_weight

    idx = open_store(store)
    sizes = [p.nsamples for p in idx.partitions]
    with LocalCluster(n_workers=nworkers, threads_per_worker=1, processes=True, dashboard_address=":0") as lc, \
            Client(lc) as client:
        data = graphs.persist_on_workers(client, graphs.load_graph(str(store), graphs.shard_layout(
            sizes, nworkers, graphs.chunk_samples_for(grid))))
        wait(data)
        scheme, robust = _parse_weight(weight, "--weight")
        if scheme != "natural":
            density = client.compute(graphs.weight_density_graph(data, grid)).result()
            new = graphs.persist_on_workers(client, graphs.reweight_graph(
                data, grid, graphs.constant(Weighting(scheme, robust, None, density))))
            wait(new)
            data = new

        def cpu() -> tuple[float, float]:  # (workers, this process: the LocalCluster's scheduler and driver)
            return sum(client.run(time.process_time).values()), time.process_time()

        out = []
        for _ in range(ncycles):
            (w0, d0), t0 = cpu(), time.perf_counter()
            image_from(client, graphs.invert_graph(data, grid, graphs.model_constant(model[None], grid)))
            w1, d1 = cpu()
            out.append((time.perf_counter() - t0, w1 - w0 + d1 - d0, d1 - d0))
    return out


def inprocess_cpu(store: Path, grid, weight: list[str], model: np.ndarray, data, threads: int,
                  nworkers: int, repeat: int) -> None:
    """CPU seconds, in this process, one after the other: our gridding tasks (``invert_shard`` of
    each worker's shard, the pipeline's layout) against one raw call chain on ``threads`` threads
    and on one thread. Steadier than wall time on a shared machine; prints medians."""
    from arl_mpi.graphs import shard_graphs as graphs
    from arl_mpi.graphs import shard_tasks as tasks
    from arl_mpi.io.store import open_store
    from arl_mpi.pipeline.settings import _parse_weight

    idx = open_store(store)
    layout = graphs.shard_layout([p.nsamples for p in idx.partitions], nworkers, graphs.chunk_samples_for(grid))
    shards = [tasks.load_shard(str(store), tuple(tuple(c) for c in sh), "I", True) for sh in layout]
    scheme, robust = _parse_weight(weight, "--weight")
    if scheme != "natural":
        dens = sum(tasks.density_shard(sh, grid) for sh in shards)
        shards = [tasks.reweight_shard(sh, grid, tasks.Weighting(scheme, robust, None, dens)) for sh in shards]
    res: dict[str, list[float]] = {"ours": [], f"raw_{threads}t": [], "raw_1t": []}
    for _ in range(repeat):
        c0 = time.process_time()
        for sh in shards:
            tasks.invert_shard(sh, grid, model[None].astype(np.float32))
        res["ours"].append(time.process_time() - c0)
        res[f"raw_{threads}t"].append(raw_cycle(data, model, grid, threads, None)[1])
        res["raw_1t"].append(raw_cycle(data, model, grid, 1, None)[1])
    med = {k: float(np.median(v)) for k, v in res.items()}
    print(f"in-process CPU s ({len(shards)} shards, {sum(len(s.blocks) for s in shards)} ducc0 call pairs; "
          f"{repeat} repeats): " + ", ".join(f"{k} {spread(v)}" for k, v in res.items()))
    print(f"in-process CPU ratio ours / raw_{threads}t = {med['ours'] / med[f'raw_{threads}t']:.2f}, "
          f"ours / raw_1t = {med['ours'] / med['raw_1t']:.2f}")


def split_calls(data, model: np.ndarray, grid, threads: int, ks: list[int], repeat: int) -> None:
    """Wall seconds of one raw cycle (the pipeline's fixed sigma) on ``threads`` threads with the
    samples cut into ``k`` contiguous calls, for each ``k`` of ``ks``, interleaved over ``repeat``
    passes: what the per-call FFTs and w-planes cost (a shard's chunks are one call pair each)."""
    uvw, freq, vis, wgt, flags = data
    res: dict[int, list[float]] = {k: [] for k in ks}
    for _ in range(repeat):
        for k in ks:
            cuts = np.linspace(0, uvw.shape[0], k + 1).astype(int)
            parts = [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
            res[k].append(sum(raw_cycle((uvw[r], freq, vis[r], wgt[r], flags[r]), model, grid, threads,
                                        grid.gridder_sigma)[0] for r in parts))
    base = float(np.median(res[ks[0]]))
    for k in ks:
        print(f"{k} contiguous call pair(s) on {threads} threads: {spread(res[k])}; "
              f"{np.median(res[k]) / base:.3f}x {ks[0]}")


def run_pipeline(store: Path, name: Path, args, env) -> dict:
    flags = ["--vis", str(store), "--size", str(args.size), str(args.size), "--scale", args.scale,
             "--weight", *args.weight, "--niter", str(args.niter), "--nmiter", str(args.nmiter), "--mgain", "0.8",
             "--no-png", "--no-dashboard", "--no-checkpoint", "--log-level", "WARNING",
             "--threads-per-worker", str(args.threads_per_worker), "--gridder-threads", str(args.gridder_threads)]
    t0 = time.perf_counter()
    subprocess.run([MPIEXEC, "-n", str(args.ranks), PY, "-m", "arl_mpi.pipeline", "--name", str(name), *flags],
                   check=True, env=env, cwd=name.parent)
    s = json.loads(Path(f"{name}-summary.json").read_text())
    s["_wall_s"] = time.perf_counter() - t0
    return s


def spread(x: list[float]) -> str:
    x = np.asarray(x, dtype=float)
    return f"{np.median(x):.2f} s (min {x.min():.2f}, max {x.max():.2f}, n={x.size})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="output/bench-major-cycle")
    p.add_argument("--store", default=None, help="an existing store (default: simulate WORK/obs.store)")
    p.add_argument("--ntimes", type=int, default=100)
    p.add_argument("--nchan", type=int, default=4)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--scale", default="1arcmin")
    p.add_argument("--weight", nargs="+", default=["briggs", "0"])
    p.add_argument("--niter", type=int, default=3000)
    p.add_argument("--nmiter", type=int, default=4)
    p.add_argument("--ranks", type=int, default=4, help="mpiexec -n (ranks - 2 workers, 1 thread each)")
    p.add_argument("--threads", type=int, default=2, help="ducc0 threads of the raw reference")
    p.add_argument("--gridder-threads", type=int, default=1,
                   help="ducc0 threads per gridding task of the pipeline (e.g. --ranks 3 --gridder-threads 2: "
                   "one worker with the node's 2 cores)")
    p.add_argument("--threads-per-worker", type=int, default=1,
                   help="Dask threads of each pipeline worker (partition tasks run at the same time)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--local-cycles", type=int, default=2, help="LocalCluster cycles per repeat (CPU-time measure)")
    p.add_argument("--split-calls", type=int, nargs="+", default=None, metavar="K",
                   help="only the raw cycle cut into K contiguous call pairs, for each K (needs "
                   "WORK/cycle-model.fits from an earlier run)")
    p.add_argument("--inprocess-only", action="store_true",
                   help="only the in-process CPU comparison (needs WORK/cycle-model.fits from an earlier run)")
    args = p.parse_args()
    # ducc0 caps its thread pool at DUCC0_NUM_THREADS / OMP_NUM_THREADS when imported: with
    # OMP_NUM_THREADS=1 in the environment, nthreads=2 would silently run on one thread
    os.environ["DUCC0_NUM_THREADS"] = str(max(args.threads, 1))
    os.environ.pop("OMP_NUM_THREADS", None)
    if "ducc0" in sys.modules:
        raise SystemExit("bench_major_cycle: ducc0 was imported before its thread count was set")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    sys.path.insert(0, str(REPO))
    from arl_mpi.imaging.gridspec import GridSpec
    from arl_mpi.io.fits import read_fits
    from arl_mpi.io.store import open_store
    from arl_mpi.pipeline.settings import parse_angle

    store = Path(args.store).resolve() if args.store else work / "obs.store"
    if not args.store:
        ensure_simulated_store(store, args.partitions, args.ntimes, args.nchan, env=env, quiet=True)
    idx = open_store(store)
    grid = GridSpec(args.size, args.size, parse_angle(args.scale), nchan_total=int(idx.meta.frequency.size))
    data = load_weighted(store, grid, args.weight)
    nsamp = int(np.count_nonzero(~data[4]))
    if args.split_calls or args.inprocess_only:  # raw calls only, on an earlier run's model
        model = read_fits(f"{work / 'cycle'}-model.fits").data[0, 0]
        print(f"{nsamp / 1e6:.2f} M Stokes-I samples, {args.size}^2 at {args.scale}, sigma {grid.gridder_sigma}")
        if args.split_calls:
            split_calls(data, model, grid, args.threads, args.split_calls, args.repeat)
            return
        inprocess_cpu(store, grid, args.weight, model, data, args.threads, args.ranks - 2, args.repeat)
        return
    raw, raw_fixed, ours, splits, per_rep, raw_cpu, local, local_cpu = [], [], [], [], [], [], [], []
    name = work / "cycle"
    for rep in range(args.repeat):
        s = run_pipeline(store, name, args, env)
        cyc = s["cycles"]
        ours += [c["major_s"] for c in cyc]
        splits += [{k: c[k] for k in ("major_s", "gridding_s", "reduction_s", "overhead_s")} for c in cyc]
        model = read_fits(f"{name}-model.fits").data[0, 0]
        per_rep.append(float(np.median([c["major_s"] for c in cyc])))
        wall, c = raw_cycle(data, model, grid, args.threads, None)
        raw.append(wall)
        raw_cpu.append(c)
        raw_fixed.append(raw_cycle(data, model, grid, args.threads, grid.gridder_sigma)[0])
        lc = (local_cycles(store, grid, args.weight, model, args.local_cycles, args.ranks - 2)
              if args.local_cycles else [])
        local += [x[0] for x in lc]
        local_cpu += [x[1] for x in lc]
        print(json.dumps({"repeat": rep, "raw_s": round(raw[-1], 3), "raw_cpu_s": round(raw_cpu[-1], 3),
                          "raw_fixed_sigma_s": round(raw_fixed[-1], 3),
                          "local_s": [round(x[0], 3) for x in lc], "local_cpu_s": [round(x[1], 3) for x in lc],
                          "local_driver_cpu_s": [round(x[2], 3) for x in lc],
                          "major_s": [c["major_s"] for c in cyc], "gridding_s": [c["gridding_s"] for c in cyc],
                          "overhead_s": [c["overhead_s"] for c in cyc], "wall_s": round(s["_wall_s"], 1)}),
              flush=True)
    med = {k: float(np.median([sp[k] for sp in splits])) for k in splits[0]}
    print(f"\n{nsamp / 1e6:.2f} M Stokes-I samples, {args.size}^2 at {args.scale}, weight {' '.join(args.weight)}, "
          f"epsilon {grid.epsilon}, w-correction {grid.do_wgridding}; mpiexec -n {args.ranks} "
          f"({args.ranks - 2} workers x {args.threads_per_worker} threads x {args.gridder_threads} ducc0 threads) "
          f"vs raw ducc0 on {args.threads} "
          f"threads; {args.repeat} repeats")
    print(f"raw ducc0 dirty2vis + vis2dirty (ducc0's sigma):  {spread(raw)}")
    print(f"raw ducc0, the pipeline's fixed sigma {grid.gridder_sigma}: {spread(raw_fixed)}")
    print(f"ours, one major cycle (mpiexec, TLS):             {spread(ours)}")
    if local:
        print(f"ours, LocalCluster {args.ranks - 2} workers, wall:           {spread(local)}")
        print(f"CPU seconds (all processes): raw {spread(raw_cpu)}; ours (LocalCluster) {spread(local_cpu)}; "
              f"ratio {np.median(local_cpu) / np.median(raw_cpu):.2f}")
    print("ours, median split: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    print(f"ratio ours / raw = {np.median(ours) / np.median(raw):.2f} "
          f"(per repeat: {', '.join(f'{o / r:.2f}' for o, r in zip(per_rep, raw, strict=True))}); "
          f"ours / raw_fixed_sigma = {np.median(ours) / np.median(raw_fixed):.2f}; "
          f"LocalCluster / raw = {np.median(local) / np.median(raw) if local else float('nan'):.2f}")


if __name__ == "__main__":
    main()
