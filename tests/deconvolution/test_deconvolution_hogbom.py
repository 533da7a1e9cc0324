"""Hogbom / multiscale / MFS minor cycles on images with an exactly known PSF."""

import numpy as np
import pytest

from arl_mpi.deconvolution import (
    CleanParams,
    hogbom,
    mad_sigma,
    mfs_clean,
    multiscale,
    spectral_index,
)
from arl_mpi.deconvolution.common import convolve_same, patch_slices

N = 96


def psf_img(n, width=2.0, ring=7.0):
    y, x = np.mgrid[0:n, 0:n] - n // 2
    r = np.hypot(x, y * 1.3)
    p = np.exp(-(r**2) / (2 * width**2)) + 0.15 * np.cos(r / ring * np.pi) * np.exp(-r / 20)
    return p / p[n // 2, n // 2]


def sky_points():
    sky = np.zeros((N, N))
    sky[20, 30] = 1.0
    sky[60, 70] = 0.6
    sky[48, 48] = 0.3
    sky[90, 5] = 0.5  # near the edge
    return sky


def naive_hogbom(d, psf, niter, gain=0.1):
    r = d.copy()
    m = np.zeros_like(d)
    for _ in range(niter):
        y, x = np.unravel_index(np.argmax(np.abs(r)), r.shape)
        a = gain * r[y, x]
        m[y, x] += a
        si, sp = patch_slices(y, x, r.shape, psf.shape)
        r[si] -= a * psf[sp]
    return m, r


@pytest.mark.parametrize("psf_n", [N, 2 * N, 41])
def test_matches_naive_reference(psf_n):
    psf = psf_img(psf_n)
    dirty = convolve_same(sky_points(), psf_img(2 * N))
    m1, r1, info = hogbom(dirty, psf, CleanParams(niter=400, double=True))
    m2, r2 = naive_hogbom(dirty, psf / psf[psf_n // 2, psf_n // 2], 400)
    assert info["niter"] == 400 and info["stop_reason"] == "niter"
    np.testing.assert_allclose(m1, m2, atol=1e-12)
    np.testing.assert_allclose(r1, r2, atol=1e-12)
    # single precision working residual agrees to float32 accuracy
    m3, r3, _ = hogbom(dirty, psf, CleanParams(niter=400))
    np.testing.assert_allclose(r3, r2, atol=1e-5)


def test_exact_psf_recovers_sky():
    sky = sky_points()
    dirty = convolve_same(sky, psf_img(2 * N))
    model, resid, info = hogbom(
        dirty, psf_img(2 * N), CleanParams(niter=5000, threshold=1e-4, double=True)
    )
    assert info["stop_reason"] == "threshold"
    assert info["peak"] <= 1e-4
    np.testing.assert_allclose(model, sky, atol=2e-3)
    assert model.sum() == pytest.approx(sky.sum(), abs=2e-3)


def test_stop_niter():
    dirty = convolve_same(sky_points(), psf_img(2 * N))
    model, _, info = hogbom(dirty, psf_img(N), CleanParams(niter=7))
    assert info["niter"] == 7 and info["stop_reason"] == "niter"
    assert np.count_nonzero(model) <= 7
    # 3 components all land on the brightest pixel, whose residual decays by (1 - gain)
    model3, _, info3 = hogbom(dirty, psf_img(N), CleanParams(niter=3))
    assert info3["niter"] == 3 and np.count_nonzero(model3) == 1
    assert model3[20, 30] == pytest.approx(dirty[20, 30] * (1 - 0.9**3), rel=1e-6)


def test_stop_threshold():
    dirty = convolve_same(sky_points(), psf_img(2 * N))
    _, resid, info = hogbom(dirty, psf_img(N), CleanParams(niter=10000, threshold=0.05))
    assert info["stop_reason"] == "threshold"
    assert info["peak"] <= 0.05
    assert info["peak"] > 0.05 * 0.85  # did not overshoot by much
    assert np.abs(resid).max() == pytest.approx(info["peak"], rel=1e-6)


def test_stop_auto_threshold():
    rng = np.random.default_rng(0)
    noise = convolve_same(rng.normal(size=(N, N)), np.ones((1, 1)))  # white, sigma 1
    dirty = convolve_same(sky_points() * 20, psf_img(2 * N)) + noise
    _, resid, info = hogbom(dirty, psf_img(2 * N), CleanParams(niter=10000, auto_threshold=5.0))
    assert info["stop_reason"] == "auto_threshold"
    # sigma is the MAD noise of the *initial* residual
    assert info["sigma"] == pytest.approx(mad_sigma(dirty), rel=1e-12)
    assert info["sigma"] == pytest.approx(1.0, rel=0.3)
    assert info["threshold"] == pytest.approx(5.0 * info["sigma"])
    assert info["peak"] <= info["threshold"]
    # absolute threshold dominates when larger
    _, _, info2 = hogbom(
        dirty, psf_img(2 * N), CleanParams(niter=10000, auto_threshold=5.0, threshold=20.0)
    )
    assert info2["stop_reason"] == "threshold" and info2["peak"] <= 20.0


def test_stop_mgain():
    dirty = convolve_same(sky_points(), psf_img(2 * N))
    _, resid, info = hogbom(dirty, psf_img(N), CleanParams(niter=10000, mgain=0.5))
    assert info["stop_reason"] == "mgain"
    assert info["peak"] <= 0.5 * info["start_peak"]
    assert info["peak"] > 0.5 * info["start_peak"] * 0.85
    # repeated calls (as a major-cycle loop does) keep reducing the peak
    _, _, info2 = hogbom(resid, psf_img(N), CleanParams(niter=10000, mgain=0.5))
    assert info2["start_peak"] == pytest.approx(info["peak"], rel=1e-6)
    assert info2["peak"] <= 0.5 * info2["start_peak"]


def test_mask():
    dirty = convolve_same(sky_points(), psf_img(2 * N))
    mask = np.zeros((N, N), dtype=bool)
    mask[50:70, 60:80] = True  # only the 0.6 Jy source
    model, resid, info = hogbom(
        dirty, psf_img(2 * N), CleanParams(niter=2000, threshold=1e-3, mask=mask)
    )
    assert np.all(model[~mask] == 0)
    # sidelobes of the (unmasked, uncleaned) other sources bias it by ~0.01
    assert model[60, 70] == pytest.approx(0.6, abs=0.03)
    assert info["peak"] <= 1e-3  # peak is measured inside the mask
    assert np.abs(resid).max() > 0.5  # the unmasked brighter source remains


def test_multiscale_extended():
    y, x = np.mgrid[0:N, 0:N]
    blob = 0.05 * np.exp(-((x - 40) ** 2 + (y - 50) ** 2) / (2 * 5.0**2))
    sky = blob.copy()
    sky[20, 70] = 1.0
    psf = psf_img(2 * N)
    dirty = convolve_same(sky, psf)
    kw = dict(niter=3000, gain=0.2)
    model, resid, info = multiscale(
        dirty, psf, CleanParams(scales_px=[0, 6, 12, 24], threshold=5e-3, **kw)
    )
    assert info["stop_reason"] == "threshold"
    assert info["components_per_scale"][12.0] + info["components_per_scale"][24.0] > 0
    assert model.sum() == pytest.approx(sky.sum(), rel=0.01)
    assert model[15:26, 65:76].sum() == pytest.approx(1.0, abs=0.01)
    # Hogbom to the same threshold recovers less of the extended flux ...
    hmodel, _, _ = hogbom(dirty, psf, CleanParams(threshold=5e-3, **kw))
    assert sky.sum() - hmodel.sum() > 2 * abs(sky.sum() - model.sum())
    # ... and needs far more components to reach a 1% threshold
    _, _, minfo = multiscale(
        dirty, psf, CleanParams(scales_px=[0, 6, 12, 24], threshold=1e-2, **kw)
    )
    _, _, hinfo = hogbom(dirty, psf, CleanParams(threshold=1e-2, **kw))
    assert hinfo["niter"] > 2 * minfo["niter"]


def test_mfs_spectral_index():
    freqs = np.linspace(110e6, 150e6, 6)
    f0 = 130e6
    alphas = {(20, 30): -0.8, (60, 70): 0.5, (48, 48): -1.5}
    flux0 = {(20, 30): 1.0, (60, 70): 0.6, (48, 48): 0.4}
    cube, psfs = [], []
    for f in freqs:
        psf = psf_img(2 * N, width=2.0 * f0 / f)  # beam shrinks with frequency
        sky = np.zeros((N, N))
        for p, a in alphas.items():
            sky[p] = flux0[p] * (f / f0) ** a
        cube.append(convolve_same(sky, psf))
        psfs.append(psf)
    params = CleanParams(niter=3000, threshold=1e-4, scales_px=(0,))
    models, resid, info = mfs_clean(np.array(cube), np.array(psfs), freqs, f0, 3, params)
    assert models.shape == (3, N, N) and resid.shape == (3, N, N)
    alpha = spectral_index(models[0], models[1], 0.05)
    for p, a in alphas.items():
        # model[0] is I(f0) up to the Taylor truncation
        assert models[0][p] == pytest.approx(flux0[p], rel=0.02)
        assert alpha[p] == pytest.approx(a, abs=0.05)
    assert np.isnan(alpha[0, 0])


def test_psf_support_equals_cropped_psf():
    psf = psf_img(2 * N)
    dirty = convolve_same(sky_points(), psf)
    c = N  # centre of the 2N PSF
    cropped = psf[c - 20 : c + 21, c - 20 : c + 21]
    m1, r1, _ = hogbom(dirty, psf, CleanParams(niter=200, psf_support=20, double=True))
    m2, r2 = naive_hogbom(dirty, cropped, 200)
    np.testing.assert_allclose(m1, m2, atol=1e-12)
    np.testing.assert_allclose(r1, r2, atol=1e-12)
    m3, _, _ = multiscale(
        dirty, psf, CleanParams(scales_px=[0], niter=200, psf_support=20, double=True)
    )
    np.testing.assert_allclose(m3, m2, atol=1e-12)


def naive_msmfs(resid_t, psf_q, scales, scale_bias, gain, niter):
    """Textbook MS-MFS: full criterion images every iteration, explicit convolutions."""
    from arl_mpi.deconvolution.common import scale_kernel

    nterms = resid_t.shape[0]
    kern = [scale_kernel(s) for s in scales]
    smax = max(scales) or 1.0
    bias = [1 - scale_bias * s / smax for s in scales]
    models = np.zeros_like(resid_t)
    c = psf_q.shape[1] // 2
    for _ in range(niter):
        # residual from scratch: R_t = dirty_t - sum_t' P_{t+t'} * model_t'
        r = np.array(
            [
                resid_t[t2] - sum(convolve_same(models[t], psf_q[t + t2]) for t in range(nterms))
                for t2 in range(nterms)
            ]
        )
        best = (-1, None)
        for s, k in enumerate(kern):
            rs = np.array([convolve_same(r[t], k) for t in range(nterms)])
            pss = [convolve_same(convolve_same(psf_q[q], k), k) for q in range(2 * nterms - 1)]
            h = np.array([[pss[a + b][c, c] for b in range(nterms)] for a in range(nterms)])
            a = np.einsum("tu,uyx->tyx", np.linalg.inv(h), rs)
            crit = np.sqrt(np.maximum(0, (a * rs).sum(0))) * bias[s]
            y, x = np.unravel_index(np.argmax(crit), crit.shape)
            if crit[y, x] > best[0]:
                best = (crit[y, x], (s, y, x, a[:, y, x]))
        s, y, x, a = best[1]
        si, sk = patch_slices(y, x, models.shape[1:], kern[s].shape)
        for t in range(nterms):
            models[t][si] += gain * a[t] * kern[s][sk]
    return models


@pytest.mark.parametrize("nterms", [1, 2])
def test_msmfs_matches_naive_reference(nterms):
    n = 48
    rng = np.random.default_rng(4)
    psf = psf_img(2 * n)
    sky = np.zeros((n, n))
    sky[10, 12], sky[30, 33], sky[40, 8] = 1.0, 0.7, 0.4
    y, x = np.mgrid[0:n, 0:n]
    sky += 0.03 * np.exp(-((x - 25) ** 2 + (y - 20) ** 2) / 18.0)
    if nterms == 1:
        dirty = convolve_same(sky, psf)[None]
        psf_q = psf[None]
    else:
        dirty = np.array([convolve_same(sky, psf), convolve_same(-0.3 * sky, 0.5 * psf)])
        psf_q = np.array([psf, 0.05 * psf_img(2 * n, width=2.5), 0.02 * psf])
    dirty += 1e-3 * rng.normal(size=dirty.shape)
    from arl_mpi.deconvolution.msmfs import _engine

    scales = [0, 4, 8]
    models, resid, info = _engine(dirty, psf_q, scales, 0.6, 0.2, 60, 0.0, None, None, None, True)
    ref = naive_msmfs(dirty, psf_q, scales, 0.6, 0.2, 60)
    assert info["niter"] == 60
    np.testing.assert_allclose(models, ref, atol=1e-9)
    # maintained residual equals the residual recomputed from the model
    for t2 in range(nterms):
        r = dirty[t2] - sum(convolve_same(models[t], psf_q[t + t2]) for t in range(nterms))
        np.testing.assert_allclose(resid[t2], r, atol=1e-9)
