"""Restoring beam fit and restore."""

import numpy as np
import pytest

from arl_mpi.imaging import fit_beam, gaussian_kernel, restore

CELL = np.radians(2.0 / 3600)


def analytic_gaussian(bmaj, bmin, bpa, n=128, cell=CELL):
    """Independent construction: rotate (l, m) into the major/minor frame."""
    y, x = np.mgrid[0:n, 0:n]
    l = -(x - n // 2) * cell
    m = (y - n // 2) * cell
    along = l * np.sin(bpa) + m * np.cos(bpa)  # unit vector (sin pa, cos pa) in (l, m)
    across = l * np.cos(bpa) - m * np.sin(bpa)
    return np.exp(-4 * np.log(2) * ((along / bmaj) ** 2 + (across / bmin) ** 2))


@pytest.mark.parametrize("bpa_deg", [-70.0, -20.0, 0.0, 35.0, 89.0])
def test_fit_beam_analytic(bpa_deg):
    bmaj, bmin = 12 * CELL, 7 * CELL
    psf = analytic_gaussian(bmaj, bmin, np.radians(bpa_deg))
    fmaj, fmin, fpa = fit_beam(psf, CELL)
    assert fmaj == pytest.approx(bmaj, rel=0.01)
    assert fmin == pytest.approx(bmin, rel=0.01)
    dpa = (np.degrees(fpa) - bpa_deg + 90) % 180 - 90
    assert abs(dpa) < 1.0


def test_bpa_orientation_convention():
    n = 64
    y, x = np.mgrid[0:n, 0:n] - n // 2
    ns = np.exp(-(x**2) / 4 - y**2 / 40)  # elongated along y = North-South
    assert abs(np.degrees(fit_beam(ns, CELL)[2])) < 1.0
    ew = np.exp(-(x**2) / 40 - y**2 / 4)  # along x = East-West
    assert abs(abs(np.degrees(fit_beam(ew, CELL)[2])) - 90) < 1.0
    # North-East: m grows with y, l grows with *decreasing* x -> along (x, y) = (-1, 1)
    d_along = (-x + y) / np.sqrt(2)
    d_across = (x + y) / np.sqrt(2)
    ne = np.exp(-(d_along**2) / 40 - d_across**2 / 4)
    assert np.degrees(fit_beam(ne, CELL)[2]) == pytest.approx(45.0, abs=1.0)


def test_gaussian_kernel_and_restore():
    beam = (10 * CELL, 6 * CELL, np.radians(30))
    k = gaussian_kernel(beam, CELL, (128, 128))
    np.testing.assert_allclose(k, analytic_gaussian(*beam), atol=1e-12)
    model = np.zeros((128, 128))
    model[40, 70] = 2.0
    model[100, 10] = 0.5  # near the edge: linear (not periodic) convolution
    resid = np.random.default_rng(0).normal(scale=1e-3, size=model.shape)
    out = restore(model, resid, beam, CELL)
    big = gaussian_kernel(beam, CELL, (256, 256))  # centre (128, 128)
    expect = resid.copy()
    for (yy, xx), f in (((40, 70), 2.0), ((100, 10), 0.5)):
        expect += f * big[128 - yy : 256 - yy, 128 - xx : 256 - xx]
    assert out[40, 70] == pytest.approx(2.0 + resid[40, 70], abs=1e-9)
    assert out[100, 10] == pytest.approx(0.5 + resid[100, 10], abs=1e-9)
    np.testing.assert_allclose(out, expect, atol=1e-9)


def test_restore_pads_by_the_beam_reach_without_wrap_around():
    """Points at the corners restore to the analytic Gaussian everywhere (1e-10): the padding
    by 8 sigma leaves no wrap-around, as the old padding to twice the size did."""
    from arl_mpi.imaging.beam import gaussian_kernel, restore

    ny, nx, cell = 96, 128, np.deg2rad(1 / 60)
    beam = (np.deg2rad(9 / 60), np.deg2rad(5 / 60), np.deg2rad(30.0))  # 9' x 5', 9 and 5 pixels
    model = np.zeros((ny, nx))
    model[0, 0], model[ny - 1, nx - 1], model[40, 70] = 2.0, 1.0, 0.5
    out = restore(model, np.zeros_like(model), beam, cell)
    expect = np.zeros_like(model)
    for (y, x), f in (((0, 0), 2.0), ((ny - 1, nx - 1), 1.0), ((40, 70), 0.5)):
        k = gaussian_kernel(beam, cell, (2 * ny, 2 * nx))  # centred at (ny, nx)
        expect += f * k[ny - y:2 * ny - y, nx - x:2 * nx - x]
    assert np.abs(out - expect).max() <= 1e-10 * 2.0
