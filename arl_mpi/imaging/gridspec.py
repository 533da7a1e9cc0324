"""Image geometry and gridder settings shared by every gridding call of a run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    sigma : ducc0's oversampling range, fixed by default so that every call uses the same
        kernel whatever its number of visibilities: images then do not depend on how the data
        are split over workers (to about 1e-6 of the peak at epsilon 1e-4, against 1e-5 when
        ducc0 chooses per call). ``None`` lets ducc0 choose per call.
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
    sigma: tuple[float, float] | None = (1.99, 2.01)

    def gridder_kwargs(self) -> dict:
        """Keyword arguments of the ducc0-based gridding functions."""
        return {"epsilon": self.epsilon, "nthreads": self.nthreads, "do_wgridding": self.do_wgridding,
                "double": self.double, "sigma": self.gridder_sigma}

    @property
    def gridder_sigma(self) -> tuple[float, float] | None:
        """:attr:`sigma`, or None where ducc0 has no kernel at that oversampling (epsilon below
        1e-12 in double or 1e-5 in single precision): then ducc0 chooses per call."""
        floor = 1e-12 if self.double else 1e-5
        return self.sigma if self.sigma is not None and self.epsilon >= floor else None

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
