"""End-to-end: simulate with the DFT, image with the serial major/minor loop, check fluxes.

Noise expectation. Each visibility gets complex Gaussian noise with standard deviation
``sigma_vis`` in both the real and the imaginary part, and natural weight
``w = 1 / sigma_vis^2``. A dirty-image pixel is ``sum_i w_i Re(V_i e^{i phi_i}) / sum_i w_i``;
``Re(n e^{i phi})`` has variance ``sigma_vis^2``, so the image noise is
``sigma_image^2 = sum_i w_i^2 sigma_i^2 / (sum_i w_i)^2 = 1 / sum_i w_i``, the same at every
pixel. The rms of the final residual image is compared with this value.
"""

import numpy as np
import pytest

from arl_mpi.deconvolution import CleanParams, mfs_clean, spectral_index
from arl_mpi.deconvolution.serial_loop import image_serial
from arl_mpi.imaging import dft_predict, invert, make_psf, pixel_to_lm


def make_uvw(nant, radius_m, hour_angles, dec, lat=-0.5235987755982988, seed=1):
    """Baselines (metres) of a random array tracking declination ``dec``."""
    rng = np.random.default_rng(seed)
    r = radius_m * np.sqrt(rng.uniform(size=nant))
    th = rng.uniform(0, 2 * np.pi, nant)
    east, north, up = r * np.cos(th), r * np.sin(th), rng.normal(scale=5.0, size=nant)
    xyz = np.stack(
        [-np.sin(lat) * north + np.cos(lat) * up, east, np.cos(lat) * north + np.sin(lat) * up]
    )
    i, j = np.triu_indices(nant, 1)
    bx, by, bz = xyz[:, j] - xyz[:, i]
    out = []
    for h in hour_angles:
        sh, ch, sd, cd = np.sin(h), np.cos(h), np.sin(dec), np.cos(dec)
        out.append(
            np.stack(
                [
                    sh * bx + ch * by,
                    -sd * ch * bx + sd * sh * by + cd * bz,
                    cd * ch * bx - cd * sh * by + sd * bz,
                ],
                axis=1,
            )
        )
    return np.concatenate(out)


NPIX = 256
CELL = 4e-4  # 5.9 degree field
SOURCES = [  # (x, y, flux Jy) on pixel centres, several near the field edge
    (128, 128, 3.0),
    (40, 60, 2.0),
    (200, 30, 1.5),
    (230, 220, 2.5),
    (20, 210, 1.2),
    (150, 90, 1.0),
    (90, 170, 1.8),
    (180, 150, 1.1),
    (60, 120, 1.4),
    (110, 235, 1.3),
]


def _centroid(model, x, y, r=3):
    sub = model[y - r : y + r + 1, x - r : x + r + 1]
    yy, xx = np.mgrid[y - r : y + r + 1, x - r : x + r + 1]
    flux = sub.sum()
    return flux, (sub * xx).sum() / flux, (sub * yy).sum() / flux


def test_serial_clean_point_sources():
    freq = np.array([130e6, 150e6])
    uvw = make_uvw(24, 700.0, np.radians(np.linspace(-60, 60, 12)), np.radians(-50.0))
    nrow = uvw.shape[0]
    xs, ys, fl = (np.array(c) for c in zip(*SOURCES, strict=True))
    l, m = pixel_to_lm(xs, ys, NPIX, NPIX, CELL)
    vis = dft_predict(l, m, np.repeat(fl[:, None], 2, axis=1), uvw, freq)
    sigma_vis = 0.12
    rng = np.random.default_rng(42)
    vis += sigma_vis * (rng.normal(size=vis.shape) + 1j * rng.normal(size=vis.shape))
    weight = np.full((nrow, 2), 1 / sigma_vis**2)
    flags = np.zeros((nrow, 2), dtype=bool)
    sigma_image = 1 / np.sqrt(weight.sum())

    out = image_serial(
        uvw, freq, vis, weight, flags, NPIX, CELL,
        weighting="natural", niter=20000, gain=0.1, mgain=0.8, auto_threshold=3.0,
        nmiter=12, algorithm="hogbom", epsilon=1e-5,
    )  # fmt: skip
    assert out["stop_reason"] == "auto_threshold"
    assert len(out["cycles"]) >= 2
    # every source is far above 10 sigma (weakest ~ 700 sigma_image)
    assert fl.min() > 500 * sigma_image
    for x, y, f in SOURCES:
        flux, cx, cy = _centroid(out["model"], x, y)
        assert flux == pytest.approx(f, rel=0.01), (x, y, flux, f)
        assert abs(cx - x) < 0.1 and abs(cy - y) < 0.1, (x, y, cx, cy)
        # restored image peak (Jy/beam) equals the point-source flux
        assert out["restored"][y, x] == pytest.approx(f, rel=0.01)
    rms = np.sqrt(np.mean(out["residual"] ** 2))
    assert rms == pytest.approx(sigma_image, rel=0.10), (rms, sigma_image)
    bmaj, bmin, _ = out["beam"]
    assert CELL < bmin <= bmaj < 10 * CELL


