"""Self-calibration (seed: calibration-pipelines): simulate, corrupt with gains, ICAL, show.

Simulates the LOW-core observation, corrupts it with antenna gains (phase screens of
tens of degrees, amplitude drifts), runs ICAL (phase-only, then amplitude+phase solves on
the workers) and compares the solved gains with the injected ones.

    python examples/calibration_pipelines.py            # laptop size
    python examples/calibration_pipelines.py --smallest # what the test suite runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from arl_mpi.calibration.gaintable import read_gaintable
from arl_mpi.pipeline.__main__ import main as pipeline
from arl_mpi.pipeline.prepare import builtin_simulation
from arl_mpi.simulation.builtin import build, true_gains


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/examples/calibration-pipelines")
    p.add_argument("--smallest", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = out / "ical"
    size = ["128", "128"] if args.smallest else ["256", "256"]
    status = pipeline(["--pipeline", "ical", "--name", str(name), "--size", *size,
                       "--scale", "120asec" if args.smallest else "60asec",
                       "--niter", "500" if args.smallest else "2000", "--mgain", "0.8", "--auto-threshold", "3",
                       "--channels-out", "4", "--ical-rounds", "2" if args.smallest else "3",
                       "--workers", "2", "--dashboard-address", "127.0.0.1:0", "--no-tls"])
    summary = json.loads(Path(f"{name}-summary.json").read_text())
    for r in summary["rounds"]:
        print(f"round {r['round']}: dynamic range {r['dynamic_range']:.0f}, residual rms {r['residual_rms_mad']:.2e}")
    gt = read_gaintable(f"{name}-gains.h5")
    truth = true_gains(build(builtin_simulation("ical")))
    tg = truth.gain[np.searchsorted(truth.time, gt.time)][:, :, :1, :]
    ref = tg * np.conj(tg[:, :1]) / np.abs(tg[:, :1])
    err = np.rad2deg(np.abs(np.angle(gt.gain * np.conj(ref))))
    print(f"exit {status}; gain phase error vs injected: median {np.median(err):.2f} deg, max {err.max():.2f} deg; "
          f"gain plot {name}-gains.png")


if __name__ == "__main__":
    main()
