"""The cost model of a major cycle: calibrate its constants here, check it against the runs
measured by the benchmarks, and extrapolate to SKA scale (docs/scaling.md).

Per major cycle, for W workers, V visibilities (Stokes samples), an N^2 image, C output
channels and K chunks (``graphs.plan_chunks``; about V / (2 N^2)):

* gridding  = (V / W) (1/r_inv + 1/r_pred) / e_t  +  ceil(K / W) C (c_inv + c_pred) N^2
  (ducc0's rates per core r, threads per worker t at parallel efficiency e_t, and the per-call
  cost of FFTs and w-planes, proportional to the image: c per pixel per call);
* reduction = ceil(log2 W) (8 C N^2 / a + 8 C N^2 / B)  (one float64 partial per worker, a tree
  of additions at a bytes/s and transfers at B bytes/s);
* overhead  = s0 + s1 W + 4 C N^2 W / B_s  (scheduling of 2W tasks, and the model, float32, sent
  to every worker through the scheduler at B_s);
* minor     = components / q(N) / S  (the Hogbom rate q on a full image, S sub-images in parallel).

    PYTHONPATH=. .venv/bin/python benchmarks/cost_model.py --calibrate      # constants on this machine
    PYTHONPATH=. .venv/bin/python benchmarks/cost_model.py --check output/bench-scaling/scaling.json
    PYTHONPATH=. .venv/bin/python benchmarks/cost_model.py --ska
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONSTANTS = HERE / "cost_model_constants.json"


@dataclass
class Constants:
    """Measured constants (seconds, bytes/s, samples/s per core)."""

    r_inv: float = 1.2e6  # invert samples/s per core (ducc0, epsilon 1e-4, single precision)
    r_pred: float = 1.8e6  # predict samples/s per core
    c_inv: float = 2.2e-8  # s per pixel per invert call (FFTs, w-planes)
    c_pred: float = 2.2e-8  # s per pixel per predict call
    add_rate: float = 2e9  # bytes/s of a float64 image addition
    bandwidth: float = 1e9  # bytes/s worker-to-worker (Dask TLS over TCP)
    sched_bandwidth: float = 1e9  # bytes/s of the model through the scheduler to each worker
    s0: float = 0.05  # s per cycle, fixed scheduling
    s1: float = 0.004  # s per cycle per worker (2 tasks each)
    thread_efficiency: float = 0.8  # ducc0's parallel efficiency at 16 threads
    hogbom_rate_1024: float = 3700.0  # Hogbom components/s on 1024^2 (full PSF, float32)


def chunks_for(v: float, n: int, samples_per_pixel: float = 2.0, floor: int = 1 << 18) -> int:
    """Chunks of ``v`` samples at the default chunk size (as ``graphs.chunk_samples_for``)."""
    return max(1, math.ceil(v / max(floor, samples_per_pixel * n * n)))


def cycle(k: Constants, v: float, w: int, n: int, c: int = 1, threads: int = 1, chunks: int | None = None,
          components: int = 0, subimages: int = 1) -> dict[str, float]:
    """Predicted seconds of one major cycle, by part."""
    chunks = chunks_for(v, n) if chunks is None else chunks
    busy = min(w, chunks)  # a worker without a chunk waits
    per_worker = v * math.ceil(chunks / busy) / chunks  # the busiest worker's share, whole chunks
    eff = 1.0 if threads == 1 else k.thread_efficiency
    gridding = per_worker * (1 / k.r_inv + 1 / k.r_pred) / (threads * eff) + \
        math.ceil(chunks / busy) * c * (k.c_inv + k.c_pred) * n * n / (threads * eff)
    img = 8.0 * c * n * n
    reduction = math.ceil(math.log2(max(busy, 1))) * (img / k.add_rate + img / k.bandwidth)
    overhead = k.s0 + k.s1 * busy + 0.5 * img * busy / k.sched_bandwidth
    q = k.hogbom_rate_1024 * (1024.0 * 1024.0) / (n * n)  # a component subtracts the PSF over the image
    minor = components / q / max(subimages, 1)
    total = gridding + reduction + overhead + minor
    return {"gridding_s": gridding, "reduction_s": reduction, "overhead_s": overhead, "minor_s": minor,
            "major_s": gridding + reduction + overhead, "total_s": total, "chunks": chunks, "busy_workers": busy}


def calibrate() -> Constants:
    """Measure the constants on this machine (1 thread; about a minute)."""
    import ducc0

    rng = np.random.default_rng(0)
    k = Constants()
    freq = np.array([1.4e8, 1.45e8, 1.5e8, 1.55e8])

    def timed(fn, reps=2):
        best = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    # rates: the slope between two sizes at one image; per-call cost: the intercept, per pixel
    fits = {}
    for npix in (512, 1024, 2048):
        cell = 2e-4 * 512 / npix
        times = {}
        for nrow in (125_000, 500_000):
            uvw = rng.normal(size=(nrow, 3)) * np.array([800.0, 800.0, 40.0])
            vis = (rng.normal(size=(nrow, 4)) + 1j * rng.normal(size=(nrow, 4))).astype(np.complex64)
            wgt = np.ones((nrow, 4), np.float32)
            kw = dict(pixsize_x=cell, pixsize_y=cell, epsilon=1e-4, do_wgridding=True, nthreads=1, sigma_min=1.99,
                      sigma_max=2.01)
            dirty = np.zeros((npix, npix), np.float32)
            t_inv = timed(lambda uvw=uvw, vis=vis, wgt=wgt, kw=kw, npix=npix: ducc0.wgridder.vis2dirty(
                uvw=uvw, freq=freq, vis=vis, wgt=wgt, npix_x=npix, npix_y=npix, **kw))
            t_pred = timed(lambda uvw=uvw, kw=kw, dirty=dirty: ducc0.wgridder.dirty2vis(
                uvw=uvw, freq=freq, dirty=dirty, **kw))
            times[nrow * 4] = (t_inv, t_pred)
        (n1, (i1, p1)), (n2, (i2, p2)) = sorted(times.items())
        r_inv, r_pred = (n2 - n1) / (i2 - i1), (n2 - n1) / (p2 - p1)
        fits[npix] = (r_inv, r_pred, max(i1 - n1 / r_inv, 0) / npix**2, max(p1 - n1 / r_pred, 0) / npix**2)
        print(f"{npix}^2: invert {r_inv / 1e6:.2f} M/s + {fits[npix][2] * npix**2:.3f} s/call; "
              f"predict {r_pred / 1e6:.2f} M/s + {fits[npix][3] * npix**2:.3f} s/call", flush=True)
    big = fits[2048]
    k.r_inv, k.r_pred = float(np.median([f[0] for f in fits.values()])), float(np.median([f[1] for f in fits.values()]))
    k.c_inv, k.c_pred = big[2], big[3]
    a = np.ones((4096, 4096))
    b = np.ones((4096, 4096))
    k.add_rate = a.nbytes / timed(lambda: a + b, 3)
    from arl_mpi.deconvolution.hogbom import hogbom
    from arl_mpi.deconvolution.policy import CleanParams

    dirty = (rng.normal(size=(1024, 1024)) * 1e-3).astype(np.float32)  # the pipeline's residual precision
    dirty[500:520, 500:520] += 1.0
    yy, xx = np.mgrid[-1024:1024, -1024:1024]
    psf = np.exp(-(xx**2 + yy**2) / 8.0).astype(np.float32)
    t = timed(lambda: hogbom(dirty, psf, CleanParams(niter=2000, gain=0.1)), 1)
    k.hogbom_rate_1024 = 2000 / t
    print(json.dumps(asdict(k), indent=1))
    return k


def load_constants() -> Constants:
    """The calibrated constants (``cost_model_constants.json``), else the defaults."""
    if CONSTANTS.exists():
        return Constants(**json.loads(CONSTANTS.read_text()))
    return Constants()


def check(k: Constants, path: Path) -> None:
    """Measured against predicted for every run of a benchmark's JSON (scaling.py or partitions)."""
    data = json.loads(path.read_text())
    rows = data["strong"] + data.get("weak", []) if isinstance(data, dict) else data
    print("| run | workers | M samples | N | measured major s | predicted | ratio | measured gridding | predicted |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        n = int(r.get("size", 1024))
        p = cycle(k, r["visibilities"], r["workers"], n, chunks=r.get("chunks"))  # Stokes samples
        print(f"| {r['name']} | {r['workers']} | {r['visibilities'] / 1e6:.1f} | {n} | {r['major_s']:.2f} | "
              f"{p['major_s']:.2f} | {r['major_s'] / p['major_s']:.2f} | {r['gridding_s']:.2f} | "
              f"{p['gridding_s']:.2f} |")


def ska(k: Constants) -> None:
    """~1e12 visibilities, 32k^2, 10 major cycles, on 1 / 10 / 100 / 300 nodes x 16 cores."""
    v, n, cycles = 1e12, 32768, 10
    print(f"SKA-scale continuum: {v:.0e} samples, {n}^2, {cycles} major cycles, 1 worker of 16 threads per node\n")
    print("| nodes | chunks | gridding s/cycle | reduction s | overhead s | minor s (S=64, 1000 comp) "
          "| total h | limited by |")
    print("|---|---|---|---|---|---|---|---|")
    for nodes in (1, 10, 100, 300):
        p = cycle(k, v, nodes, n, threads=16, components=1000, subimages=64)
        parts = {"gridding": p["gridding_s"], "reduction": p["reduction_s"], "overhead (model broadcast)":
                 p["overhead_s"], "minor cycle": p["minor_s"]}
        limit = max(parts, key=parts.get)
        print(f"| {nodes} | {p['chunks']} | {p['gridding_s']:.0f} | {p['reduction_s']:.0f} | {p['overhead_s']:.0f} | "
              f"{p['minor_s']:.0f} | {cycles * p['total_s'] / 3600:.2f} | {limit} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calibrate", action="store_true", help=f"measure the constants, write {CONSTANTS.name}")
    p.add_argument("--check", nargs="*", default=[], help="benchmark JSON files to compare with the model")
    p.add_argument("--ska", action="store_true")
    args = p.parse_args()
    if args.calibrate:
        k = calibrate()
        CONSTANTS.write_text(json.dumps(asdict(k), indent=1) + "\n")
    k = load_constants()
    for f in args.check:
        check(k, Path(f))
    if args.ska:
        ska(k)


if __name__ == "__main__":
    main()
