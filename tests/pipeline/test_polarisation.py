"""``--pol`` (WSClean's -pol): every product of one load, WSClean output names, injected Q/U recovered."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from helpers import read_summary, run_pipeline, small_meta, small_visibility

from arl_mpi.errors import ConfigError, InputError
from arl_mpi.imaging.dft import dft_predict, pixel_to_lm
from arl_mpi.io.store import write_store
from arl_mpi.pipeline.polarisation import check_products, joined_hogbom, parse_pol

N, SCALE = 64, 60.0
CELL = np.deg2rad(SCALE / 3600)
Y, X = 40, 20  # the source's pixel
I_, Q_, U_, V_ = 2.0, 0.5, 0.3, 0.0  # fractional polarisation 29 %, angle 0.5 atan2(U, Q) = 15.5 deg


def test_parse_pol_like_wsclean():
    assert parse_pol("I") == ["I"]
    assert parse_pol("IQUV") == ["I", "Q", "U", "V"]
    assert parse_pol("xx,yy") == ["XX", "YY"]
    assert parse_pol("I,V") == ["I", "V"]
    assert parse_pol("xxxyyxyy") == ["XX", "XY", "YX", "YY"]
    assert parse_pol("rr ll, i") == ["RR", "LL", "I"]
    for bad in ("IQUZ", "x", ""):
        with pytest.raises(ConfigError, match="pol:"):
            parse_pol(bad)
    check_products(["I", "Q", "U", "V", "XY"], ["XX", "XY", "YX", "YY"], "s")
    check_products(["I", "V"], ["RR", "LL"], "s")
    with pytest.raises(InputError, match="s: --pol Q needs correlations XX\\+YY or RL\\+LR; the data have RR, LL"):
        check_products(["I", "Q"], ["RR", "LL"], "s")
    with pytest.raises(InputError, match="--pol XY needs correlations XY"):
        check_products(["XY"], ["XX", "YY"], "s")


def test_joined_hogbom_finds_peaks_in_the_sum_of_squares():
    ny = nx = 48
    yy, xx = np.mgrid[:ny, :nx]
    psf = np.exp(-((yy - ny // 2) ** 2 + (xx - nx // 2) ** 2) / (2 * 1.5**2))
    # product 0 has sources at A and B, product 1 only at B (with opposite sign), product 2 only at A
    srcs = {(20, 30): (1.0, 0.0, 0.4), (10, 12): (0.5, -0.8, 0.0)}
    dirty = np.zeros((3, ny, nx))
    for (y, x), amps in srcs.items():
        shifted = np.roll(np.roll(psf, y - ny // 2, axis=0), x - nx // 2, axis=1)
        for p, a in enumerate(amps):
            dirty[p] += a * shifted
    res, model = dirty.copy(), np.zeros_like(dirty)
    n = joined_hogbom(res, np.stack([psf] * 3), model, 0.5, 500, 1e-4)
    assert 0 < n < 500
    support = [set(zip(*np.nonzero(model[p]), strict=True)) for p in range(3)]
    assert support[0] == support[1] == support[2] == set(srcs)  # one component list for every product
    for (y, x), amps in srcs.items():
        np.testing.assert_allclose(model[:, y, x], amps, atol=2e-4)
    assert np.sqrt((res**2).sum(axis=0)).max() <= 1e-4


def test_pol_iquv_recovers_injected_polarisation(tmp_path, env_cli):
    vis = small_visibility(nrow=600, nchan=4, pols=("XX", "XY", "YX", "YY"), seed=5)
    rng = np.random.default_rng(7)
    sigma = 0.02  # per correlation, real and imaginary parts
    noise = rng.normal(0, sigma, vis.vis.shape) + 1j * rng.normal(0, sigma, vis.vis.shape)
    l, m = pixel_to_lm(X, Y, N, N, CELL)
    ph = dft_predict(np.array([l]), np.array([m]), np.array([1.0]), vis.uvw, vis.frequency)
    # XX = I + Q, YY = I - Q, XY = U + iV, YX = U - iV (imaging/stokes.py)
    corr = np.stack([I_ + Q_, U_ + 1j * V_, U_ - 1j * V_, I_ - Q_])
    vis.vis = (ph[..., None] * corr + noise).astype(np.complex64)
    write_store(tmp_path / "pol.store", small_meta(vis), vis, ntime_parts=2)
    common = ["--vis", str(tmp_path / "pol.store"), "--size", str(N), str(N), "--scale", f"{SCALE}asec",
              "--workers", "1", "--no-dashboard", "--no-png"]
    r = run_pipeline(tmp_path, "p", [*common, "--pol", "IQUVxx", "--niter", "200", "--auto-threshold", "3"], env_cli)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = read_summary(tmp_path, "p")
    assert summary["polarisations"] == ["I", "Q", "U", "V", "XX"]
    img = {}
    for p in ("I", "Q", "U", "V", "XX"):
        for kind in ("dirty", "psf", "model", "residual", "image"):
            assert (tmp_path / f"p-{p}-{kind}.fits").is_file(), (p, kind)  # WSClean's names
        img[p] = {k: fits.getdata(tmp_path / f"p-{p}-{k}.fits").squeeze().astype(float) for k in ("dirty", "image")}
        stokes_axis = fits.getheader(tmp_path / f"p-{p}-image.fits")["CRVAL4"]
        assert stokes_axis == {"I": 1, "Q": 2, "U": 3, "V": 4, "XX": -5}[p]
    assert not (tmp_path / "p-image.fits").exists()
    for kind, tol in (("dirty", 0.02), ("image", 0.02)):
        i, q, u, v = (img[p][kind][Y, X] for p in "IQUV")
        assert i == pytest.approx(I_, rel=tol), kind
        assert q / i == pytest.approx(Q_ / I_, rel=tol), kind  # fractional Q and U within 2 %
        assert u / i == pytest.approx(U_ / I_, rel=tol), kind
        chi = 0.5 * np.degrees(np.arctan2(u, q))
        assert abs(chi - 0.5 * np.degrees(np.arctan2(U_, Q_))) < 1.0, kind  # polarisation angle within 1 deg
    # V: no leakage injected, so noise: the source pixel is within 4 sigma of the V image's own noise
    vd = img["V"]["dirty"]
    sig_v = 1.4826 * np.median(np.abs(vd - np.median(vd)))
    assert abs(vd[Y, X]) < 4 * sig_v and np.abs(vd).max() < 6 * sig_v
    # the correlation product: XX = I + Q in the dirty images (same weights: XX's are not Stokes I's)
    assert img["XX"]["dirty"][Y, X] == pytest.approx(I_ + Q_, rel=0.02)
    # --join-polarizations: peaks in the sum of squares, the same components in every product
    r = run_pipeline(tmp_path, "j", [*common, "--pol", "IQUV", "--join-polarizations", "--niter", "200",
                                     "--auto-threshold", "3"], env_cli)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_summary(tmp_path, "j")["joined_polarisations"] is True
    models = {p: fits.getdata(tmp_path / f"j-{p}-model.fits").squeeze() for p in "IQUV"}
    support = {p: set(zip(*np.nonzero(models[p]), strict=True)) for p in "IQUV"}
    assert (Y, X) in support["I"] and support["I"] == support["Q"] == support["U"] == support["V"]
    i, q, u, v = (fits.getdata(tmp_path / f"j-{p}-image.fits").squeeze()[Y, X] for p in "IQUV")
    assert q / i == pytest.approx(Q_ / I_, rel=0.02) and u / i == pytest.approx(U_ / I_, rel=0.02)
    assert abs(0.5 * np.degrees(np.arctan2(u, q) - np.arctan2(U_, Q_))) < 1.0
    # a product the data cannot form: one line, exit 2, before any cluster starts
    r = run_pipeline(tmp_path, "bad", [*common, "--pol", "I,RR"], env_cli)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if "--pol RR needs correlations RR" in x]
    assert len(lines) == 1 and "pol.store" in lines[0]
