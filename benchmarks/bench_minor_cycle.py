"""Minor-cycle speed: Hogbom on a 1024^2 image, 10,000 components.

Usage::

    .venv/bin/python benchmarks/bench_minor_cycle.py [--npix 1024] [--niter 10000]

The PSF is a realistic gridded PSF (random 40-antenna array, 8 hour angles) of the same size
as the image; the dirty image is 3000 point sources convolved with it plus noise, so that
the run does not stop before ``niter``. Reports iterations per second for the default
single-precision working residual, double precision, a restricted PSF patch, multiscale
(2000 components, setup of the cross-scale PSFs included), and the sub-image minor cycle
(``parallel_minor_cycle``, 2x2 tiles run one after the other in this process: the cost of the
margins and the per-tile setup, to be divided by the number of workers).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

from arl_mpi.constants import SPEED_OF_LIGHT as C_LIGHT
from arl_mpi.deconvolution import CleanParams, CleanSettings, hogbom, multiscale
from arl_mpi.deconvolution.common import convolve_same
from arl_mpi.deconvolution.subimages import parallel_minor_cycle
from arl_mpi.imaging import make_psf

log = logging.getLogger("bench_minor_cycle")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--npix", type=int, default=1024)
    ap.add_argument("--niter", type=int, default=10_000)
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
    runs = [
        ("hogbom float32, full PSF", lambda: hogbom(dirty, psf, hb)),
        ("hogbom float64, full PSF", lambda: hogbom(dirty, psf, hb.replace(double=True))),
        (
            "hogbom float32, psf_support=128",
            lambda: hogbom(dirty, psf, hb.replace(psf_support=128)),
        ),
        ("multiscale [0,4,8,16], full PSF", lambda: multiscale(dirty, psf, ms)),
        (
            "multiscale, psf_support=128",
            lambda: multiscale(dirty, psf, ms.replace(psf_support=128)),
        ),
        (
            f"hogbom, 2x2 sub-images of {n // 2}",
            lambda: (None, None, parallel_minor_cycle(dirty[None], psf[None], tiles, n // 2)[1]),
        ),
    ]
    for name, fn in runs:
        t0 = time.perf_counter()
        _, _, info = fn()
        dt = time.perf_counter() - t0
        log.info(
            "%-36s %6d comps in %7.2f s = %8.0f it/s (stop: %s)",
            name, info["niter"], dt, info["niter"] / dt, info["stop_reason"],
        )  # fmt: skip


if __name__ == "__main__":
    main()
