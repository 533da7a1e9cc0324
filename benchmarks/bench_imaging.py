"""Throughput of arl_mpi invert/predict versus raw ducc0.wgridder calls on the same data.

Usage::

    .venv/bin/python benchmarks/bench_imaging.py [--nrow 250000] [--nchan 8] [--npix 1024]
        [--epsilon 1e-4] [--threads 1 2] [--repeat 3]

Prints visibilities per second for both and our overhead in percent (best of ``repeat``,
the two implementations interleaved so that machine load affects both alike). Because the
end-to-end comparison is at the mercy of other load on a shared machine, the wrapper cost
is also measured directly: our functions are timed with the ducc0 call replaced by a stub
that returns a correctly shaped array, and that time is reported relative to raw ducc0.
"""

from __future__ import annotations

import argparse
import logging
import time

import ducc0
import numpy as np

import arl_mpi.imaging.gridding as gridding
from arl_mpi.constants import SPEED_OF_LIGHT
from arl_mpi.imaging import invert_unnormalised, predict

log = logging.getLogger("bench_imaging")


def make_data(nrow: int, nchan: int, npix: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    freq = np.linspace(100e6, 200e6, nchan)
    # cell such that the longest baseline at the highest frequency is ~0.9 of Nyquist
    bmax = 3000.0
    cell = 0.9 / (2 * bmax * freq.max() / SPEED_OF_LIGHT)
    uvw = rng.uniform(-bmax / np.sqrt(2), bmax / np.sqrt(2), size=(nrow, 3))
    uvw[:, 2] *= 0.3
    vis = (rng.normal(size=(nrow, nchan)) + 1j * rng.normal(size=(nrow, nchan))).astype(
        np.complex64
    )
    weight = rng.uniform(0.5, 1.5, size=(nrow, nchan)).astype(np.float32)
    flags = np.zeros((nrow, nchan), dtype=bool)
    model = np.zeros((npix, npix))
    model[rng.integers(0, npix, 1000), rng.integers(0, npix, 1000)] = rng.uniform(size=1000)
    return uvw, freq, vis, weight, flags, model, cell


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def wrapper_time(fn, repeat: int, npix: int, vis_shape: tuple[int, int]) -> float:
    """Time ``fn`` with the ducc0 gridder calls replaced by stubs (pure wrapper cost)."""

    class _Stub:
        @staticmethod
        def vis2dirty(**kw):
            return np.zeros((npix, npix), dtype=kw["vis"].real.dtype)

        @staticmethod
        def dirty2vis(**kw):
            return np.zeros(vis_shape, dtype=np.complex64)

    class _Ducc:
        wgridder = _Stub

    real = gridding.ducc0
    gridding.ducc0 = _Ducc
    try:
        return best(fn, repeat)
    finally:
        gridding.ducc0 = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nrow", type=int, default=250_000)
    ap.add_argument("--nchan", type=int, default=8)
    ap.add_argument("--npix", type=int, default=1024)
    ap.add_argument("--epsilon", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uvw, freq, vis, weight, flags, model, cell = make_data(args.nrow, args.nchan, args.npix)
    nvis = vis.size
    n = args.npix
    eps = args.epsilon
    log.info(
        "ducc0 %s, %d rows x %d chan = %d vis, %d^2 image, cell %.3g arcsec, epsilon %g",
        ducc0.__version__, args.nrow, args.nchan, nvis, n, np.degrees(cell) * 3600, eps,
    )  # fmt: skip
    flips = dict(flip_u=True, flip_v=False, flip_w=True, divide_by_n=False)
    model32 = np.ascontiguousarray(model.T, dtype=np.float32)
    log.info(
        "%-8s %3s %14s %14s %9s %13s %7s", "op", "thr", "ours [Mvis/s]", "ducc0 [Mvis/s]",
        "overhead", "wrapper-only", "of raw",
    )  # fmt: skip
    for nt in args.threads:

        def ours_inv(nt=nt):
            invert_unnormalised(uvw, freq, vis, weight, flags, n, n, cell, epsilon=eps, nthreads=nt)

        def raw_inv(nt=nt):
            ducc0.wgridder.vis2dirty(
                uvw=uvw, freq=freq, vis=vis, wgt=weight, npix_x=n, npix_y=n, pixsize_x=cell,
                pixsize_y=cell, epsilon=eps, do_wgridding=True, nthreads=nt, **flips,
            )  # fmt: skip

        def ours_pred(nt=nt):
            predict(uvw, freq, model, cell, epsilon=eps, nthreads=nt)

        def raw_pred(nt=nt):
            ducc0.wgridder.dirty2vis(
                uvw=uvw, freq=freq, dirty=model32, pixsize_x=cell, pixsize_y=cell,
                epsilon=eps, do_wgridding=True, nthreads=nt, **flips,
            )  # fmt: skip

        for name, ours, raw in (("invert", ours_inv, raw_inv), ("predict", ours_pred, raw_pred)):
            t_ours, t_raw = [], []
            for _ in range(args.repeat):  # interleave
                t_raw.append(best(raw, 1))
                t_ours.append(best(ours, 1))
            a, b = min(t_ours), min(t_raw)
            wrap = wrapper_time(ours, args.repeat, n, vis.shape)
            log.info(
                "%-8s %3d %14.3f %14.3f %8.1f%% %10.2f ms %6.2f%%", name, nt, nvis / a / 1e6,
                nvis / b / 1e6, 100 * (a - b) / b, 1e3 * wrap, 100 * wrap / b,
            )  # fmt: skip


if __name__ == "__main__":
    main()
