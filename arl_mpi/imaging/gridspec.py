"""Image geometry and gridder settings shared by every gridding call of a run."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: ducc0's oversampling range used by default: every call then uses the same kernel whatever its
#: number of visibilities. Around 1.65 ducc0 finds its cheapest kernels at epsilon 1e-4..1e-6
#: (it picks about 1.65 itself for a 1024^2 image); a fixed 2.0 gridded a larger grid with more
#: w-planes and cost about 15% more per major cycle (``benchmarks/bench_major_cycle.py``).
DEFAULT_SIGMA = (1.6, 1.7)
#: Tried where ducc0 has no kernel in :data:`DEFAULT_SIGMA` (e.g. epsilon 1e-5 in single precision).
FALLBACK_SIGMA = (1.99, 2.01)


@lru_cache(maxsize=64)
def kernel_available(epsilon: float, double: bool, sigma_min: float, sigma_max: float,
                     do_wgridding: bool = True) -> bool:
    """Whether ducc0 has a gridding kernel for ``epsilon`` within ``[sigma_min, sigma_max]`` (a tiny
    probe call, cached; w-gridding needs a 3-D kernel)."""
    import ducc0

    dt = np.float64 if double else np.float32
    try:
        ducc0.wgridder.dirty2vis(uvw=np.full((1, 3), 10.0), freq=np.ones(1) * 1e8, dirty=np.zeros((32, 32), dt),
                                 pixsize_x=1e-4, pixsize_y=1e-4, epsilon=float(epsilon),
                                 do_wgridding=bool(do_wgridding), sigma_min=float(sigma_min),
                                 sigma_max=float(sigma_max))
    except RuntimeError:
        return False
    return True


def output_channel_map(chan_index: np.ndarray, channels_out: int, nchan_total: int) -> np.ndarray:
    """Output channel (``--channels-out``) of each observation channel index.

    The one definition of the mapping: observation channel ``c`` of ``nchan_total`` goes to
    output channel ``c * channels_out // nchan_total`` (equal blocks, as WSClean splits).
    """
    return (np.asarray(chan_index) * channels_out) // max(int(nchan_total), 1)


@dataclass(frozen=True)
class GridSpec:
    """Image geometry and gridder accuracy shared by all partitions.

    Attributes
    ----------
    npix_x, npix_y : image size in pixels; cell : pixel size in radians
    epsilon : ducc0 accuracy; nthreads : ducc0 threads per call; do_wgridding : w-correction
    double : double-precision gridding (ducc0 in complex128/float64)
    channels_out : output channels; nchan_total : channels of the whole observation
    sigma : ducc0's oversampling range, fixed by default (:data:`DEFAULT_SIGMA`) so that every
        call uses the same kernel whatever its number of visibilities: images then do not depend
        on how the data are split over workers (to about 1e-6 of the peak at epsilon 1e-4,
        against 1e-5 when ducc0 chooses per call). ``None`` lets ducc0 choose per call.
    """

    npix_x: int
    npix_y: int
    cell: float
    epsilon: float = 1e-4
    nthreads: int = 1
    do_wgridding: bool = True
    double: bool = False
    channels_out: int = 1
    nchan_total: int = 1
    sigma: tuple[float, float] | None = DEFAULT_SIGMA

    def gridder_kwargs(self) -> dict:
        """Keyword arguments of the ducc0-based gridding functions."""
        return {"epsilon": self.epsilon, "nthreads": self.nthreads, "do_wgridding": self.do_wgridding,
                "double": self.double, "sigma": self.gridder_sigma}

    @property
    def gridder_sigma(self) -> tuple[float, float] | None:
        """:attr:`sigma` (for the default, :data:`FALLBACK_SIGMA` where ducc0 has no kernel in it), or
        None where ducc0 has no kernel at that oversampling (e.g. epsilon 1e-12 in double
        precision): then ducc0 chooses per call."""
        if self.sigma is None:
            return None
        for sig in (self.sigma, FALLBACK_SIGMA) if tuple(self.sigma) == DEFAULT_SIGMA else (self.sigma,):
            if kernel_available(self.epsilon, self.double, *sig, self.do_wgridding):
                return tuple(sig)
        return None

    @property
    def image_dtype(self) -> type:
        """dtype of partial images: float64. Partial sums in float32 would halve the bytes a
        cycle moves but round each worker's partial residual at 1e-7 of its own (large)
        values, so the summed residual would depend on the worker count at about 1e-5 of its
        peak; float64 keeps every worker count within 1e-6 of it (checked by the tests)."""
        return np.float64

    def image_bytes(self) -> int:
        """Bytes of one partial image cube ``[channels_out, ny, nx]`` in :attr:`image_dtype`."""
        return int(self.channels_out * self.npix_y * self.npix_x * np.dtype(self.image_dtype).itemsize)

    def out_channels(self, chan_start: int, nchan: int) -> np.ndarray:
        """Output channel of channels ``chan_start .. chan_start + nchan - 1`` of the observation."""
        return output_channel_map(chan_start + np.arange(nchan), self.channels_out, self.nchan_total)
