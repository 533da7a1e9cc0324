"""arl_mpi against WSClean on the same real data, with the same settings, in one run.

Data: the MWA snapshot of Fornax A shipped in PyPI's pyuvdata 2.4.5 (fetched into a cache).
WSClean: Debian's `wsclean` package (3.1; `apt-get install wsclean`), run with
`-use-wgridder` and the same size, cell, weighting, niter, gain, mgain and thresholds;
its restoring beam is forced to ours (`-beam-shape`) so restored fluxes compare like for
like. Prints a table (dirty max |diff| / peak, restored peak ratio, residual rms ratio,
beam, wall time and peak memory of each) and writes PNGs of both images and the difference.

    PYTHONPATH=. .venv/bin/python benchmarks/compare_wsclean.py [--out output/compare-wsclean]

The speed comparison of issue 13 (10 M visibilities on the real MWA geometry rotated over
140 x 8 s, point sources + noise, as an MS that both imagers read; Briggs 0, 1024^2 at 1',
niter 20000, mgain 0.8, auto-threshold 3; ours `mpiexec -n 4 --vis data.ms`, ingest
included, against `wsclean -use-wgridder -j 2`), with the injected sources' fluxes checked
in both model images:

    PYTHONPATH=. .venv/bin/python benchmarks/compare_wsclean.py --mwa-rotated --out output/compare-wsclean-mwa
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
from simstore import ensure_mwa_rotated_ms, ensure_simulated_store  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from arl_mpi.constants import SPEED_OF_LIGHT  # noqa: E402


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MiB) of ``cmd``: GNU time reports the largest single process of the tree."""
    t0 = time.perf_counter()
    r = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return wall, (int(m.group(1)) / 1024 if m else float("nan")), r.stderr


def log_steps(log: str, t_launch: float) -> dict:
    """Start-up and ingest seconds of our run, from its log's time stamps (``asctime``, local time)."""
    import datetime as dt

    def stamp(pattern: str) -> float | None:
        m = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*" + pattern, log, re.M)
        return dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None

    out = {}
    up = stamp("MPI cluster up")
    if up is not None:
        out["launch to cluster up"] = round(up - t_launch, 2)
    m = re.search(r"ingested \S+ in ([\d.]+) s", log)
    if m:
        out["ingest"] = float(m.group(1))
    return out


