"""``--predict`` (WSClean's -predict): model visibilities from a model FITS image, against a DFT."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run_pipeline, small_meta, small_visibility

from arl_mpi.errors import InputError
from arl_mpi.imaging.dft import dft_predict, pixel_to_lm
from arl_mpi.io.fits import read_fits, write_fits
from arl_mpi.io.store import open_store, read_partition, write_store
from arl_mpi.models import Image, image_wcs
from arl_mpi.pipeline.predict import check_model_wcs, stokes_i_correlations

N, SCALE = 64, 60.0
CELL = np.deg2rad(SCALE / 3600)
# (y, x, Jy): off-centre components, one near the edge, so that the w-term and the position matter
SOURCES = [(32, 32, 1.5), (12, 40, -0.4), (50, 9, 0.8)]


def _model_image(vis, n=N, cell=CELL, centre=None) -> Image:
    data = np.zeros((1, 1, n, n))
    for y, x, f in SOURCES:
        data[0, 0, y, x] = f
    wcs = image_wcs(centre or vis.phase_centre, n, n, cell, float(vis.frequency.mean()), 1e6, ["I"])
    return Image(data=data, wcs=wcs, bunit="JY/PIXEL")


def test_model_wcs_must_match_the_image():
    vis = small_visibility(nrow=4, nchan=2, pols=("XX", "YY"))
    img = _model_image(vis)
    check_model_wcs(img, "m.fits", N, N, CELL, vis.phase_centre)  # matches: no error
    cases = [((N + 2, N, CELL, vis.phase_centre), "size 64x64"),
             ((N, N, CELL * 1.01, vis.phase_centre), "pixel"),
             ((N, N, CELL, vis.phase_centre.directional_offset_by(0, CELL * 3)), "reference")]  # fmt: skip
    for args, what in cases:
        with pytest.raises(InputError, match=f"m.fits: model WCS does not match the image: {what}") as e:
            check_model_wcs(img, "m.fits", *args)
        assert "\n" not in str(e.value)
    q = Image(data=img.data, wcs=image_wcs(vis.phase_centre, N, N, CELL, 1e8, 1e6, ["Q"]), bunit="JY/PIXEL")
    with pytest.raises(InputError, match="only a Stokes I model"):
        check_model_wcs(q, "m.fits", N, N, CELL, vis.phase_centre)


def test_stokes_i_correlations():
    v = np.array([[1 + 2j, 3j]])
    lin = stokes_i_correlations(v, ["XX", "XY", "YX", "YY"])
    np.testing.assert_array_equal(lin[..., 0], v)
    np.testing.assert_array_equal(lin[..., 3], v)
    assert not lin[..., 1:3].any()
    circ = stokes_i_correlations(v, ["RR", "RL", "LR", "LL"])
    np.testing.assert_array_equal(circ[..., [0, 3]], np.stack([v, v], -1))


def _dft_of_model(img: Image, uvw, freq, nchan_total):
    """DFT of every non-zero pixel of a model cube, each channel from its --channels-out plane."""
    planes = img.data[:, 0]
    ys, xs = np.nonzero(np.any(planes != 0, axis=0))
    l, m = pixel_to_lm(xs, ys, N, N, CELL)
    plane = np.arange(freq.size) * planes.shape[0] // nchan_total
    return dft_predict(l, m, planes[plane][:, ys, xs].T, uvw, freq)


def test_clean_source_list_then_predict_into_store_and_ms(tmp_path, env_cli):
    """CLEAN with --save-source-list, then --predict from PREFIX-model.fits (WSClean's default) into
    PREFIX-predict.store and the MS's MODEL_DATA, both against a DFT of the model."""
    tables = pytest.importorskip("casacore.tables", reason="python-casacore (arl_mpi[ms]) not installed")
    from arl_mpi.io.ms import write_ms
    from arl_mpi.io.sourcelist import read_source_list

    vis = small_visibility(nrow=300, nchan=4, pols=("XX", "XY", "YX", "YY"), seed=3)
    for y, x, f in SOURCES:  # sources on top of the noise, with a spectral slope
        l, m = pixel_to_lm(x, y, N, N, CELL)
        v = dft_predict(np.array([l]), np.array([m]), np.array([f * (vis.frequency / 1.1e8)]), vis.uvw,
                        vis.frequency)
        vis.vis[..., 0] += v.astype(np.complex64)
        vis.vis[..., 3] += v.astype(np.complex64)
    store = write_store(tmp_path / "obs.store", small_meta(vis), vis, ntime_parts=2)
    ms = write_ms(store, tmp_path / "obs.ms")
    with tables.table(str(ms), ack=False) as t:
        data_before = t.getcol("DATA")
        assert "MODEL_DATA" not in t.colnames()
    common = ["--size", str(N), str(N), "--scale", f"{SCALE}asec", "--workers", "1", "--time-partitions", "2",
              "--no-dashboard", "--no-png", "--epsilon", "1e-7", "--double"]
    r = run_pipeline(tmp_path, "p", ["--vis", str(ms), "--niter", "40", "--channels-out", "2", "--save-source-list",
                                     *common], env_cli)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    img = read_fits(tmp_path / "p-model.fits")
    planes = img.data[:, 0]
    assert planes.shape[0] == 2 and np.count_nonzero(np.any(planes != 0, axis=0)) >= 3
    # the source list: one component per non-zero model pixel, at that pixel, with the planes' fluxes
    comps = read_source_list(tmp_path / "p-sources.txt")
    assert len(comps) == np.count_nonzero(np.any(planes != 0, axis=0))
    freqs = img.wcs.sub([3]).pixel_to_world_values(np.arange(2))
    for c in comps:
        px, py = img.wcs.celestial.world_to_pixel_values(c.ra_deg, c.dec_deg)
        x, y = int(round(float(px))), int(round(float(py)))
        assert abs(px - x) < 1e-4 and abs(py - y) < 1e-4
        assert len(c.terms) == 1  # --fit-spectral-pol 2: I at the reference frequency and one linear term
        np.testing.assert_allclose(c.flux_at(freqs), planes[:, y, x], rtol=1e-9, atol=1e-12)
    assert sum(c.flux for c in comps) == pytest.approx(planes.sum(axis=(1, 2)).mean(), rel=1e-9)
    # --predict reads p-model.fits (no --predict-model), writes p-predict.store and MODEL_DATA
    r = run_pipeline(tmp_path, "p", ["--vis", str(ms), "--predict", "--write-model-data", *common], env_cli)
    assert r.returncode == 0, r.stderr[-3000:]
    peak = float(np.abs(planes).sum(axis=(1, 2)).max())
    pred = open_store(tmp_path / "p-predict.store")
    assert len(pred.partitions) == 2
    for pid in range(2):
        v = read_partition(pred, pid)
        ref = _dft_of_model(img, v.uvw, v.frequency, 4)
        for k in (0, 3):  # XX = YY = I; flagged samples 0, as WSClean's -predict writes them
            good = ~v.flags[..., k]
            assert np.abs(v.vis[..., k] - ref)[good].max() < 1e-5 * peak
            assert good.mean() > 0.8 and not v.vis[..., k][~good].any()
        assert not v.vis[..., 1:3].any()
    with tables.table(str(ms), ack=False) as t:  # the same, row by row; nothing else changed
        model, uvw, flags = t.getcol("MODEL_DATA"), t.getcol("UVW"), t.getcol("FLAG")
        np.testing.assert_array_equal(t.getcol("DATA"), data_before)
    ref = _dft_of_model(img, uvw, vis.frequency, 4)
    for k in (0, 3):
        assert np.abs(model[..., k] - ref)[~flags[..., k]].max() < 1e-5 * peak
        assert not model[..., k][flags[..., k]].any()
    assert not model[..., 1:3].any()
    # a model whose WCS is not the image's: one line, exit 2, nothing written
    write_fits(tmp_path / "sky-model.fits", _model_image(vis))
    r = run_pipeline(tmp_path, "bad", ["--vis", str(tmp_path / "obs.store"), "--predict", "--predict-model",
                                       str(tmp_path / "sky-model.fits"), *common[3:], "--size", "128", "128"],
                     env_cli)  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    err = [line for line in r.stderr.splitlines() if "model WCS does not match" in line]
    assert len(err) == 1 and "sky-model.fits" in err[0] and "size 64x64 (the image is 128x128)" in err[0]
    assert not (tmp_path / "bad-predict.store").exists()
