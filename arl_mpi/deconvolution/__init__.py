"""Minor-cycle deconvolution algorithms (numpy in, numpy out)."""

from .common import mad_sigma
from .hogbom import hogbom
from .msmfs import mfs_clean, multiscale, spectral_index

__all__ = ["hogbom", "mad_sigma", "mfs_clean", "multiscale", "spectral_index"]
