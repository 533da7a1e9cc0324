"""Gridded invert/predict against the exact DFT, adjointness, normalisation, partitions."""

import numpy as np
import pytest

from arl_mpi.imaging import (
    apply_weighting,
    dft_invert,
    dft_predict,
    grid_weight_density,
    invert,
    invert_unnormalised,
    make_psf,
    pixel_to_lm,
    predict,
    psf_unnormalised,
)


def make_uvw(nant, radius_m, hour_angles, dec, lat=-0.5235987755982988, seed=1):
    """Baselines (metres) of a random planar-ish array tracking declination ``dec``."""
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
        u = sh * bx + ch * by
        v = -sd * ch * bx + sd * sh * by + cd * bz
        w = cd * ch * bx - cd * sh * by + sd * bz
        out.append(np.stack([u, v, w], axis=1))
    return np.concatenate(out)


# wide field at low frequency: 128 px * 6e-4 rad = 4.4 deg, baselines up to ~1.4 km
NPIX = 128
CELL = 6e-4
FREQ = np.array([110e6, 140e6])
UVW = make_uvw(16, 700.0, np.radians(np.linspace(-40, 40, 6)), np.radians(-60.0))
NROW = UVW.shape[0]
# sources near the field edge (pixel x, y) and fluxes
SRC_XY = np.array([[10, 12], [117, 20], [64, 64], [30, 115], [100, 100]])
SRC_FLUX = np.array([1.0, 0.7, 0.5, 0.8, 0.3])


def _sources():
    l, m = pixel_to_lm(SRC_XY[:, 0], SRC_XY[:, 1], NPIX, NPIX, CELL)
    return l, m


def _vis():
    l, m = _sources()
    flux = np.repeat(SRC_FLUX[:, None], FREQ.size, axis=1)
    return dft_predict(l, m, flux, UVW, FREQ)


def test_w_terms_are_significant():
    from arl_mpi.constants import SPEED_OF_LIGHT as C_LIGHT

    l, m = _sources()
    wmax = np.abs(UVW[:, 2]).max() * FREQ.max() / C_LIGHT
    nm1 = np.sqrt(1 - l**2 - m**2) - 1
    # w phase at the field edge exceeds a quarter turn (~2 rad here)
    assert wmax * np.abs(nm1).max() > 0.25


@pytest.mark.parametrize("scheme,robust", [("natural", 0.0), ("uniform", 0.0), ("briggs", 0.5)])
def test_invert_matches_dft(scheme, robust):
    vis = _vis()
    rng = np.random.default_rng(3)
    weight = rng.uniform(0.5, 1.5, size=(NROW, FREQ.size))
    flags = rng.uniform(size=(NROW, FREQ.size)) < 0.05
    dens = grid_weight_density(UVW, FREQ, weight, flags, NPIX, NPIX, CELL)
    wgt = apply_weighting(
        UVW, FREQ, weight, flags, dens, scheme, robust, cell=CELL, npix_x=NPIX, npix_y=NPIX
    )
    ref = dft_invert(UVW, FREQ, vis, wgt, flags, NPIX, NPIX, CELL)
    img, sumwt = invert(UVW, FREQ, vis, wgt, flags, NPIX, NPIX, CELL, epsilon=1e-5, double=True)
    assert sumwt == pytest.approx(np.sum(wgt[~flags]), rel=1e-12)
    peak = np.abs(ref).max()
    err = np.abs(img - ref).max() / peak
    assert err < 1e-4, err
    # the source peaks are where the conventions say they are
    for x, y in SRC_XY:
        assert img[y, x] == pytest.approx(ref[y, x], abs=1e-4 * peak)
    # and without w-gridding the error is much larger (w-terms matter here)
    img_now, _ = invert(
        UVW,
        FREQ,
        vis,
        wgt,
        flags,
        NPIX,
        NPIX,
        CELL,
        epsilon=1e-5,
        double=True,
        do_wgridding=False,
    )
    assert np.abs(img_now - ref).max() / peak > 100 * err


