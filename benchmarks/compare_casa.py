"""arl_mpi against CASA (tclean, gaincal) on the same real data, in one run.

Installs CASA from PyPI (casatools, casatasks, casadata) into its own venv
(``output/casa-venv``) with a site config that turns off CASA's data auto-update, then:

1. MWA Fornax A snapshot: CASA ``tclean`` (w-projection, Hogbom, natural weighting, same
   size/cell/niter/gain, ``nsigma=3``, restoring beam forced to ours) against our pipeline:
   dirty image difference, restored peak, residual rms, wall time.
2. VLA J1008+0730 (raw): CASA ``gaincal`` (phase-only, 10 s, point model) + ``applycal`` +
   ``tclean`` against our ICAL with ``--ical-point-model``: image peak/rms before and after.

    PYTHONPATH=. .venv/bin/python benchmarks/compare_casa.py [--out output/compare-casa]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASA_SCRIPT = textwrap.dedent('''
    import json, sys, time
    from casatasks import tclean, exportfits, gaincal, applycal
    job = json.loads(sys.argv[1])
    out = {}
    if job["kind"] == "mwa":
        t0 = time.perf_counter()
        tclean(vis=job["ms"], imagename=job["name"] + "-dirty", imsize=job["size"], cell=job["cell"],
               weighting="natural", niter=0, gridder="widefield", wprojplanes=-1, stokes="I", specmode="mfs")
        exportfits(job["name"] + "-dirty.residual", job["name"] + "-dirty.fits", overwrite=True)
        t1 = time.perf_counter()
        tclean(vis=job["ms"], imagename=job["name"], imsize=job["size"], cell=job["cell"], weighting="natural",
               niter=job["niter"], gain=0.1, nsigma=3.0, gridder="widefield", wprojplanes=-1, deconvolver="hogbom",
               stokes="I", specmode="mfs", restoringbeam=job["beam"])
        out["tclean_s"] = time.perf_counter() - t1
        out["dirty_s"] = t1 - t0
        for ext in ("image", "residual"):
            exportfits(f"{job['name']}.{ext}", f"{job['name']}-{ext}.fits", overwrite=True)
    else:
        def image(tag, column):
            tclean(vis=job["ms"], imagename=f"{job['name']}-{tag}", imsize=job["size"], cell=job["cell"],
                   weighting="natural", niter=job["niter"], gain=0.1, nsigma=3.0, stokes="I", specmode="mfs",
                   datacolumn=column)
            exportfits(f"{job['name']}-{tag}.image", f"{job['name']}-{tag}-image.fits", overwrite=True)
            exportfits(f"{job['name']}-{tag}.residual", f"{job['name']}-{tag}-residual.fits", overwrite=True)
        t0 = time.perf_counter()
        image("raw", "data")
        gaincal(vis=job["ms"], caltable=job["name"] + ".G", solint="10s", calmode="p", refant="0", minsnr=3.0,
                smodel=[1, 0, 0, 0], gaintype="G")
        applycal(vis=job["ms"], gaintable=[job["name"] + ".G"])
        image("selfcal", "corrected")
        out["total_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out))
''')


def casa_python(work: Path) -> Path:
    """The CASA venv's python (created on first use), with an offline site config."""
    venv = work / "casa-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "casatools", "casatasks", "casadata", "six"],
                       check=True)
    home = work / "casa-home"
    (home / ".casa").mkdir(parents=True, exist_ok=True)
    (home / ".casa" / "config.py").write_text(
        "import casadata\ndatapath = [casadata.datapath]\nmeasurespath = casadata.datapath\n"
        "measures_auto_update = False\ndata_auto_update = False\nnologfile = True\n")
    return py


