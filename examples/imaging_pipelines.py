"""The imaging pipelines on a small LOW (core-only) observation (seed: imaging-pipelines).

Runs the continuum pipeline (major/minor cycles, the minor cycle on the driver) and the
spectral-line pipeline (per-channel minor cycles on the workers) through the same entry
point as ``python -m arl_mpi.pipeline``, on a local Dask cluster.

    python examples/imaging_pipelines.py            # laptop size
    python examples/imaging_pipelines.py --scale 4  # bigger image, more iterations
    python examples/imaging_pipelines.py --smallest # what the test suite runs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from arl_mpi.pipeline.__main__ import main as pipeline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/examples/imaging-pipelines")
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--smallest", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    npix = 128 if args.smallest else 256 * args.scale
    cell = 120 if args.smallest else 60 / args.scale
    common = ["--size", str(npix), str(npix), "--scale", f"{cell}asec", "--mgain", "0.8", "--auto-threshold", "3",
              "--workers", "2", "--dashboard-address", "127.0.0.1:0", "--no-tls"]
    for kind, niter in (("continuum", 300 if args.smallest else 2000 * args.scale),
                        ("spectral", 50 if args.smallest else 300 * args.scale)):
        name = out / kind
        status = pipeline(["--pipeline", kind, "--name", str(name), "--niter", str(niter), *common])
        summary = json.loads(Path(f"{name}-summary.json").read_text())
        print(f"{kind}: exit {status}, {len(summary['cycles'])} major cycles, files: {', '.join(summary['files'])}")


if __name__ == "__main__":
    main()
