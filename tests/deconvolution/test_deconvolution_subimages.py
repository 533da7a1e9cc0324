"""Sub-image (parallel) deconvolution against the serial minor cycle, exact image-domain PSF.

The "major cycle" is ``residual = dirty - psf * model`` by FFT convolution with a PSF twice the
image size (:func:`clean_image_domain`), so every difference from the injected sky comes from
the minor cycles. Tiles are 64 px on a 128 px image, so rows/columns 63|64 are tile borders.
"""

import pickle

import numpy as np
import pytest

from arl_mpi.deconvolution import CleanParams, CleanSettings, deconvolve_cube
from arl_mpi.deconvolution.common import convolve_same
from arl_mpi.deconvolution.serial_loop import clean_image_domain
from arl_mpi.deconvolution.subimages import (
    Tile,
    cut_psf,
    global_threshold,
    parallel_minor_cycle,
    plan_subimages,
    psf_fwhm_px,
    share_niter,
    subimage_task,
)
from arl_mpi.errors import ConfigError

N = 128
MAXSIZE = 64
# (y, x): flux. On the horizontal border (row 64 / 63), the vertical border (col 64 / 63),
# the corner of all four tiles, and interior.
POINTS = {
    (64, 30): 1.0,
    (63, 90): 0.8,
    (30, 64): 0.7,
    (100, 63): 0.6,
    (64, 64): 0.9,
    (20, 20): 0.5,
    (100, 100): 0.4,
    (40, 100): 0.3,
}


