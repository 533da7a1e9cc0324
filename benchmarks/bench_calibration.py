"""Calibration solver speed measurement (not a unit test).

Usage::

    python benchmarks/bench_calibration.py --nant 512 --ntime 100 --nchan 1

Simulates a point-source partition, corrupts it with known gains and noise,
times :func:`arl_mpi.calibration.solve.solve_gains` and reports the error against the truth.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a script without PYTHONPATH
    sys.path.insert(0, str(REPO))

from arl_mpi.calibration.apply import corrupt_visibilities  # noqa: E402
from arl_mpi.calibration.solve import solve_gains  # noqa: E402
from arl_mpi.simulation.corruption import add_thermal_noise, simulate_gains  # noqa: E402
from arl_mpi.testing.synthetic_calibration import make_observation  # noqa: E402

log = logging.getLogger("bench_calibration")


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark; returns the measured numbers.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    dict
        ``solve_s`` (best of ``--repeat``), ``vis_per_s``, ``max_phase_err_deg``, ...
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nant", type=int, default=512)
    ap.add_argument("--ntime", type=int, default=100)
    ap.add_argument("--nchan", type=int, default=1)
    ap.add_argument("--dt", type=float, default=10.0, help="integration time [s]")
    ap.add_argument("--solint", type=float, default=10.0, help="solution interval [s]")
    ap.add_argument("--freq-block", type=int, default=None)
    ap.add_argument("--mode", default="amp_phase", choices=["amp_phase", "phase"])
    ap.add_argument("--pol-mode", default="scalar", choices=["scalar", "diagonal"])
    ap.add_argument("--sigma", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    t_start = time.perf_counter()
    obs = make_observation(
        args.nant, args.ntime, args.nchan, dt=args.dt, seed=1, dtype=np.complex64
    )
    times = np.unique(obs.time)
    receptors = ["I"] if args.pol_mode == "scalar" else ["X", "Y"]
    truth = simulate_gains(args.nant, times, obs.freq, receptors=receptors, seed=2)
    vis, _ = corrupt_visibilities(
        obs.time, obs.antenna1, obs.antenna2, obs.model, obs.freq, obs.pol_labels, truth
    )
    vis = add_thermal_noise(vis, args.sigma, seed=3)
    t_sim = time.perf_counter() - t_start
    log.info(
        "simulated %d rows x %d chan x %d pol in %.1f s",
        obs.time.size,
        args.nchan,
        len(obs.pol_labels),
        t_sim,
    )

    best = np.inf
    gt = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        gt = solve_gains(
            obs.time,
            obs.antenna1,
            obs.antenna2,
            vis,
            obs.model,
            obs.weight,
            obs.flags,
            obs.freq,
            args.nant,
            solint=args.solint,
            freq_block=args.freq_block,
            mode=args.mode,
            pol_mode=args.pol_mode,
        )
        best = min(best, time.perf_counter() - t0)
    assert gt is not None
    # error against truth (cells at integration resolution; solint may average)
    tidx = np.searchsorted(times, gt.time, side="right") - 1
    tr = truth.gain[tidx][:, :, :1, :]
    tr = tr * np.exp(-1j * np.angle(tr[:, :1]))
    ok = ~gt.flags
    dph = np.degrees(np.abs(np.angle(gt.gain[..., :1, :] / tr)))[ok[..., :1, :]]
    nvis = obs.time.size * args.nchan * len(obs.pol_labels)
    result = {
        "solve_s": best,
        "rows": float(obs.time.size),
        "vis_per_s": nvis / best,
        "cells": float(gt.ntime * gt.nfreq * gt.nrec),
        "flagged_frac": float(gt.flags.mean()),
        "max_phase_err_deg": float(dph.max()) if dph.size else float("nan"),
        "median_snr": float(np.median(gt.snr[ok])) if ok.any() else 0.0,
    }
    log.info(
        "solve_gains: %.2f s for %d ants x %d cells (%.3g vis/s); flagged %.2f%%; "
        "max phase error %.3f deg; median SNR %.0f",
        best,
        args.nant,
        int(result["cells"]),
        result["vis_per_s"],
        100 * result["flagged_frac"],
        result["max_phase_err_deg"],
        result["median_snr"],
    )
    return result


if __name__ == "__main__":
    main()
