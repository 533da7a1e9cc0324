"""ICAL against injected gains; spectral line against an injected line source; uv contsub."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from helpers import PYTHON, run_pipeline

from arl_mpi.calibration.gaintable import read_gaintable
from arl_mpi.imaging.uvcontsub import uv_continuum_subtract
from arl_mpi.io.store import open_store
from arl_mpi.pipeline.prepare import builtin_simulation
from arl_mpi.simulation.builtin import build, true_gains


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def test_uv_continuum_subtract_removes_polynomial_keeps_line():
    rng = np.random.default_rng(3)
    freq = np.linspace(100e6, 120e6, 12)
    x = (freq - freq.mean()) / freq.mean()
    nrow = 50
    c0 = rng.normal(size=nrow) + 1j * rng.normal(size=nrow)
    c1 = rng.normal(size=nrow) + 1j * rng.normal(size=nrow)
    cont = c0[:, None] + c1[:, None] * x[None, :]
    line = np.zeros((nrow, 12), complex)
    line[:, 5:7] = 0.7
    w = np.ones((nrow, 12))
    flags = np.zeros((nrow, 12), bool)
    flags[3, 0] = True
    fit = np.ones(12, bool)
    fit[4:8] = False
    out = uv_continuum_subtract(cont + line, w, flags, freq, 1, fit)
    np.testing.assert_allclose(out, line, atol=1e-9)
    # order 0 cannot remove a slope
    assert np.abs(uv_continuum_subtract(cont, w, flags, freq, 0)).max() > 0.01


@pytest.mark.mpi
def test_spectral_line_recovered_in_right_channels(tmp_path, env_cli):
    store = tmp_path / "line.store"
    run([PYTHON, "-m", "arl_mpi.simulate", str(store), "--time-partitions", "2", "--sim-nchan", "8",
         "--sim-nsources", "0", "--sim-line-peak-jy", "1.0", "--sim-line-continuum-jy", "0.5",
         "--sim-line-centre-hz", "110e6", "--sim-line-fwhm-hz", "3e6", "--sim-ntimes", "8",
         # at the phase centre the continuum is a low-order polynomial in frequency on every
         # baseline, as uv-plane continuum subtraction assumes (off-centre sources fringe)
         "--sim-line-ra-offset-deg", "0", "--sim-line-dec-offset-deg", "0"], tmp_path, env_cli)
    r = run_pipeline(tmp_path, "sp", ["--pipeline", "spectral", "--vis", str(store), "--size", "128", "128",
                                      "--scale", "120asec", "--niter", "200", "--mgain", "0.8", "--auto-threshold", "3",
                                      "--continuum-subtract-order", "1", "--continuum-fit-channels", "0-2,6-7",
                                      "--no-dashboard", "--no-png"], env_cli, mpi_ranks=4, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    idx = open_store(store)
    comp = [c for c in idx.meta.provenance["components"] if "line_peak_jy" in c][0]
    f = idx.meta.frequency
    sigma = comp["line_fwhm_hz"] / (2 * np.sqrt(2 * np.log(2)))
    line = comp["line_peak_jy"] * np.exp(-0.5 * ((f - comp["line_centre_hz"]) / sigma) ** 2)
    cube = fits.getdata(tmp_path / "sp-image.fits")[0]
    hdr = fits.getheader(tmp_path / "sp-image.fits")
    w = WCS(hdr)
    # the spectral axis: pixel k is channel k's frequency
    np.testing.assert_allclose(w.spectral.pixel_to_world_values(np.arange(8)), f, rtol=1e-12)
    assert hdr["CTYPE3"] == "FREQ" and hdr["CUNIT3"] == "Hz" and cube.shape[0] == 8
    x, y = (int(round(float(v))) for v in w.celestial.world_to_pixel_values(comp["ra_deg"], comp["dec_deg"]))
    got = cube[:, y, x]
    # continuum (0.5 Jy) removed in the uv plane; the line left, channel by channel, within 2% of its peak
    np.testing.assert_allclose(got, line, atol=0.02 * comp["line_peak_jy"])
    on = line > 0.1
    np.testing.assert_allclose(got[on], line[on], rtol=0.02)
    summary = json.loads((tmp_path / "sp-summary.json").read_text())
    tasks = summary["minor_cycle_tasks"]
    # minor cycles ran on the workers, both of them, not on the driver
    assert len({t["worker"] for t in tasks}) == 2 and all(t["worker"].startswith("tls://") for t in tasks)


@pytest.mark.mpi
def test_ical_recovers_injected_gains(tmp_path, env_cli):
    name = tmp_path / "ic"
    r = run_pipeline(tmp_path, name.name, ["--pipeline", "ical", "--size", "256", "256", "--scale", "60asec",
                                           "--niter", "2000", "--mgain", "0.8", "--auto-threshold", "3",
                                           "--channels-out", "4", "--no-dashboard", "--no-png"],
                     env_cli, mpi_ranks=4, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    summary = json.loads(Path(f"{name}-summary.json").read_text())
    # final dynamic range at least 10x the uncalibrated image's
    assert summary["dynamic_range_gain"] >= 10, summary["rounds"]
    assert Path(f"{name}-gains.png").is_file() and Path(f"{name}-ical0-image.fits").is_file()
    gt = read_gaintable(f"{name}-gains.h5")
    # the same solutions as an h5parm (what DP3 / LoSoTo / WSClean read)
    from arl_mpi.calibration.gaintable import read_gaintable_h5parm

    hp = read_gaintable_h5parm(f"{name}-gains.h5parm")
    np.testing.assert_allclose(hp.gain, gt.gain, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(hp.flags, gt.flags)
    truth = true_gains(build(builtin_simulation("ical")))
    ti = np.searchsorted(truth.time, gt.time)
    assert np.allclose(truth.time[ti], gt.time)
    snr = np.abs(gt.gain) * np.sqrt(gt.weight)
    for r in range(2):  # X and Y receptors solved separately
        tg = truth.gain[ti][:, :, 0, r]
        ref = tg * np.conj(tg[:, :1]) / np.abs(tg[:, :1])  # truth relative to the reference antenna
        g = gt.gain[:, :, 0, r]
        good = (snr[:, :, 0, r] > 10) & ~gt.flags[:, :, 0, r]
        assert good.mean() > 0.95
        dphi = np.rad2deg(np.abs(np.angle(g * np.conj(ref))))[good]
        damp = np.abs(np.abs(g) / np.abs(ref) - 1)[good]
        assert dphi.max() < 2.0, dphi.max()
        assert damp.max() < 0.01, damp.max()
        # the injected errors were large: tens of degrees
        assert np.rad2deg(np.std(np.angle(ref))) > 10
