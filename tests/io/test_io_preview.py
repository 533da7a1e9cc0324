"""PNG previews: the asinh stretch shows the noise and faint sources beside a bright one."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import AsinhNorm, Normalize

from arl_mpi.io.fits import preview_stretch


def test_asinh_stretch_shows_noise_and_faint_source():
    rng = np.random.default_rng(0)
    sigma = 0.01
    plane = rng.normal(0, sigma, (256, 256))
    plane[128, 128] = 10.0  # dynamic range 1000
    plane[50, 50] = 5 * sigma  # a 5-sigma source
    vmin, vmax, width = preview_stretch(plane)
    assert vmax == 10.0 and vmin < 0
    norm = AsinhNorm(linear_width=width, vmin=vmin, vmax=vmax)
    lin = Normalize(vmin=vmin, vmax=vmax)
    # +-1 sigma of noise spans >= 5% of the colour scale (a linear scale: 0.2%)
    assert norm(sigma) - norm(-sigma) >= 0.05 > lin(sigma) - lin(-sigma)
    # the 5-sigma source stands >= 15% of the scale above zero (linear: 0.5%)
    assert norm(5 * sigma) - norm(0.0) >= 0.15 > lin(5 * sigma) - lin(0.0)
    # the bright source is not clipped
    assert norm(10.0) == 1.0 and norm(5.0) < 1.0


def test_stretch_of_a_blank_or_empty_plane():
    assert preview_stretch(np.zeros((8, 8)))[1] > preview_stretch(np.zeros((8, 8)))[0]
    assert preview_stretch(np.full((8, 8), np.nan)) == (0.0, 1.0, 1.0)
