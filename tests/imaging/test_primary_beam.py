"""``--apply-primary-beam``: the beam models against their formulas, EveryBeam evaluated directly and
WSClean; a pipeline run whose beam-corrected image gives an off-axis source its true flux."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import subprocess

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from helpers import read_summary, run_pipeline, small_meta, small_visibility

from arl_mpi.errors import ConfigError, InputError
from arl_mpi.imaging.dft import dft_predict, pixel_to_lm
from arl_mpi.imaging.primary_beam import (
    C_LIGHT,
    airy_beam,
    airy_half_power_radius,
    airy_voltage,
    beam_model_for,
    image_radius,
    pb_correct,
)
from arl_mpi.io.store import open_store, write_store

HAVE_EVERYBEAM = importlib.util.find_spec("everybeam") is not None and importlib.util.find_spec("casacore") is not None
needs_everybeam = pytest.mark.skipif(not HAVE_EVERYBEAM, reason="EveryBeam not installed: pip install 'arl_mpi[beam]'")


def test_airy_half_power_radius_matches_the_formula():
    f, d = 1.4e9, 25.0
    lam = C_LIGHT / f
    r = airy_half_power_radius(f, d)
    assert airy_voltage(np.array([r]), f, d)[0] ** 2 == pytest.approx(0.5, abs=1e-10)
    assert 2 * r == pytest.approx(1.02899 * lam / d, rel=1e-4)  # FWHM of the Airy disk: 1.029 lambda / D
    assert np.sin(airy_half_power_radius(2 * f, d)) == pytest.approx(np.sin(r) / 2, rel=1e-12)  # sin r ~ lambda
    # on the image grid: the beam's half-power crossing along the x axis, interpolated between pixels
    n, cell = 256, np.deg2rad(10 / 3600)
    b = airy_beam(n, n, cell, [np.array([f])], np.full(4, d))[0]
    assert b[n // 2, n // 2] == pytest.approx(1.0, abs=1e-12)
    row = b[n // 2, n // 2:]  # x = n/2 ... : l = -(x - n/2) cell, radius (x - n/2) cell (SIN, l << 1)
    k = int(np.argmax(row < 0.5))
    x_half = (k - 1) + (row[k - 1] - 0.5) / (row[k - 1] - row[k])
    assert np.arcsin(x_half * cell) == pytest.approx(r, rel=2e-3)
    # first null at x = 3.8317 (J1's first zero)
    assert airy_voltage(np.array([np.arcsin(3.8317 * lam / (np.pi * d))]), f, d)[0] == pytest.approx(0, abs=1e-4)


def test_airy_mixed_diameters_average_baselines_and_frequencies():
    n, cell = 64, np.deg2rad(60 / 3600)
    d = np.array([13.5, 13.5, 15.0])
    freqs = np.array([0.9e9, 1.1e9])
    b = airy_beam(n, n, cell, [freqs], d)[0]
    th = image_radius(n, n, cell)
    want = np.zeros((n, n))
    for f in freqs:  # the mean over channels of the mean over baselines p < q of V_p V_q
        v = [airy_voltage(th, f, x) for x in d]
        want += (v[0] * v[1] + v[0] * v[2] + v[1] * v[2]) / 3 / 2
    np.testing.assert_allclose(b, want, atol=1e-12)


def test_pb_correct_blanks_below_the_limit():
    img = np.full((2, 2), 2.0)
    beam = np.array([[1.0, 0.5], [0.01, 0.004]])
    out = pb_correct(img, beam, 0.005)
    np.testing.assert_allclose(out[:1], [[2.0, 4.0]])
    assert out[1, 0] == pytest.approx(200.0) and np.isnan(out[1, 1])


def test_unknown_telescope_is_one_line_naming_it():
    assert beam_model_for("EVLA") == "airy" and beam_model_for("MeerKAT") == "airy"
    assert beam_model_for("LOFAR") == "everybeam" and beam_model_for("MID") == "everybeam"
    with pytest.raises(InputError, match=r"telescope 'TEST': no primary-beam model .*EveryBeam: LOFAR.*Airy dish: VLA"):
        beam_model_for("TEST")


def _mid_ms(tmp_path):
    """A small store written as an MS with TELESCOPE_NAME 'MID' (EveryBeam's SKA-MID: 15 m dishes)."""
    from arl_mpi.io.ms import write_ms

    vis = small_visibility(nrow=60, nchan=2, seed=1)
    vis.frequency = np.array([1.0e9, 1.1e9])
    write_store(tmp_path / "mid.store", small_meta(vis), vis, ntime_parts=1)
    return write_ms(open_store(tmp_path / "mid.store"), tmp_path / "mid.ms", telescope="MID"), vis


@needs_everybeam
def test_everybeam_beam_image_matches_direct_evaluation(tmp_path):
    from arl_mpi.imaging.primary_beam import everybeam_beam, load_everybeam, ms_interval_weights
    from arl_mpi.models import image_wcs

    ms, vis = _mid_ms(tmp_path)
    n, cell = 128, np.deg2rad(30 / 3600)  # a 64-node coarse grid: every 2nd pixel, spline-interpolated
    pc = vis.phase_centre
    beam = everybeam_beam(ms, "MID", n, n, cell, pc.ra.rad, pc.dec.rad, [1.0e9, 1.1e9])
    assert beam.shape == (2, n, n)
    tel = load_everybeam(ms, "MID")
    times, _ = ms_interval_weights(ms)
    wcs = image_wcs(pc, n, n, cell, 1e9, 1e6, ["I"])
    for y, x in [(64, 64), (20, 100), (101, 21), (41, 80), (90, 35), (3, 124), (124, 3), (0, 0), (127, 127)]:
        sky = wcs.pixel_to_world(x, y, 0, 0)[0]
        for o, f in enumerate((1.0e9, 1.1e9)):
            jones = tel.station_response(float(times[0]), 0, f, sky.ra.rad, sky.dec.rad)  # direct, one direction
            assert beam[o, y, x] == pytest.approx(0.5 * np.sum(np.abs(jones) ** 2), abs=1e-3), (y, x, f)
    # EveryBeam's SKA-MID dish is an unblocked 15 m aperture: our Airy model agrees
    np.testing.assert_allclose(beam, airy_beam(n, n, cell, [[1.0e9], [1.1e9]], np.full(6, 15.0)), atol=1e-4)
    # orientation: a grid centred away from the pointing puts the beam's peak at the pointing's pixel
    off = SkyCoord(ra=pc.ra.deg + 0.25 / np.cos(pc.dec.rad), dec=pc.dec.deg - 0.15, unit="deg")
    b = everybeam_beam(ms, "MID", n, n, cell, off.ra.rad, off.dec.rad, [1.0e9])[0]
    y, x = np.unravel_index(np.argmax(b), b.shape)
    assert (y, x) == (64 + 18, 64 + 30)  # 0.15 deg north (+m: +y), 0.25 deg west (-l: +x) of the centre


@needs_everybeam
def test_mwa_beam_needs_mwa_path(tmp_path):
    from arl_mpi.imaging.primary_beam import load_everybeam
    from arl_mpi.testing.realdata import MWA_MS, fetch_pyuvdata_file

    ms = fetch_pyuvdata_file(MWA_MS)
    with pytest.raises(ConfigError, match=r"^mwa-path: the MWA primary beam needs .*--mwa-path") as e:
        load_everybeam(ms, "MWA", None)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"mwa-path: .*nothere.h5: no such MWA FEE coefficients file"):
        load_everybeam(ms, "MWA", str(tmp_path / "nothere.h5"))


