"""arl_mpi against WSClean on the same real data, with the same settings, in one run.

Data: the MWA snapshot of Fornax A shipped in PyPI's pyuvdata 2.4.5 (fetched into a cache).
WSClean: Debian's `wsclean` package (3.1; `apt-get install wsclean`), run with
`-use-wgridder` and the same size, cell, weighting, niter, gain, mgain and thresholds;
its restoring beam is forced to ours (`-beam-shape`) so restored fluxes compare like for
like. Prints a table (dirty max |diff| / peak, restored peak ratio, residual rms ratio,
beam, wall time and peak memory of each) and writes PNGs of both images and the difference.

    PYTHONPATH=. .venv/bin/python benchmarks/compare_wsclean.py [--out output/compare-wsclean]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MiB, summed over the process tree via GNU time) of ``cmd``."""
    t0 = time.perf_counter()
    r = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return wall, (int(m.group(1)) / 1024 if m else float("nan")), r.stderr


def mad(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="output/compare-wsclean")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--scale", default="60asec")
    p.add_argument("--niter", type=int, default=5000)
    p.add_argument("--ms", help="MeasurementSet to use (default: the MWA Fornax A snapshot)")
    p.add_argument(
        "--simulate",
        action="store_true",
        help="instead: simulate a large LOW-core observation (>= 10 M visibilities), export it as an MS "
        "for WSClean and image our store directly",
    )
    p.add_argument("--sim-ntimes", type=int, default=64)
    p.add_argument("--sim-nchan", type=int, default=4)
    args = p.parse_args()
    from astropy.io import fits

    from arl_mpi.io import testdata

    if not shutil.which("wsclean"):
        raise SystemExit("wsclean not found: apt-get install wsclean")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ms = out / "data.ms"
    vis_arg = str(ms)
    if args.simulate:
        from arl_mpi.io.ms import write_ms
        from arl_mpi.io.store import open_store

        store = out / "sim.store"
        if not (store / "index.h5").exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "arl_mpi.simulate",
                    str(store),
                    "--time-partitions",
                    "8",
                    "--sim-ntimes",
                    str(args.sim_ntimes),
                    "--sim-nchan",
                    str(args.sim_nchan),
                    "--sim-rmax-m",
                    "1000",
                    "--processes",
                    "2",
                ],
                check=True,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )
        if not ms.exists():
            write_ms(
                open_store(store), ms, telescope="MWA"
            )  # SKA-Low core site = MRO, known to CASA
        vis_arg = str(store)
        print(f"simulated {open_store(store).nvis / 1e6:.1f} M visibilities")
    elif not ms.exists():
        shutil.copytree(
            Path(args.ms) if args.ms else testdata.fetch_pyuvdata_file(testdata.MWA_MS), ms
        )
    common = dict(
        size=str(args.size),
        scale=args.scale,
        niter=str(args.niter),
        gain="0.1",
        mgain="0.8",
        auto="3",
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    py = sys.executable
    mpiexec = str(Path(py).with_name("mpiexec"))
    ours_cmd = [
        mpiexec,
        "-n",
        "4",
        py,
        "-m",
        "arl_mpi.pipeline",
        "--vis",
        vis_arg,
        "--name",
        str(out / "ours"),
        "--size",
        common["size"],
        common["size"],
        "--scale",
        common["scale"],
        "--weight",
        "natural",
        "--niter",
        common["niter"],
        "--gain",
        common["gain"],
        "--mgain",
        common["mgain"],
        "--auto-threshold",
        common["auto"],
        "--time-partitions",
        "1",
        "--freq-partitions",
        "2",
        "--no-dashboard",
        "--no-checkpoint",
        "--no-png",
    ]
    shutil.rmtree(Path(f"{ms}.arlstore"), ignore_errors=True)
    t_ours, mem_ours, _ = timed(ours_cmd, out, env)
    summary = json.loads((out / "ours-summary.json").read_text())
    bmaj, bmin, bpa = summary["beam_deg"]
    ws_cmd = [
        "wsclean",
        "-size",
        common["size"],
        common["size"],
        "-scale",
        common["scale"],
        "-weight",
        "natural",
        "-niter",
        common["niter"],
        "-gain",
        common["gain"],
        "-mgain",
        common["mgain"],
        "-auto-threshold",
        common["auto"],
        "-pol",
        "I",
        "-use-wgridder",
        "-j",
        "2",
        "-beam-shape",
        f"{bmaj * 3600}asec",
        f"{bmin * 3600}asec",
        f"{bpa}deg",
        "-name",
        str(out / "ws"),
        str(ms),
    ]
    t_ws, mem_ws, _ = timed(ws_cmd, out)

    def plane(path: Path) -> np.ndarray:
        return fits.getdata(path).squeeze().astype(np.float64)

    d_ours, d_ws = plane(out / "ours-dirty.fits"), plane(out / "ws-dirty.fits")
    i_ours, i_ws = plane(out / "ours-image.fits"), plane(out / "ws-image.fits")
    r_ours, r_ws = plane(out / "ours-residual.fits"), plane(out / "ws-residual.fits")
    rows = {
        "dirty max|ours - wsclean| / peak": float(np.abs(d_ours - d_ws).max() / np.abs(d_ws).max()),
        "dirty peak (ours, wsclean) Jy/beam": (float(d_ours.max()), float(d_ws.max())),
        "restored peak (ours, wsclean) Jy/beam": (float(i_ours.max()), float(i_ws.max())),
        "restored peak ratio ours/wsclean": float(i_ours.max() / i_ws.max()),
        "residual rms MAD (ours, wsclean) Jy/beam": (mad(r_ours), mad(r_ws)),
        "residual rms ratio ours/wsclean": mad(r_ours) / mad(r_ws),
        "restoring beam (deg, both)": (bmaj, bmin, bpa),
        "wall s (ours mpiexec -n 4, wsclean -j 2)": (round(t_ours, 2), round(t_ws, 2)),
        "peak RSS MiB of the largest process (ours, wsclean)": (round(mem_ours), round(mem_ws)),
        "our timings_s": summary["timings_s"],
    }
    (out / "comparison.json").write_text(json.dumps(rows, indent=2))
    for k, v in rows.items():
        print(f"{k}: {v}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.6))
    vmax = float(np.percentile(d_ws, 99.9))
    for a, img, title in (
        (ax[0], d_ours, "arl_mpi dirty"),
        (ax[1], d_ws, "WSClean dirty"),
        (ax[2], d_ours - d_ws, "difference"),
    ):
        lim = (
            (-vmax * 0.05, vmax)
            if title != "difference"
            else (-np.abs(d_ours - d_ws).max(), np.abs(d_ours - d_ws).max())
        )
        im = a.imshow(
            img,
            origin="lower",
            cmap="inferno" if title != "difference" else "RdBu_r",
            vmin=lim[0],
            vmax=lim[1],
        )
        a.set_title(title)
        fig.colorbar(im, ax=a, shrink=0.8)
    fig.savefig(out / "dirty-comparison.png", dpi=80, bbox_inches="tight")
    print(f"PNG: {out / 'dirty-comparison.png'}")


if __name__ == "__main__":
    main()