def run_casa(py: Path, work: Path, job: dict) -> dict:
    script = work / "casa_job.py"
    script.write_text(CASA_SCRIPT)
    env = dict(os.environ, HOME=str(work / "casa-home"))
    t0 = time.perf_counter()
    r = subprocess.run([str(py), str(script), json.dumps(job)], cwd=work, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"CASA failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    res = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    res["wall_s"] = time.perf_counter() - t0
    return res


def mad(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def plane(path: Path) -> np.ndarray:
    from astropy.io import fits

    return fits.getdata(path).squeeze().astype(np.float64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/compare-casa")
    p.add_argument("--large", help="a directory made by `compare_wsclean.py --simulate`: time CASA tclean on its "
                                   "data.ms with the same settings and compare with the recorded arl_mpi/WSClean run")
    args = p.parse_args()
    if args.large:
        return compare_large(Path(args.large).resolve(), Path(args.out).resolve())
    from arl_mpi.testing import realdata as testdata

    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    py = casa_python(work)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ours = [sys.executable, "-m", "arl_mpi.pipeline", "--workers", "2", "--no-dashboard", "--no-png",
            "--no-checkpoint", "--time-partitions", "1"]
    rows = {}

    # 1. MWA snapshot
    ms = work / "mwa.ms"
    if not ms.exists():
        shutil.copytree(testdata.fetch_pyuvdata_file(testdata.MWA_MS), ms)
    shutil.rmtree(Path(f"{ms}.arlstore"), ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([*ours, "--vis", str(ms), "--name", str(work / "ours-mwa"), "--size", "1024", "1024", "--scale",
                    "60asec", "--weight", "natural", "--niter", "5000", "--mgain", "0.8", "--auto-threshold", "3"],
                   check=True, env=env, cwd=work, capture_output=True)
    t_ours = time.perf_counter() - t0
    beam = json.loads((work / "ours-mwa-summary.json").read_text())["beam_deg"]
    casa = run_casa(py, work, {"kind": "mwa", "ms": str(ms), "name": str(work / "casa-mwa"), "size": 1024,
                               "cell": "60arcsec", "niter": 5000,
                               "beam": [f"{beam[0]}deg", f"{beam[1]}deg", f"{beam[2]}deg"]})
    d_o, d_c = plane(work / "ours-mwa-dirty.fits"), plane(work / "casa-mwa-dirty.fits")
    i_o, i_c = plane(work / "ours-mwa-image.fits"), plane(work / "casa-mwa-image.fits")
    r_o, r_c = plane(work / "ours-mwa-residual.fits"), plane(work / "casa-mwa-residual.fits")
    rows["mwa"] = {
        "dirty max|ours - casa| / peak": float(np.nanmax(np.abs(d_o - d_c)) / np.nanmax(d_c)),
        "dirty peak (ours, casa)": (float(d_o.max()), float(np.nanmax(d_c))),
        "restored peak ratio ours/casa": float(i_o.max() / np.nanmax(i_c)),
        "residual rms ratio ours/casa": mad(r_o) / mad(r_c),
        "wall s (ours local 2 workers incl. ingest, casa tclean incl. start-up)": (round(t_ours, 1),
                                                                                   round(casa["wall_s"], 1)),
    }

    # 2. VLA self-calibration
    vms = work / "vla.ms"
    shutil.rmtree(vms, ignore_errors=True)
    shutil.copytree(testdata.fetch_pyuvdata_file(testdata.VLA_MS), vms)
    vla_args = ["--size", "256", "256", "--scale", "0.1asec", "--niter", "500", "--mgain", "0.8",
                "--auto-threshold", "3"]
    shutil.rmtree(Path(f"{vms}.arlstore"), ignore_errors=True)
    subprocess.run([*ours, "--vis", str(vms), "--pipeline", "ical", "--name", str(work / "ours-vla"), *vla_args,
                    "--ical-point-model", "--ical-rounds", "3", "--ical-phase-only-rounds", "3", "--ical-solint", "10"],
                   check=True, env=env, cwd=work, capture_output=True)
    rounds = json.loads((work / "ours-vla-summary.json").read_text())["rounds"]
    run_casa(py, work, {"kind": "vla", "ms": str(vms), "name": str(work / "casa-vla"), "size": 256,
                        "cell": "0.1arcsec", "niter": 500})
    dr = {}
    for tag in ("raw", "selfcal"):
        img, res = plane(work / f"casa-vla-{tag}-image.fits"), plane(work / f"casa-vla-{tag}-residual.fits")
        dr[tag] = float(np.nanmax(img) / mad(res))
    rows["vla"] = {"ours peak/rms raw -> selfcal": (rounds[0]["dynamic_range"], rounds[-1]["dynamic_range"]),
                   "casa peak/rms raw -> selfcal": (dr["raw"], dr["selfcal"])}
    (work / "comparison.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))


def compare_large(large: Path, work: Path) -> None:
    """CASA tclean on the large simulated MS of compare_wsclean.py, same settings."""
    work.mkdir(parents=True, exist_ok=True)
    py = casa_python(work)
    prev = json.loads((large / "comparison.json").read_text())
    summary = json.loads((large / "ours-summary.json").read_text())
    st = summary["settings"]
    beam = summary["beam_deg"]
    cell = f"{float(st['scale'].replace('asec', ''))}arcsec"
    casa = run_casa(py, work, {"kind": "mwa", "ms": str(large / "data.ms"), "name": str(work / "casa-large"),
                               "size": int(st["size"][0]), "cell": cell, "niter": int(st["niter"]),
                               "beam": [f"{beam[0]}deg", f"{beam[1]}deg", f"{beam[2]}deg"]})
    i_o, i_c = plane(large / "ours-image.fits"), plane(work / "casa-large-image.fits")
    r_o, r_c = plane(large / "ours-residual.fits"), plane(work / "casa-large-residual.fits")
    t_ours, t_ws = prev["wall s (ours mpiexec -n 4, wsclean -j 2)"]
    rows = {"wall s (ours mpiexec -n 4, wsclean -j 2, casa tclean dirty+clean)": (t_ours, t_ws,
                                                                                  round(casa["wall_s"], 1)),
            "casa tclean clean-only s": round(casa["tclean_s"], 1),
            "restored peak ratio ours/casa": float(i_o.max() / np.nanmax(i_c)),
            "residual rms ratio ours/casa": mad(r_o) / mad(r_c)}
    (work / "comparison-large.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