@pytest.mark.skipif(shutil.which("wsclean") is None, reason="wsclean not installed (apt-get install wsclean)")
def test_vla_beam_against_wsclean(tmp_path):
    from arl_mpi.imaging.primary_beam import airy_beam as airy
    from arl_mpi.testing.realdata import VLA_MS, fetch_pyuvdata_file

    ms = tmp_path / "vla.ms"
    shutil.copytree(fetch_pyuvdata_file(VLA_MS), ms)  # WSClean never writes into the cached copy
    n, scale = 128, 1.0
    cmd = ["wsclean", "-size", str(n), str(n), "-scale", f"{scale}asec", "-apply-primary-beam",
           "-name", str(tmp_path / "ws"), str(ms)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if "compiled without EveryBeam" in r.stdout + r.stderr:
        pytest.skip("this WSClean (Debian 3.1) is built without EveryBeam: its -apply-primary-beam is refused")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ws = fits.getdata(tmp_path / "ws-beam-0.fits").squeeze()
    from casacore.tables import table

    with table(str(ms) + "::ANTENNA", ack=False) as t:
        diam = t.getcol("DISH_DIAMETER")
    with table(str(ms) + "::SPECTRAL_WINDOW", ack=False) as t:
        freqs = t.getcol("CHAN_FREQ")[0]
    ours = airy(n, n, np.deg2rad(scale / 3600), [freqs], diam)[0]
    inside = ours >= 0.5
    np.testing.assert_allclose(ours[inside], ws[inside], rtol=0.01)


N, SCALE = 64, 60.0
CELL = np.deg2rad(SCALE / 3600)
Y, X = 40, 20  # the source's pixel: 14.4 arcmin from the centre, where the 25 m beam at 1.4 GHz is about 0.55
S = 2.0  # its true flux (Jy)


def _off_axis_source(diameter: float, cell: float, seed: int = 5):
    """Visibilities of a source of true flux S at pixel (X, Y), attenuated by the Airy beam of ``diameter``."""
    vis = small_visibility(nrow=600, nchan=4, seed=seed)
    vis.frequency = np.linspace(1.3e9, 1.5e9, 4)
    vis.channel_width = np.full(4, 5e7)
    vis.uvw = vis.uvw * 0.5 * (np.deg2rad(60 / 3600) / cell)  # about 3 pixels per synthesised beam at 1.4 GHz
    l, m = pixel_to_lm(X, Y, N, N, cell)
    theta = np.arcsin(np.hypot(l, m))
    apparent = np.array([S * airy_voltage(np.array([theta]), f, diameter)[0] ** 2 for f in vis.frequency])
    ph = dft_predict(np.array([l]), np.array([m]), np.array([1.0]), vis.uvw, vis.frequency)
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.005, vis.vis.shape) + 1j * rng.normal(0, 0.005, vis.vis.shape)
    vis.vis = (ph[..., None] * apparent[None, :, None] + noise).astype(np.complex64)
    return vis, apparent