def psf_img(n, width=2.0, ring=7.0):
    y, x = np.mgrid[0:n, 0:n] - n // 2
    r = np.hypot(x, y * 1.3)
    p = np.exp(-(r**2) / (2 * width**2)) + 0.15 * np.cos(r / ring * np.pi) * np.exp(-r / 20)
    return p / p[n // 2, n // 2]


def box(img, y, x, r=2):
    return img[y - r : y + r + 1, x - r : x + r + 1].sum()


def point_sky():
    sky = np.zeros((N, N))
    for p, f in POINTS.items():
        sky[p] = f
    return sky


@pytest.mark.parametrize(
    "ny,nx,maxsize,margin", [(128, 128, 64, 8), (100, 37, 30, 5), (7, 9, 64, 3)]
)
def test_plan_partitions_the_image(ny, nx, maxsize, margin):
    tiles = plan_subimages(ny, nx, maxsize, margin)
    owned = np.zeros((ny, nx), dtype=int)
    for t in tiles:
        y0, y1, x0, x1 = t.owned
        assert 0 < y1 - y0 <= maxsize and 0 < x1 - x0 <= maxsize
        owned[t.owned_slices] += 1
        wy0, wy1, wx0, wx1 = t.work
        assert (wy0, wx0) == (max(0, y0 - margin), max(0, x0 - margin))
        assert (wy1, wx1) == (min(ny, y1 + margin), min(nx, x1 + margin))
        # owned box seen from the work box
        work = np.zeros((ny, nx), dtype=bool)
        work[t.work_slices] = True
        assert work[t.work_slices][t.owned_in_work].all()
    assert np.all(owned == 1)  # every pixel owned exactly once
    assert len(tiles) == -(-ny // maxsize) * -(-nx // maxsize)
    with pytest.raises(ConfigError):
        plan_subimages(ny, nx, 0)


def test_share_niter():
    s = share_niter([10, 0, 30, 1], 100, [1.0, 0.0, 2.0, 0.5])
    assert s.sum() == 100 and s[1] == 0 and s[3] >= 1
    assert s[2] / s[0] == pytest.approx(3.0, rel=0.1)
    # fewer components than active tiles: the brightest tiles get one each
    np.testing.assert_array_equal(share_niter([5, 5, 5], 2, [0.1, 0.9, 0.5]), [0, 1, 1])
    assert share_niter([0, 0], 10, [0, 0]).sum() == 0
    assert share_niter([3, 4], 0, [1, 1]).sum() == 0


def test_global_threshold_uses_global_peak():
    p = CleanParams(threshold=0.01, auto_threshold=3.0, mgain=0.8)
    assert global_threshold(1.0, 0.001, p) == (pytest.approx(0.2), "mgain")
    assert global_threshold(0.02, 0.01, p) == (pytest.approx(0.03), "auto_threshold")
    assert global_threshold(0.02, 0.001, p) == (0.01, "threshold")


def test_cut_psf_covers_work_box_offsets():
    psf = psf_img(2 * N)
    c = cut_psf(psf, 40, 50)
    assert c.shape == (79, 99)
    assert c[39, 49] == psf[N, N] == 1.0
    np.testing.assert_array_equal(c, psf[N - 39 : N + 40, N - 49 : N + 50])
    assert psf_fwhm_px(psf) == pytest.approx(6.0, abs=1.0)


@pytest.mark.parametrize("algorithm", ["hogbom", "multiscale"])
def test_one_tile_equals_serial_minor_cycle(algorithm):
    """One tile covering the image (cut PSF, keep mask, global threshold) is the serial cycle."""
    psf = psf_img(2 * N)[None]
    dirty = convolve_same(point_sky(), psf[0])[None]
    cs = CleanSettings(
        algorithm=algorithm, niter=150, mgain=0.7, threshold=1e-3, scales_px=[0, 4], double=True
    )
    ref, rinfo = deconvolve_cube(dirty, psf, np.ones(1), None, cs, 0, 1)
    upd, info = parallel_minor_cycle(dirty, psf, cs, N)
    assert info["subimages"] == [[0, N, 0, N]]
    assert info["niter"] == rinfo["niter"] > 0
    np.testing.assert_allclose(upd, ref, atol=1e-12)


def test_subimage_task_is_picklable_and_offset_exact():
    """A corner tile's components equal Hogbom's on the same cut-out with the full PSF."""
    psf = psf_img(2 * N)[None]
    dirty = convolve_same(point_sky(), psf[0])[None]
    tile = plan_subimages(N, N, MAXSIZE, 10)[3]
    assert tile == Tile(3, (64, 128, 64, 128), (54, 128, 54, 128))
    params = CleanParams(gain=0.1, double=True)
    args = (dirty[:, tile.work_slices[0], tile.work_slices[1]], psf, tile, params, 0.05, 80)
    fn, args2 = pickle.loads(pickle.dumps((subimage_task, args)))
    upd, info = fn(*args2)
    from arl_mpi.deconvolution import hogbom

    keep = np.zeros(tile.work_shape, dtype=bool)
    keep[tile.owned_in_work] = True
    ref, _, rinfo = hogbom(args[0][0], psf[0], params.replace(niter=80, threshold=0.05), keep=keep)
    np.testing.assert_allclose(upd[0], ref, atol=1e-12)
    assert info["niter"] == rinfo["kept"] and info["iterations"] == rinfo["niter"] <= 80
    assert np.all(upd[0][~keep] == 0)
    assert box(upd[0], 100 - 54, 100 - 54) > 0.3  # the interior 0.4 Jy source is in this tile


def test_first_cycle_border_sources_not_cleaned_twice():
    """In one mgain-limited cycle, border sources get the serial flux; without a margin the
    neighbouring tile cleans the main lobe too and the flux is doubled."""
    psf = psf_img(2 * N)[None]
    dirty = convolve_same(point_sky(), psf[0])[None]
    cs = CleanSettings(niter=5000, mgain=0.8, threshold=1e-3)
    ref, _ = deconvolve_cube(dirty, psf, np.ones(1), None, cs, 0, 1)
    upd, info = parallel_minor_cycle(dirty, psf, cs, MAXSIZE)
    assert info["stop_reason"] == "mgain" and len(info["subimages"]) == 4
    assert info["threshold"] == pytest.approx(0.2 * info["start_peak"])
    bare, _ = parallel_minor_cycle(dirty, psf, cs, MAXSIZE, margin=0)
    for y, x in [(64, 30), (63, 90), (100, 63), (64, 64)]:
        assert box(upd[0], y, x) == pytest.approx(box(ref[0], y, x), rel=0.05), (y, x)
        assert box(bare[0], y, x) > 1.5 * box(ref[0], y, x), (y, x)


def test_hogbom_border_points_full_loop():
    psf = psf_img(2 * N)[None]
    sky = point_sky()
    dirty = convolve_same(sky, psf[0])[None]
    cs = CleanSettings(niter=5000, gain=0.1, mgain=0.8, threshold=1e-3, nmiter=30)
    ser = clean_image_domain(dirty, psf, cs)
    par = clean_image_domain(dirty, psf, cs, maxsize=MAXSIZE)
    assert ser["stop_reason"] == par["stop_reason"] == "threshold"
    assert np.abs(par["residual"]).max() <= 1e-3
    for (y, x), f in POINTS.items():
        fp, fs = box(par["model"][0], y, x), box(ser["model"][0], y, x)
        assert fp == pytest.approx(fs, rel=0.01), (y, x)
        assert fp == pytest.approx(f, rel=0.01), (y, x)
    # nothing cleaned twice or lost: total flux, and no flux away from the sources
    assert par["model"].sum() == pytest.approx(sky.sum(), rel=0.01)
    away = np.ones((N, N), dtype=bool)
    for y, x in POINTS:
        away[y - 2 : y + 3, x - 2 : x + 3] = False
    assert np.abs(par["model"][0][away]).sum() < 0.01 * sky.sum()
    assert all(len(c["subimages"]) == 4 for c in par["cycles"])


def test_multiscale_source_across_border():
    psf = psf_img(2 * N)[None]
    y, x = np.mgrid[0:N, 0:N]
    blob = 0.05 * np.exp(-((x - 64) ** 2 + (y - 50) ** 2) / (2 * 5.0**2))  # across col 63|64
    sky = blob.copy()
    sky[20, 100] = 1.0
    sky[64, 30] = 0.5
    dirty = convolve_same(sky, psf[0])[None]
    cs = CleanSettings(
        algorithm="multiscale", niter=3000, gain=0.2, mgain=0.8, threshold=2e-3, nmiter=30,
        scales_px=[0, 6, 12],
    )  # fmt: skip
    ser = clean_image_domain(dirty, psf, cs)
    par = clean_image_domain(dirty, psf, cs, maxsize=MAXSIZE)
    assert par["stop_reason"] in ("threshold", "no_progress")
    assert np.abs(par["residual"]).max() <= 2.5e-3
    assert sum(c["components_per_scale"][12.0] for t in par["cycles"] for c in t["tiles"]) > 0
    mp, ms = par["model"][0], ser["model"][0]
    blob_box = (slice(30, 71), slice(44, 85))
    assert mp[blob_box].sum() == pytest.approx(ms[blob_box].sum(), rel=0.01)
    assert mp[blob_box].sum() == pytest.approx(blob[blob_box].sum(), rel=0.02)
    for (py, px), f in {(20, 100): 1.0, (64, 30): 0.5}.items():
        assert box(mp, py, px, 5) == pytest.approx(box(ms, py, px, 5), rel=0.01)
        assert box(mp, py, px, 5) == pytest.approx(f, rel=0.02)
    assert mp.sum() == pytest.approx(ms.sum(), rel=0.01)
    assert mp.sum() == pytest.approx(sky.sum(), rel=0.02)


def test_taylor_terms_across_borders():
    freqs = np.array([120e6, 160e6])
    f0 = 140e6
    srcs = {
        (64, 30): (1.0, -0.7),
        (30, 64): (0.7, 0.5),
        (64, 64): (0.9, -1.0),
        (100, 100): (0.4, 0.0),
    }
    cube, psfs = [], []
    for f in freqs:
        p = psf_img(2 * N, width=2.0 * f0 / f)
        s = np.zeros((N, N))
        for pos, (a, al) in srcs.items():
            s[pos] = a * (f / f0) ** al
        cube.append(convolve_same(s, p))
        psfs.append(p)
    cube, psfs = np.array(cube), np.array(psfs)
    cs = CleanSettings(niter=5000, gain=0.1, mgain=0.8, threshold=1e-3, nmiter=30)
    ser = clean_image_domain(cube, psfs, cs, freqs=freqs, nterms=2)
    par = clean_image_domain(cube, psfs, cs, freqs=freqs, nterms=2, maxsize=MAXSIZE)
    assert par["stop_reason"] == "threshold" and par["taylor"].shape == (2, N, N)
    assert par["cycles"][0]["ref_freq"] == pytest.approx(f0)
    for (y, x), (f, alpha) in srcs.items():
        i0p, i0s = box(par["taylor"][0], y, x), box(ser["taylor"][0], y, x)
        assert i0p == pytest.approx(i0s, rel=0.01), (y, x)
        # Taylor-0 is I(f0) up to the truncation of the two-term expansion
        assert i0p == pytest.approx(f, rel=0.03), (y, x)
        assert box(par["taylor"][1], y, x) / i0p == pytest.approx(alpha, abs=0.05), (y, x)
    # per-channel model is the Taylor expansion
    x_c = (freqs - f0) / f0
    np.testing.assert_allclose(
        par["model"][1], par["taylor"][0] + x_c[1] * par["taylor"][1], atol=1e-12
    )


def test_niter_respected_globally():
    psf = psf_img(2 * N)[None]
    dirty = convolve_same(point_sky(), psf[0])[None]
    cs = CleanSettings(niter=37, gain=0.1, mgain=0.5, threshold=1e-4, nmiter=50)
    par = clean_image_domain(dirty, psf, cs, maxsize=32)  # 16 tiles
    assert par["stop_reason"] == "niter"
    assert par["niter"] == sum(c["niter"] for c in par["cycles"]) <= 37
    n_model = np.count_nonzero(par["model"])
    assert 0 < n_model <= 37
    done = 0
    for c in par["cycles"]:
        # the shares (subtractions, margins included) never exceed the remaining budget
        assert c["iterations"] <= sum(t["share"] for t in c["tiles"]) <= 37 - done
        assert all(t["niter"] <= t["iterations"] <= t["share"] for t in c["tiles"])
        done += c["niter"]
    # a budget smaller than the number of active tiles goes to the brightest tiles
    upd, info = parallel_minor_cycle(dirty, psf, cs.__class__(niter=2, mgain=0.99), 32)
    assert info["iterations"] <= 2 and np.count_nonzero(upd) <= 2
    assert info["stop_reason"] == "niter"
