"""Minor-cycle speed: Hogbom on a 1024^2 image, 20,000 components: old vs new vs Radler.

Usage::

    .venv/bin/python benchmarks/bench_minor_cycle.py [--npix 1024] [--niter 20000]
        [--radler-niter N] [--threads 2] [--all]

The PSF is a realistic gridded PSF (random 40-antenna array, 8 hour angles) of the same size
as the image; the dirty image is 3000 point sources convolved with it plus noise, so that
the run does not stop before ``niter``. One run times, on one core unless stated:

* ``old``: the textbook Hogbom (:func:`~arl_mpi.deconvolution.hogbom.hogbom_exact`, the
  default before sub-minor loops), float32;
* ``new``: :func:`~arl_mpi.deconvolution.hogbom.hogbom` (sub-minor loops), float32 and
  float64, on one thread and on ``--threads`` FFT threads, and with a Clark window;
* ``radler``: Radler's generic CLEAN (``pip install 'arl_mpi[radler]'``), one thread,
  ``--radler-niter`` components (default: ``--niter``),

and prints each run's speed, its ratio to ``new`` and the largest difference of its model from
``old``'s in 5x5 boxes around the 100 brightest sources (relative to the source flux).
``--all`` adds the earlier runs (restricted PSF, multiscale, 2x2 sub-images).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from arl_mpi.constants import SPEED_OF_LIGHT as C_LIGHT
from arl_mpi.deconvolution import CleanParams, CleanSettings, hogbom, multiscale
from arl_mpi.deconvolution.common import convolve_same
from arl_mpi.deconvolution.hogbom import hogbom_exact
from arl_mpi.deconvolution.radler_engine import radler_available, radler_hogbom
from arl_mpi.deconvolution.subimages import parallel_minor_cycle
from arl_mpi.deconvolution.subminor import subminor_clean
from arl_mpi.imaging import make_psf

log = logging.getLogger("bench_minor_cycle")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--npix", type=int, default=1024)
    ap.add_argument("--niter", type=int, default=20_000)
    ap.add_argument("--radler-niter", type=int, default=None, help="components for Radler (default --niter)")
    ap.add_argument("--threads", type=int, default=2, help="FFT threads of the multi-threaded run")
    ap.add_argument("--all", action="store_true", help="also the restricted-PSF, multiscale, sub-image runs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("OPENBLAS_NUM_THREADS=%s", os.environ.get("OPENBLAS_NUM_THREADS"))
    n = args.npix
    rng = np.random.default_rng(0)
    ant = rng.normal(scale=800.0, size=(40, 2))
    i, j = np.triu_indices(40, 1)
    base = ant[j] - ant[i]
    uvw = []
    for h in np.radians(np.linspace(-45, 45, 8)):
        c, s = np.cos(h), np.sin(h)
        uvw.append(
            np.stack(
                [
                    c * base[:, 0] - s * base[:, 1],
                    0.7 * (s * base[:, 0] + c * base[:, 1]),
                    0 * base[:, 0],
                ],
                1,
            )
        )
    uvw = np.concatenate(uvw)
    freq = np.array([150e6])
    cell = 1 / (4.0 * np.abs(uvw[:, :2]).max() * freq[0] / C_LIGHT)  # ~4 px per beam
    t0 = time.perf_counter()
    psf, _ = make_psf(uvw, freq, np.ones((uvw.shape[0], 1)), None, n, n, cell, nthreads=2)
    log.info("PSF %d^2 in %.2f s", n, time.perf_counter() - t0)
    sky = np.zeros((n, n))
    sky[rng.integers(0, n, 3000), rng.integers(0, n, 3000)] = rng.pareto(1.5, 3000) + 0.1
    psf2, _ = make_psf(uvw, freq, np.ones((uvw.shape[0], 1)), None, 2 * n, 2 * n, cell, nthreads=2)
    dirty = convolve_same(sky, psf2, workers=2) + rng.normal(scale=0.01, size=(n, n))
    hb = CleanParams(niter=args.niter)
    ms = CleanParams(niter=2000, scales_px=(0, 4, 8, 16))
    tiles = CleanSettings(niter=args.niter, mgain=None)
    order = np.argsort(-sky.ravel())[:100]
    by, bx = np.unravel_index(order, sky.shape)

    def clark(window: int):
        r = dirty.astype(np.float32)
        m, i = subminor_clean(r, psf / psf[n // 2, n // 2], gain=0.1, niter=args.niter, level_stop=0.0,
                              mask=None, keep=None, window=window)
        i["stop_reason"] = i["stopped"]
        return m, r, i

    runs = [
        ("old: hogbom_exact float32", lambda: hogbom_exact(dirty, psf, hb)),
        ("new: hogbom float32, 1 thread", lambda: hogbom(dirty, psf, hb)),
        ("new: hogbom float64, 1 thread", lambda: hogbom(dirty, psf, hb.replace(double=True))),
        (f"new: hogbom float32, {args.threads} threads", lambda: hogbom(dirty, psf, hb.replace(nthreads=args.threads))),
        ("new: Clark window 128 rows (approx.)", lambda: clark(128)),
    ]
    if radler_available():
        rn = args.radler_niter or args.niter
        runs.append(
            ("radler generic clean, 1 thread", lambda: radler_hogbom(dirty, psf, hb.replace(niter=rn), threshold=0.0))
        )
    else:
        log.info("radler not installed (pip install 'arl_mpi[radler]'): skipped")
    if args.all:
        runs += [
            ("old: hogbom_exact, psf_support=128", lambda: hogbom_exact(dirty, psf, hb.replace(psf_support=128))),
            ("multiscale [0,4,8,16], full PSF", lambda: multiscale(dirty, psf, ms)),
            ("multiscale, psf_support=128", lambda: multiscale(dirty, psf, ms.replace(psf_support=128))),
            (f"hogbom, 2x2 sub-images of {n // 2}",
             lambda: (None, None, parallel_minor_cycle(dirty[None], psf[None], tiles, n // 2)[1])),
        ]
    rate: dict[str, float] = {}
    old_boxes = None
    for name, fn in runs:
        t0 = time.perf_counter()
        model, resid, info = fn()
        dt = time.perf_counter() - t0
        rate[name] = info["niter"] / dt
        diff = ""
        if model is not None:
            boxes = np.array([model[y - 2 : y + 3, x - 2 : x + 3].sum() for y, x in zip(by, bx, strict=True)])
            if old_boxes is None:
                old_boxes = boxes
            elif info["niter"] == args.niter:
                diff = f"max box diff vs old {np.max(np.abs(boxes - old_boxes) / sky.ravel()[order]):.2%}"
        log.info(
            "%-40s %6d comps in %7.2f s = %8.0f it/s (stop: %s) %s",
            name, info["niter"], dt, rate[name], info["stop_reason"], diff,
        )  # fmt: skip
    new = rate["new: hogbom float32, 1 thread"]
    log.info("ratios to 'new: hogbom float32, 1 thread' (speed, same run):")
    for name, r in rate.items():
        log.info("  %-40s %7.3f", name, r / new)

if __name__ == "__main__":
    main()