def test_predict_matches_dft():
    l, m = _sources()
    model = np.zeros((NPIX, NPIX))
    model[SRC_XY[:, 1], SRC_XY[:, 0]] = SRC_FLUX
    ref = dft_predict(l, m, np.repeat(SRC_FLUX[:, None], 2, axis=1), UVW, FREQ)
    vis = predict(UVW, FREQ, model, CELL, epsilon=1e-5, double=True)
    assert vis.dtype == np.complex128
    err = np.abs(vis - ref).max() / np.abs(ref).max()
    assert err < 1e-4, err
    vis32 = predict(UVW, FREQ, model, CELL, epsilon=1e-4)
    assert vis32.dtype == np.complex64
    assert np.abs(vis32 - ref).max() / np.abs(ref).max() < 1e-3


def test_adjoint():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(NPIX, NPIX))
    y = rng.normal(size=(NROW, 2)) + 1j * rng.normal(size=(NROW, 2))
    w = rng.uniform(0.1, 2.0, size=(NROW, 2))
    lhs = np.real(np.vdot(predict(UVW, FREQ, x, CELL, epsilon=1e-6, double=True), w * y))
    img, _ = invert_unnormalised(UVW, FREQ, y, w, None, NPIX, NPIX, CELL, epsilon=1e-6, double=True)
    rhs = np.sum(x * img)
    assert abs(lhs - rhs) / abs(lhs) < 1e-5


