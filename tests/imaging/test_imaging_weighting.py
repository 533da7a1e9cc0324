"""Weighting, taper, Stokes conversion and coordinate helpers."""

import numpy as np
import pytest

from arl_mpi.constants import SPEED_OF_LIGHT as C_LIGHT
from arl_mpi.imaging import (
    apply_weighting,
    grid_weight_density,
    lm_to_pixel,
    lm_to_radec,
    pixel_to_lm,
    radec_to_lm,
    taper_gaussian,
    to_stokes,
)
from arl_mpi.imaging.weighting import apply_cell_weights, cell_weights, padded_size, rank_filter

NPIX, CELL = 64, 1e-3
FREQ = np.array([100e6, 150e6])


def _data(nrow=2000, seed=0):
    rng = np.random.default_rng(seed)
    # dense core, sparse outskirts: strongly non-uniform density
    r = np.abs(rng.normal(scale=0.25, size=nrow)) * (NPIX / 2) / (NPIX * CELL) * 2.0
    r = np.minimum(r, 0.45 * 1 / CELL / 1.5)  # stay inside the uv grid at 150 MHz
    th = rng.uniform(0, 2 * np.pi, nrow)
    lam = C_LIGHT / FREQ.max()
    uvw = np.stack([r * np.cos(th) * lam, r * np.sin(th) * lam, rng.normal(size=nrow)], axis=1)
    weight = rng.uniform(0.5, 2.0, size=(nrow, FREQ.size))
    flags = rng.uniform(size=(nrow, FREQ.size)) < 0.05
    return uvw, weight, flags


def _cells(uvw):
    u = uvw[:, 0:1] * FREQ / C_LIGHT
    v = uvw[:, 1:2] * FREQ / C_LIGHT
    s = np.where((v < 0) | ((v == 0) & (u < 0)), -1, 1)
    iu = np.floor(s * u * NPIX * CELL).astype(int) + NPIX // 2
    iv = np.floor(s * v * NPIX * CELL).astype(int) + NPIX // 2
    return iv * NPIX + iu


def test_uniform_sums_to_one_per_cell():
    uvw, weight, flags = _data()
    dens = grid_weight_density(uvw, FREQ, weight, flags, NPIX, NPIX, CELL)
    w = apply_weighting(
        uvw, FREQ, weight, flags, dens, "uniform", cell=CELL, npix_x=NPIX, npix_y=NPIX
    )
    assert np.all(w[flags] == 0)
    per_cell = np.bincount(_cells(uvw)[~flags], weights=w[~flags], minlength=NPIX * NPIX)
    occupied = dens.ravel() > 0
    np.testing.assert_allclose(per_cell[occupied], 1.0, rtol=1e-12)


def test_briggs_limits_and_formula():
    uvw, weight, flags = _data()
    dens = grid_weight_density(uvw, FREQ, weight, flags, NPIX, NPIX, CELL)
    kw = dict(cell=CELL, npix_x=NPIX, npix_y=NPIX)
    nat = apply_weighting(uvw, FREQ, weight, flags, dens, "natural", **kw)
    uni = apply_weighting(uvw, FREQ, weight, flags, dens, "uniform", **kw)
    good = ~flags
    # robust = 0: explicit formula
    b0 = apply_weighting(uvw, FREQ, weight, flags, dens, "briggs", 0.0, **kw)
    f2 = 25.0 / (np.sum(dens**2) / np.sum(dens))
    wk = dens.ravel()[_cells(uvw)]
    np.testing.assert_allclose(b0[good], nat[good] / (1 + wk[good] * f2), rtol=1e-12)
    # robust +2 ~ natural, robust -2 ~ uniform (up to a constant factor)
    bp = apply_weighting(uvw, FREQ, weight, flags, dens, "briggs", 2.0, **kw)
    bm = apply_weighting(uvw, FREQ, weight, flags, dens, "briggs", -2.0, **kw)
    r_nat = bp[good] / nat[good]
    r_uni = bm[good] / uni[good]
    assert r_nat.std() / r_nat.mean() < 0.05
    assert r_uni.std() / r_uni.mean() < 0.05
    for bad in (-2.5, 2.01):
        with pytest.raises(ValueError):
            apply_weighting(uvw, FREQ, weight, flags, dens, "briggs", bad, **kw)
    with pytest.raises(ValueError):
        apply_weighting(uvw, FREQ, weight, flags, dens, "super", **kw)


