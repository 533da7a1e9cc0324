"""Gridding, weighting, Stokes conversion and restoring (pure numpy)."""

from .beam import fit_beam, gaussian_kernel, restore
from .dft import dft_invert, dft_predict, lm_to_pixel, lm_to_radec, pixel_to_lm, radec_to_lm
from .gridding import invert, invert_unnormalised, make_psf, predict, psf_unnormalised
from .stokes import to_stokes
from .weighting import apply_weighting, grid_weight_density, taper_gaussian

__all__ = [
    "apply_weighting",
    "dft_invert",
    "dft_predict",
    "fit_beam",
    "gaussian_kernel",
    "grid_weight_density",
    "invert",
    "invert_unnormalised",
    "lm_to_pixel",
    "lm_to_radec",
    "make_psf",
    "pixel_to_lm",
    "predict",
    "psf_unnormalised",
    "radec_to_lm",
    "restore",
    "taper_gaussian",
    "to_stokes",
]