def test_mfs_spectral_indices_gridded():
    """MS-MFS on gridded per-channel images recovers spectral indices to +-0.05."""
    npix, cell = 128, 8e-4
    freqs = np.linspace(115e6, 145e6, 4)
    f0 = 130e6
    uvw = make_uvw(20, 600.0, np.radians(np.linspace(-50, 50, 8)), np.radians(-45.0), seed=3)
    uvw[:, 2] = 0.0  # isolate the spectral algorithm from w-term PSF variations
    srcs = [(64, 64, 2.0, -0.7), (30, 40, 1.5, -1.2), (100, 90, 1.0, 0.3), (80, 20, 0.8, -0.2)]
    xs, ys, s0, alpha = (np.array(c) for c in zip(*srcs, strict=True))
    l, m = pixel_to_lm(xs, ys, npix, npix, cell)
    flux = s0[:, None] * (freqs[None, :] / f0) ** alpha[:, None]
    vis = dft_predict(l, m, flux, uvw, freqs)
    nrow = uvw.shape[0]
    cube, psfs, wts = [], [], []
    for c in range(freqs.size):
        args = (uvw, freqs[c : c + 1], vis[:, c : c + 1], np.ones((nrow, 1)), None)
        d, sw = invert(*args, npix, npix, cell, epsilon=1e-6, double=True)
        p, _ = make_psf(
            *args[:2], args[3], None, 2 * npix, 2 * npix, cell, epsilon=1e-6, double=True
        )
        cube.append(d)
        psfs.append(p)
        wts.append(sw)
    params = CleanParams(niter=4000, gain=0.1, threshold=1e-3, scales_px=(0,))
    models, resid, info = mfs_clean(
        np.array(cube), np.array(psfs), freqs, f0, 2, params, channel_weights=np.array(wts)
    )
    assert info["stop_reason"] == "threshold"
    for x, y, f, a in srcs:
        t0 = models[0][y - 2 : y + 3, x - 2 : x + 3].sum()
        t1 = models[1][y - 2 : y + 3, x - 2 : x + 3].sum()
        assert t0 == pytest.approx(f, rel=0.02)
        assert t1 / t0 == pytest.approx(a, abs=0.05), (x, y, t1 / t0, a)
    amap = spectral_index(models[0], models[1], 0.1)
    assert amap[64, 64] == pytest.approx(-0.7, abs=0.05)


def test_serial_multiscale_extended():
    """Serial loop with multiscale: extended + point source, fewer components than Hogbom."""
    npix, cell = 128, 8e-4
    freq = np.array([140e6])
    uvw = make_uvw(24, 600.0, np.radians(np.linspace(-60, 60, 10)), np.radians(-45.0), seed=5)
    yy, xx = np.mgrid[0:npix, 0:npix]
    sky = 0.02 * np.exp(-((xx - 50) ** 2 + (yy - 70) ** 2) / (2 * 4.0**2))
    sky[sky < 1e-4] = 0
    sky[30, 90] = 1.0
    ys, xs = np.nonzero(sky)
    l, m = pixel_to_lm(xs, ys, npix, npix, cell)
    vis = dft_predict(l, m, sky[ys, xs][:, None], uvw, freq)
    w = np.ones(vis.shape)
    kw = dict(niter=3000, gain=0.2, mgain=0.8, threshold=2e-3, nmiter=10, epsilon=1e-5)
    ms = image_serial(
        uvw, freq, vis, w, None, npix, cell, algorithm="multiscale", scales_px=[0, 6, 12], **kw
    )
    hb = image_serial(uvw, freq, vis, w, None, npix, cell, algorithm="hogbom", **kw)
    assert ms["stop_reason"] == "threshold" and hb["stop_reason"] == "threshold"
    assert np.abs(ms["residual"]).max() <= 2e-3
    # point source within 1 %, extended flux within 7 % (the rest is below the threshold)
    assert ms["model"][27:34, 87:94].sum() == pytest.approx(1.0, rel=0.01)
    assert ms["model"][55:85, 35:65].sum() == pytest.approx(sky[55:85, 35:65].sum(), rel=0.07)
    n_ms = sum(c["niter"] for c in ms["cycles"])
    n_hb = sum(c["niter"] for c in hb["cycles"])
    assert n_hb > 2 * n_ms
    assert sum(c["components_per_scale"][12.0] for c in ms["cycles"]) > 0