def test_unit_source_at_phase_centre():
    vis = np.ones((NROW, 2), dtype=np.complex64)
    wgt = np.random.default_rng(2).uniform(0.5, 2.0, size=(NROW, 2))
    img, sumwt = invert(UVW, FREQ, vis, wgt, None, NPIX, NPIX, CELL)  # single precision
    assert img.dtype == np.float64 and img.shape == (NPIX, NPIX)
    assert img[NPIX // 2, NPIX // 2] == pytest.approx(1.0, abs=1e-4)
    assert np.unravel_index(np.argmax(img), img.shape) == (NPIX // 2, NPIX // 2)
    psf, sw2 = make_psf(UVW, FREQ, wgt, None, NPIX, NPIX, CELL)
    assert psf[NPIX // 2, NPIX // 2] == 1.0 and sw2 == sumwt
    np.testing.assert_allclose(psf, img, atol=1e-4)
    raw, sw3 = psf_unnormalised(UVW, FREQ, wgt, None, NPIX, NPIX, CELL)
    assert raw[NPIX // 2, NPIX // 2] == pytest.approx(sumwt, rel=1e-4)


def test_non_square_and_flags_excluded():
    vis = _vis()
    weight = np.ones((NROW, 2))
    flags = np.zeros((NROW, 2), dtype=bool)
    flags[::3] = True
    corrupted = vis.copy()
    corrupted[flags] = 1e6  # flagged data must not leak in
    img, sw = invert(UVW, FREQ, corrupted, weight, flags, 96, 64, CELL, epsilon=1e-5, double=True)
    ref = dft_invert(UVW, FREQ, vis, weight, flags, 96, 64, CELL)
    assert img.shape == (64, 96)
    assert sw == np.sum(~flags)
    assert np.abs(img - ref).max() < 1e-4 * np.abs(ref).max()


def test_partition_sum():
    vis = _vis()
    rng = np.random.default_rng(5)
    weight = rng.uniform(0.5, 1.5, size=(NROW, 2))
    flags = rng.uniform(size=(NROW, 2)) < 0.1
    parts = np.array_split(rng.permutation(NROW), 3)
    img_sum = np.zeros((NPIX, NPIX))
    sw_sum = 0.0
    dens_sum = np.zeros((NPIX, NPIX))
    for p in parts:
        im, sw = invert_unnormalised(
            UVW[p], FREQ, vis[p], weight[p], flags[p], NPIX, NPIX, CELL, epsilon=1e-6, double=True
        )
        img_sum += im
        sw_sum += sw
        dens_sum += grid_weight_density(UVW[p], FREQ, weight[p], flags[p], NPIX, NPIX, CELL)
    full, sw_full = invert(
        UVW, FREQ, vis, weight, flags, NPIX, NPIX, CELL, epsilon=1e-6, double=True
    )
    assert sw_sum == pytest.approx(sw_full, rel=1e-12)
    np.testing.assert_allclose(img_sum / sw_sum, full, atol=1e-6 * np.abs(full).max())
    dens = grid_weight_density(UVW, FREQ, weight, flags, NPIX, NPIX, CELL)
    np.testing.assert_allclose(dens_sum, dens, rtol=1e-12, atol=1e-12)
    assert dens.sum() == pytest.approx(np.sum(weight[~flags]), rel=1e-12)


@pytest.mark.parametrize("double", [True, False])
def test_residual_in_one_call_chain_equals_invert_of_vis_minus_predict(double):
    """``residual_unnormalised`` (mask shared by both calls, in-place subtraction) is the
    residual ``invert(vis - predict(model))`` to float rounding, flagged and zero-weight samples
    excluded; a model of the true sources leaves a residual at the gridder's accuracy (DFT)."""
    from arl_mpi.imaging.gridding import residual_unnormalised

    vis = _vis()
    rng = np.random.default_rng(11)
    weight = rng.uniform(0.5, 1.5, size=(NROW, 2))
    weight[::7] = 0.0
    flags = rng.uniform(size=(NROW, 2)) < 0.1
    vis[flags] = 1e6  # flagged samples must not leak in
    model = np.zeros((NPIX, NPIX))
    model[SRC_XY[:, 1], SRC_XY[:, 0]] = 0.5 * SRC_FLUX
    eps = 1e-6 if double else 1e-4
    kw = {"epsilon": eps, "double": double, "sigma": (1.6, 1.7)}
    dtype = np.complex128 if double else np.complex64
    vis_in = vis.astype(dtype)
    before = vis_in.copy()
    res, sw = residual_unnormalised(UVW, FREQ, vis_in, model, weight, flags, CELL, **kw)
    np.testing.assert_array_equal(vis_in, before)  # input not modified
    ref, sw_ref = invert_unnormalised(UVW, FREQ, vis_in - predict(UVW, FREQ, model, CELL, **kw), weight, flags,
                                      NPIX, NPIX, CELL, **kw)
    assert sw == sw_ref == pytest.approx(np.sum(weight[~flags]), rel=1e-12 if double else 1e-6)
    assert res.dtype == np.float64 and res.shape == (NPIX, NPIX)
    assert np.abs(res - ref).max() < (1e-12 if double else 1e-5) * np.abs(ref).max()
    # physics: the residual of half the true fluxes is the DFT image of half the sources
    dft = dft_invert(UVW, FREQ, 0.5 * _vis(), weight, flags, NPIX, NPIX, CELL) * np.sum(weight[~flags])
    assert np.abs(res - dft).max() < (1e-4 if double else 2e-3) * np.abs(dft).max()


def test_default_oversampling_is_fixed_with_fallbacks():
    """The default sigma range is used where ducc0 has a kernel for it, else the 2.0 range, else
    ducc0 chooses (None); an explicit range is kept or dropped, never replaced."""
    from arl_mpi.imaging.gridspec import DEFAULT_SIGMA, FALLBACK_SIGMA, GridSpec

    assert GridSpec(64, 64, 1e-3, epsilon=1e-4).gridder_sigma == DEFAULT_SIGMA
    assert GridSpec(64, 64, 1e-3, epsilon=1e-6, double=True).gridder_sigma == DEFAULT_SIGMA
    assert GridSpec(64, 64, 1e-3, epsilon=1e-5).gridder_sigma == FALLBACK_SIGMA  # single precision limit
    assert GridSpec(64, 64, 1e-3, epsilon=1e-4, sigma=None).gridder_sigma is None
    assert GridSpec(64, 64, 1e-3, epsilon=1e-5, sigma=(1.6, 1.69)).gridder_sigma is None
    # the chosen range gives ducc0 a kernel (a call succeeds) where it is not None
    for g in (GridSpec(64, 64, 1e-3, epsilon=1e-5), GridSpec(64, 64, 1e-3, epsilon=1e-12, double=True)):
        invert_unnormalised(UVW[:10], FREQ, np.ones((10, 2)), np.ones((10, 2)), None, 64, 64, 1e-3,
                            **g.gridder_kwargs())