def source_fluxes(sky: dict, ours_model: Path, ws_model: Path) -> dict:
    """Per injected source: the model images' flux within 8 pixels (about 3 beams) of it, over the true flux."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.wcs import WCS

    res = {}
    for label, path in (("ours", ours_model), ("wsclean", ws_model)):
        with fits.open(path) as h:
            img = h[0].data.squeeze().astype(np.float64)
            w = WCS(h[0].header).celestial
        yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
        ratios = []
        for c in sky["components"]:
            x, y = w.world_to_pixel(SkyCoord(c["ra_deg"] * u.deg, c["dec_deg"] * u.deg))
            near = (xx - x) ** 2 + (yy - y) ** 2 <= 8.0**2
            ratios.append(float(img[near].sum() / c["flux_jy"]))
        res[label] = {"ratios": [round(r, 4) for r in ratios],
                      "worst |ratio - 1|": round(max(abs(r - 1) for r in ratios), 4)}  # fmt: skip
    res["true fluxes Jy"] = [round(c["flux_jy"], 3) for c in sky["components"]]
    return res


def mad(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def density_weights(uvw, freq, weight, flags, width, cell, binning, robust):
    """Briggs weights from a half-plane density grid of ``width`` cells (WSClean-style fold)."""
    u = uvw[:, 0:1] * freq[None, :] / SPEED_OF_LIGHT
    v = uvw[:, 1:2] * freq[None, :] / SPEED_OF_LIGHT
    flip = v < 0
    u, v = np.where(flip, -u, u), np.where(flip, -v, v)
    if binning == "floor":
        x = np.floor(u * width * cell + width / 2).astype(np.int64)
        y = np.floor(v * width * cell).astype(np.int64)
    else:
        x = np.rint(u * width * cell).astype(np.int64) + width // 2
        y = np.rint(v * width * cell).astype(np.int64)
    ok = (x >= 0) & (x < width) & (y < width // 2) & ~flags
    w = np.where(ok, weight, 0.0)
    ind = np.where(ok, y * width + x, 0)
    grid = np.bincount(ind[ok], weights=w[ok], minlength=width * width // 2)
    f2 = (5 * 10 ** (-robust)) ** 2 / ((grid**2).sum() / w.sum())
    return np.where(ok, w / (1 + grid[ind] * f2), 0.0)


def diagnose_weighting(args) -> None:
    """Briggs weights arl_mpi's way and WSClean 3.1's way against WSClean dirty images.
    WSClean 3.1 grids the uniform/Briggs weight density (``ImageWeights``)

    * on the *padded* image grid (``-padding``, default 1.2: 512 px -> 616 px), so its uv cells
      are ``1 / (padded_width * cell)`` wide, not ``1 / (width * cell)``;
    * with ``floor()`` binning: ``x = floor(u * W * cell + W / 2)``, ``y = floor(v * H * cell)``
      after folding ``v < 0`` onto ``v >= 0`` (cell edges at integer multiples of the cell size;
      arl_mpi uses ``rint``, i.e. cell *centres* at those multiples);
    * followed by a rank filter (``-weighting-rank-filter 3`` by default) that caps a cell at
      3x the mean of its 16x16 neighbourhood.

    This script images the MWA snapshot with arl_mpi's gridder and weights computed either
    arl_mpi's way or WSClean's way, and compares each with WSClean dirty images made with
    ``-padding 1.0 -weighting-rank-filter 0`` and with WSClean's defaults.

        PYTHONPATH=. .venv/bin/python benchmarks/wsclean_weighting.py [--out output/wsclean-weighting]
    """
    from astropy.io import fits

    from arl_mpi.imaging.gridding import invert
    from arl_mpi.imaging.stokes import to_stokes
    from arl_mpi.imaging.weighting import apply_weighting, grid_weight_density
    from arl_mpi.io.ingest import ingest
    from arl_mpi.io.store import read_partition
    from arl_mpi.testing import realdata as testdata

    if not shutil.which("wsclean"):
        raise SystemExit("wsclean not found: apt-get install wsclean")
    size, scale_asec, robust = args.size, float(args.scale.replace("asec", "")), args.weight_robust
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ms = testdata.fetch_pyuvdata_file(testdata.MWA_MS)
    store = out / "mwa.store"
    if not (store / "index.h5").exists():
        ingest(ms, store, time_partitions=1)
    from arl_mpi.io.store import open_store

    idx = open_store(store)
    v = read_partition(idx, 0)
    vis, wt, fl = to_stokes(v.vis, v.weight, v.flags, v.polarisations, "I")
    freq, n, cell = idx.meta.frequency, size, np.deg2rad(scale_asec / 3600)
    ws = {}
    for label, extra in (
        ("pad1-norank", ["-padding", "1.0", "-weighting-rank-filter", "0"]),
        ("defaults", []),
    ):
        name = out / f"ws-{label}"
        subprocess.run(
            ["wsclean", "-size", str(n), str(n), "-scale", f"{scale_asec}asec", "-weight", "briggs",
             str(robust), "-niter", "0", "-pol", "I", "-use-wgridder", "-j", "2", *extra, "-name",
             str(name), str(ms)],
            check=True, capture_output=True,
        )  # fmt: skip
        ws[label] = fits.getdata(f"{name}-dirty.fits").squeeze().astype(np.float64)
    padded = int(np.ceil(n * 1.2 / 4) * 4)  # 512 -> 616, as WSClean 3.1 pads
    dens = grid_weight_density(v.uvw, freq, wt, fl, n, n, cell)
    cases = {
        "arl_mpi weights (rint, image grid)": apply_weighting(
            v.uvw, freq, wt, fl, dens, "briggs", robust, cell=cell, npix_x=n, npix_y=n
        ),
        f"floor binning, image grid ({n})": density_weights(
            v.uvw, freq, wt, fl, n, cell, "floor", robust
        ),
        f"floor binning, padded grid ({padded})": density_weights(
            v.uvw, freq, wt, fl, padded, cell, "floor", robust
        ),
    }
    print(
        f"MWA snapshot, {n}x{n} at {scale_asec} asec, Briggs {robust}: max|ours - WSClean| / peak"
    )
    print(
        f"{'our weights':42s} {'vs WSClean -padding 1 -rank-filter 0':>38s} {'vs WSClean defaults':>22s}"
    )
    for label, w in cases.items():
        img, _ = invert(v.uvw, freq, vis, w, fl, n, n, cell)
        d = [np.abs(img - ref).max() / ref.max() for ref in (ws["pad1-norank"], ws["defaults"])]
        print(f"{label:42s} {d[0]:38.2e} {d[1]:22.2e}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="output/compare-wsclean")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--scale", default="60asec")
    p.add_argument("--niter", type=int, default=None, help="default 5000 (20000 with --mwa-rotated)")
    p.add_argument("--ms", help="MeasurementSet to use (default: the MWA Fornax A snapshot)")
    p.add_argument(
        "--simulate",
        action="store_true",
        help="instead: simulate a large LOW-core observation (>= 10 M visibilities), export it as an MS "
        "for WSClean and image our store directly",
    )
    p.add_argument(
        "--mwa-rotated",
        action="store_true",
        help="instead: the issue-13 observation (real MWA geometry of the pyuvdata MWA snapshot rotated "
        "over --sim-ntimes x 8 s, point sources + noise, >= 10 M visibilities) as an MS that both "
        "imagers read; defaults --weight briggs 0 --niter 20000; checks the injected fluxes",
    )
    p.add_argument(
        "--weight",
        nargs="+",
        default=None,
        help="weighting for both imagers: natural | uniform | briggs R (WSClean 3.1 grids the "
        "uniform/Briggs density on the *padded* grid with floor() binning: see docs/validation.md)",
    )
    p.add_argument(
        "--wsclean-padding", default=None, help="WSClean -padding (default: its own, 1.2)"
    )
    p.add_argument(
        "--wsclean-rank-filter",
        default=None,
        help="WSClean -weighting-rank-filter (default 3; 0 = off)",
    )
    p.add_argument(
        "--install",
        action="store_true",
        help="apt-get install -y wsclean when it is missing (needs root); never done silently",
    )
    p.add_argument(
        "--weighting-diagnosis",
        action="store_true",
        help="instead: show where Briggs weighting differs from WSClean 3.1 (dirty images only; "
        "use with --size 512 --scale 90asec)",
    )
    p.add_argument(
        "--weight-robust", type=float, default=0.0, help="robust for --weighting-diagnosis"
    )
    p.add_argument(
        "--wsclean-extra",
        default="",
        help="extra WSClean flags, e.g. '-no-small-inversion' (WSClean otherwise images at the "
        "Nyquist size and FFT-resamples, which changes the pixels of oversampled images)",
    )
    p.add_argument(
        "--ours-vis",
        default=None,
        help="give our pipeline this input instead of the MS (e.g. the UVFITS version of --ms)",
    )
    p.add_argument("--sim-ntimes", type=int, default=None, help="default 64 (140 with --mwa-rotated)")
    p.add_argument("--sim-nchan", type=int, default=4)
    args = p.parse_args()
    issue13 = args.mwa_rotated
    args.niter = args.niter or (20000 if issue13 else 5000)
    args.weight = args.weight or (["briggs", "0"] if issue13 else ["natural"])
    args.sim_ntimes = args.sim_ntimes or (140 if issue13 else 64)
    if args.weighting_diagnosis:
        return diagnose_weighting(args)
    from astropy.io import fits

    from arl_mpi.testing import realdata as testdata

    if not shutil.which("wsclean"):
        if args.install and os.geteuid() == 0:
            print("installing WSClean: apt-get install -y wsclean", flush=True)
            subprocess.run(["apt-get", "install", "-y", "wsclean"], check=True)
        else:
            raise SystemExit(
                "wsclean not found: apt-get install wsclean (or pass --install as root)"
            )
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ms = out / "data.ms"
    vis_arg = str(ms)
    sky = None
    if args.mwa_rotated:
        t0 = time.perf_counter()
        sky = ensure_mwa_rotated_ms(ms, ntimes=args.sim_ntimes)
        print(f"MWA rotated observation: {sky['nbaselines']} baselines x {sky['ntimes']} times x "
              f"{sky['nchan']} channels = {sky['nbaselines'] * sky['ntimes'] * sky['nchan'] / 1e6:.1f} M "
              f"visibilities ({' '.join(sky['polarisations'])}), {ms} ({time.perf_counter() - t0:.0f} s)",
              flush=True)  # fmt: skip
    elif args.simulate:
        from arl_mpi.io.ms import write_ms
        from arl_mpi.io.store import open_store

        store = out / "sim.store"
        ensure_simulated_store(store, 8, args.sim_ntimes, args.sim_nchan)
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
    if args.ours_vis:
        vis_arg = str(Path(args.ours_vis).resolve())
        shutil.rmtree(Path(f"{vis_arg}.arlstore"), ignore_errors=True)
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
        *args.weight,
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
    t_launch = time.time()
    t_ours, mem_ours, log_ours = timed(ours_cmd, out, env)
    (out / "ours.log").write_text(log_ours)
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
        *args.weight,
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
    if args.wsclean_extra:
        ws_cmd[1:1] = args.wsclean_extra.split()
    if args.wsclean_padding:
        ws_cmd[1:1] = ["-padding", args.wsclean_padding]
    if args.wsclean_rank_filter:
        ws_cmd[1:1] = ["-weighting-rank-filter", args.wsclean_rank_filter]
    print("ours:", " ".join(ours_cmd), "\nwsclean:", " ".join(ws_cmd), flush=True)
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
        "our steps_s (from the log)": log_steps(log_ours, t_launch),
    }
    if sky is not None:
        rows["source fluxes (model within 8 px / true)"] = source_fluxes(sky, out / "ours-model.fits",
                                                                         out / "ws-model.fits")
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