def test_padded_size_is_wsclean_rule():
    # ceil(n * padding), then up to a multiple of 4 (WSClean 3.1's padded image size)
    assert padded_size(512) == 616  # 614.4 -> 615 -> 616
    assert padded_size(1024) == 1232  # 1228.8 -> 1229 -> 1232
    assert padded_size(500) == 600
    assert padded_size(512, 1.0) == 512 and padded_size(514, 1.0) == 516
    assert padded_size(100, 1.5) == 152  # 150 -> 152
    with pytest.raises(ValueError):
        padded_size(512, 0.9)


def _rank_filter_loop(g, level, size):
    """The rank filter written out cell by cell: window x - size//2 .. x + size//2 - 1 (clipped),
    mean over the non-zero cells, strict comparison, zero cells untouched."""
    out = g.copy()
    ny, nx = g.shape
    d = size // 2
    for y in range(ny):
        for x in range(nx):
            if g[y, x] == 0:
                continue
            win = g[max(y - d, 0):min(y + d, ny), max(x - d, 0):min(x + d, nx)]
            mean = win[win != 0].mean()
            if g[y, x] > level * mean:
                out[y, x] = level * mean
    return out


@pytest.mark.parametrize("level,size", [(3.0, 16), (1.5, 4), (2.0, 7)])
def test_rank_filter_equals_cell_by_cell_definition(level, size):
    rng = np.random.default_rng(3)
    g = rng.lognormal(0.0, 1.5, size=(24, 40))
    g[rng.uniform(size=g.shape) < 0.4] = 0.0  # empty cells are not counted
    out = rank_filter(g, level, size)
    ref = _rank_filter_loop(g, level, size)
    assert np.count_nonzero(out != g) > 10  # the filter did something
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=0)
    assert np.all(out[g == 0] == 0)
    np.testing.assert_array_equal(rank_filter(g, 0.0, size), g)  # level < 1: off, as WSClean
    np.testing.assert_array_equal(rank_filter(g, 0.99, size), g)
    with pytest.raises(ValueError):
        rank_filter(g, 3.0, 1)


def test_rank_filter_caps_an_isolated_high_weight():
    g = np.ones((32, 32))
    g[10, 20] = 100.0
    out = rank_filter(g, 3.0, 16)
    # window 16 x 16 = 256 cells around (10, 20): mean (255 + 100) / 256, cap 3x that
    assert out[10, 20] == pytest.approx(3.0 * (255 + 100) / 256, rel=1e-12)
    assert np.all(np.delete(out.ravel(), 10 * 32 + 20) == 1.0)