def _flags(vis_path, scale: float, *extra) -> list[str]:
    return ["--vis", str(vis_path), "--size", str(N), str(N), "--scale", f"{scale}asec", "--workers", "1",
            "--no-dashboard", "--no-png", "--niter", "300", "--auto-threshold", "3", "--apply-primary-beam",
            *extra]  # fmt: skip


def test_pipeline_apply_primary_beam_restores_the_true_flux(tmp_path, env_cli):
    """VLA (analytic Airy, 25 m), two joined channels: per-channel and MFS files, blanked below the limit."""
    vis, apparent = _off_axis_source(25.0, CELL)
    meta = small_meta(vis)
    meta = dataclasses.replace(meta, telescope="VLA",
                               configuration=dataclasses.replace(meta.configuration, diameter=np.full(6, 25.0)))
    write_store(tmp_path / "vla.store", meta, vis, ntime_parts=2)
    flags = _flags(tmp_path / "vla.store", SCALE, "--channels-out", "2", "--primary-beam-limit", "0.1")
    r = run_pipeline(tmp_path, "pb", flags, env_cli)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = read_summary(tmp_path, "pb")
    assert summary["primary_beam"]["model"] == "airy"
    for tag, chans in (("0000", [0, 1]), ("0001", [2, 3]), ("MFS", [0, 1, 2, 3])):
        beam = fits.getdata(tmp_path / f"pb-{tag}-beam-0.fits").squeeze()
        pb = fits.getdata(tmp_path / f"pb-{tag}-image-pb.fits").squeeze()
        assert str(tmp_path / f"pb-{tag}-image-pb.fits") in summary["files"]
        assert beam[N // 2, N // 2] == pytest.approx(1.0, abs=1e-9)
        assert beam[Y, X] == pytest.approx(np.mean(apparent[chans]) / S, rel=1e-3)  # the channels' mean beam
        assert pb[Y, X] == pytest.approx(S, rel=0.03), tag  # the true flux, within 3 %
        assert np.all(np.isnan(pb[beam < 0.1])) and np.all(np.isfinite(pb[beam >= 0.1]))
    img = fits.getdata(tmp_path / "pb-image.fits").squeeze()  # the uncorrected cube: the apparent flux
    assert img.shape == (2, N, N) and img[0, Y, X] == pytest.approx(np.mean(apparent[:2]), rel=0.03)
    assert not (tmp_path / "pb-beam-0.fits").exists()  # joined channels: no un-numbered beam


@needs_everybeam
def test_pipeline_apply_primary_beam_everybeam_from_the_ingested_ms(tmp_path, env_cli):
    """SKA-MID MS (EveryBeam, from the MS the store was ingested from), one channel: PREFIX-beam-0/-image-pb."""
    from arl_mpi.io.ms import write_ms

    scale = 90.0  # 21.6 arcmin off axis: EveryBeam's 15 m SKA-MID dish gives about 0.6 at 1.4 GHz
    vis, apparent = _off_axis_source(15.0, np.deg2rad(scale / 3600), seed=6)
    write_store(tmp_path / "mid.store", small_meta(vis), vis, ntime_parts=1)
    ms = write_ms(open_store(tmp_path / "mid.store"), tmp_path / "mid.ms", telescope="MID")
    r = run_pipeline(tmp_path, "eb", _flags(ms, scale), env_cli)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = read_summary(tmp_path, "eb")
    assert (summary["primary_beam"]["model"], summary["primary_beam"]["telescope"]) == ("everybeam", "MID")
    beam = fits.getdata(tmp_path / "eb-beam-0.fits").squeeze()
    pb = fits.getdata(tmp_path / "eb-image-pb.fits").squeeze()
    # EveryBeam at the MFS frequency (the mean) vs the mean of the injected channels' attenuation: 0.2 %
    assert beam[Y, X] == pytest.approx(np.mean(apparent) / S, rel=2e-3)
    assert pb[Y, X] == pytest.approx(S, rel=0.03)
    assert np.all(np.isfinite(pb[beam >= 0.005]))


def test_store_without_a_model_or_its_ms_is_one_line(tmp_path):
    from arl_mpi.pipeline.primary_beam_outputs import check_primary_beam

    vis = small_visibility(nrow=20, nchan=1, seed=2)
    write_store(tmp_path / "t.store", small_meta(vis), vis, ntime_parts=1)  # telescope 'TEST'
    with pytest.raises(InputError, match="telescope 'TEST': no primary-beam model"):
        check_primary_beam(open_store(tmp_path / "t.store"), {})
    meta = dataclasses.replace(small_meta(vis), telescope="LOFAR")  # EveryBeam's, but no MS behind the store
    write_store(tmp_path / "l.store", meta, vis, ntime_parts=1)
    with pytest.raises(InputError, match=r"l.store: telescope LOFAR: the EveryBeam primary beam needs the Measure"):
        check_primary_beam(open_store(tmp_path / "l.store"), {})