def test_cell_weights_on_padded_grid_and_rank_filter():
    uvw, weight, flags = _data()
    n = padded_size(NPIX)  # 80 cells of 1 / (80 CELL)
    dens = grid_weight_density(uvw, FREQ, weight, flags, n, n, CELL)
    assert dens[: n // 2].sum() == 0  # only the folded half plane is filled
    # uniform on the padded grid: every occupied padded cell sums to 1
    g = cell_weights(dens, "uniform")
    w = apply_cell_weights(uvw, FREQ, weight, flags, g, CELL)
    u = uvw[:, 0:1] * FREQ / C_LIGHT
    v = uvw[:, 1:2] * FREQ / C_LIGHT
    s = np.where((v < 0) | ((v == 0) & (u < 0)), -1, 1)
    cells = (np.floor(s * v * n * CELL).astype(int) + n // 2) * n + np.floor(s * u * n * CELL).astype(int) + n // 2
    per_cell = np.bincount(cells[~flags], weights=w[~flags], minlength=n * n)
    np.testing.assert_allclose(per_cell[dens.ravel() > 0], 1.0, rtol=1e-12)
    # Briggs: 1 / (1 + W f^2) in every half-plane cell (1 where empty, as WSClean), then the filter
    b = cell_weights(dens, "briggs", 0.5)
    half = dens[n // 2:]
    f2 = (5 * 10**-0.5) ** 2 / (np.sum(half**2) / half.sum())
    np.testing.assert_allclose(b[n // 2:], 1 / (1 + half * f2), rtol=1e-12)
    assert np.all(b[: n // 2] == 0)
    bf = cell_weights(dens, "briggs", 0.5, 3.0, 16)
    np.testing.assert_allclose(bf[n // 2:], _rank_filter_loop(b[n // 2:], 3.0, 16), rtol=1e-12)
    # apply_weighting does the same two steps
    ws = apply_weighting(uvw, FREQ, weight, flags, dens, "briggs", 0.5, cell=CELL, npix_x=n, npix_y=n,
                         rank_filter_level=3.0, rank_filter_size=16)
    np.testing.assert_allclose(ws, apply_cell_weights(uvw, FREQ, weight, flags, bf, CELL), rtol=1e-15)
    with pytest.raises(ValueError):
        cell_weights(dens, "natural")


def test_taper_gaussian():
    uvw = np.array([[0.0, 0.0, 0.0], [300.0, 400.0, 10.0]])
    freq = np.array([C_LIGHT])  # 1 m wavelength: u, v in wavelengths = metres
    fwhm = np.radians(0.5)
    w = taper_gaussian(uvw, freq, np.ones((2, 1)), fwhm)
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    assert w[0, 0] == 1.0
    assert w[1, 0] == pytest.approx(np.exp(-2 * np.pi**2 * sigma**2 * 500.0**2), rel=1e-12)
    # the taper is the FT of an image Gaussian of that FWHM: the half-power point in uv
    # of a Gaussian with image FWHM theta lies at rho = 2 ln2 / (pi theta)
    rho = 2 * np.log(2) / (np.pi * fwhm)
    wt = taper_gaussian(np.array([[rho, 0, 0]]), freq, np.ones((1, 1)), fwhm)
    assert wt[0, 0] == pytest.approx(0.5, rel=1e-12)


def test_stokes_linear_and_circular():
    rng = np.random.default_rng(1)
    shape = (50, 3)
    i, q, u, v = (rng.normal(size=shape) + 1j * rng.normal(size=shape) for _ in range(4))
    lin = np.stack([i + q, u + 1j * v, u - 1j * v, i - q], axis=-1)
    circ = np.stack([i + v, q + 1j * u, q - 1j * u, i - v], axis=-1)
    w = rng.uniform(0.5, 2.0, size=shape + (4,))
    fl = rng.uniform(size=shape + (4,)) < 0.1
    for data, labels in ((lin, ["XX", "XY", "YX", "YY"]), (circ, ["RR", "RL", "LR", "LL"])):
        for name, truth in zip("IQUV", (i, q, u, v), strict=True):
            vs, ws, fs = to_stokes(data, w, fl, labels, name)
            np.testing.assert_allclose(vs, truth, atol=1e-12)
            assert ws.shape == shape and fs.shape == shape
    vs, ws, fs = to_stokes(lin[..., [0, 3]], w[..., [0, 3]], fl[..., [0, 3]], ["XX", "YY"], "I")
    np.testing.assert_allclose(ws, 4 * w[..., 0] * w[..., 3] / (w[..., 0] + w[..., 3]))
    np.testing.assert_array_equal(fs, fl[..., 0] | fl[..., 3])
    # weight = 1 / variance of (a + b) / 2
    var = 0.25 * (1 / w[..., 0] + 1 / w[..., 3])
    np.testing.assert_allclose(ws, 1 / var)
    with pytest.raises(ValueError, match="needs correlations"):
        to_stokes(lin[..., [0, 3]], w[..., [0, 3]], fl[..., [0, 3]], ["XX", "YY"], "U")
    with pytest.raises(ValueError):
        to_stokes(lin, w, fl, ["XX", "XY", "YX", "YY"], "P")


def test_coordinates():
    ra0, dec0 = np.radians(150.0), np.radians(-40.0)
    ra = ra0 + np.radians([0.0, 2.0, -3.0, 0.5])
    dec = dec0 + np.radians([0.0, 1.0, -2.0, 4.0])
    l, m = radec_to_lm(ra, dec, ra0, dec0)
    assert l[1] > 0 and l[2] < 0  # East (larger RA) is +l
    assert m[3] > 0  # North is +m
    ra2, dec2 = lm_to_radec(l, m, ra0, dec0)
    np.testing.assert_allclose(ra2, ra, atol=1e-12)
    np.testing.assert_allclose(dec2, dec, atol=1e-12)
    x, y = lm_to_pixel(l, m, 256, 128, 1e-3)
    l2, m2 = pixel_to_lm(x, y, 256, 128, 1e-3)
    np.testing.assert_allclose([l2, m2], [l, m], atol=1e-15)
    assert x[1] < 128 and y[3] > 64  # East is towards smaller column index
    assert pixel_to_lm(128, 64, 256, 128, 1e-3) == (0.0, 0.0)
