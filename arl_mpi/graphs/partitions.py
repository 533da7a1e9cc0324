"""Per-partition operations that run on the workers.

Each function takes one partition's resident data (numpy arrays) and returns a small
result (an image, a uv density grid, counts). Only these small results travel; the
visibilities stay on the worker that loaded them. The arithmetic is delegated to the pure
functions of :mod:`arl_mpi.imaging`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from arl_mpi.errors import InputError
from arl_mpi.imaging.gridding import invert_unnormalised, predict, psf_unnormalised
from arl_mpi.imaging.stokes import to_stokes
from arl_mpi.imaging.weighting import apply_weighting, grid_weight_density, taper_gaussian
from arl_mpi.io.store import open_store, read_partition

log = logging.getLogger(__name__)


@dataclass
class GridSpec:
    """Image geometry and gridder accuracy shared by all partitions."""

    npix_x: int
    npix_y: int
    cell: float  # radians
    epsilon: float = 1e-4
    nthreads: int = 1
    do_wgridding: bool = True
    double: bool = False
    channels_out: int = 1
    nchan_total: int = 1

    def gridder_kwargs(self) -> dict:
        """Keyword arguments of the ducc0-based gridding functions."""
        return {"epsilon": self.epsilon, "nthreads": self.nthreads, "do_wgridding": self.do_wgridding,
                "double": self.double}


@dataclass
class ImagingData:
    """One partition reduced to what imaging needs: one Stokes product, resident on a worker.

    Attributes
    ----------
    pid : int, partition id in its store
    uvw : [nrow, 3] m; freq : [nchan] Hz; chan_start : first channel's index in the observation
    vis : [nrow, nchan] complex64, the Stokes product being imaged
    weight : [nrow, nchan] float32, imaging weights (after weighting/taper)
    flags : [nrow, nchan] bool
    nflag_bad : number of samples flagged on load because they were NaN/Inf or had negative weight
    """

    pid: int
    uvw: np.ndarray
    freq: np.ndarray
    chan_start: int
    vis: np.ndarray
    weight: np.ndarray
    flags: np.ndarray
    nflag_bad: int = 0

    @property
    def nvis(self) -> int:
        """Samples held (rows x channels)."""
        return int(self.vis.size)

    def out_channels(self, grid: GridSpec) -> np.ndarray:
        """Output-channel index of each of this partition's channels (``--channels-out``)."""
        glob = self.chan_start + np.arange(self.freq.size)
        return (glob * grid.channels_out) // max(grid.nchan_total, 1)


def sanitise(vis: np.ndarray, weight: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Flag NaN/Inf visibilities or weights and negative weights; zero them. Returns the count."""
    bad = ~np.isfinite(vis) | ~np.isfinite(weight) | (weight < 0)
    n = int(np.count_nonzero(bad & ~flags))
    if bad.any():
        vis = np.where(bad, 0, vis)
        weight = np.where(bad, 0, weight)
        flags = flags | bad
    return vis, weight, flags, n


def load_imaging_data(store_path: str, pid: int, stokes: str = "I", verify: bool = True) -> ImagingData:
    """Read partition ``pid`` of a store (on the worker) and form the Stokes product to image."""
    index = open_store(store_path)
    v = read_partition(index, pid, verify=verify)
    vis, weight, flags, nbad = sanitise(v.vis, v.weight, v.flags)
    if nbad:
        log.warning("%s partition %s: flagged %d NaN/Inf or negative-weight samples",
                    store_path, v.meta.get("partition"), nbad)
    s_vis, s_wt, s_fl = to_stokes(vis, weight, flags, list(v.polarisations), stokes)
    return ImagingData(pid=pid, uvw=v.uvw, freq=v.frequency, chan_start=index.partitions[pid].chan_start,
                       vis=np.ascontiguousarray(s_vis, dtype=np.complex64),
                       weight=np.ascontiguousarray(s_wt, dtype=np.float32), flags=np.ascontiguousarray(s_fl),
                       nflag_bad=nbad)


def counts(data: ImagingData) -> np.ndarray:
    """``[samples, unflagged, flagged-on-load, max |uvw| in wavelengths]`` of a partition."""
    good = ~data.flags & (data.weight > 0)
    uvmax = 0.0
    if data.uvw.size:
        uvmax = float(np.max(np.hypot(data.uvw[:, 0], data.uvw[:, 1])) * data.freq.max() / 299792458.0)
    return np.array([data.nvis, np.count_nonzero(good), data.nflag_bad, uvmax], dtype=np.float64)


def weight_density(data: ImagingData, grid: GridSpec) -> np.ndarray:
    """This partition's contribution to the global uv weight density (summable)."""
    return grid_weight_density(data.uvw, data.freq, data.weight, data.flags, grid.npix_x, grid.npix_y, grid.cell)


def reweight(data: ImagingData, grid: GridSpec, density: np.ndarray | None, scheme: str, robust: float,
             taper_fwhm_rad: float | None) -> ImagingData:
    """Apply imaging weights given the global density; returns new resident data."""
    w = data.weight
    if scheme != "natural":
        w = apply_weighting(data.uvw, data.freq, w, data.flags, density, scheme, robust,
                            cell=grid.cell, npix_x=grid.npix_x, npix_y=grid.npix_y)
    if taper_fwhm_rad:
        w = taper_gaussian(data.uvw, data.freq, w, taper_fwhm_rad)
    return replace(data, weight=np.ascontiguousarray(w, dtype=np.float32))


def _per_out_channel(data: ImagingData, grid: GridSpec, fn) -> tuple[np.ndarray, np.ndarray]:
    """Run ``fn(chan_slice_mask) -> (image, sumwt)`` per output channel; stack the results."""
    img = np.zeros((grid.channels_out, grid.npix_y, grid.npix_x))
    sw = np.zeros(grid.channels_out)
    if data.vis.shape[0] == 0:
        return img, sw
    oc = data.out_channels(grid)
    for o in np.unique(oc):
        sel = oc == o
        img[o], sw[o] = fn(sel)
    return img, sw


def invert_partial(data: ImagingData, grid: GridSpec, model: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised (residual) image of this partition: ``invert(vis - predict(model))``.

    Returns ``(image_sum [channels_out, ny, nx], sumwt [channels_out])``, to be summed over
    partitions and divided.
    """
    kw = grid.gridder_kwargs()

    def one(sel):
        vis = data.vis[:, sel]
        if model is not None and np.any(model[o_index(sel, data, grid)]):
            mv = predict(data.uvw, data.freq[sel], model[o_index(sel, data, grid)], grid.cell, **kw)
            vis = vis - mv.astype(vis.dtype)
        return invert_unnormalised(data.uvw, data.freq[sel], np.ascontiguousarray(vis),
                                   np.ascontiguousarray(data.weight[:, sel]), np.ascontiguousarray(data.flags[:, sel]),
                                   grid.npix_x, grid.npix_y, grid.cell, **kw)

    return _per_out_channel(data, grid, one)


def o_index(sel: np.ndarray, data: ImagingData, grid: GridSpec) -> int:
    """Output channel of a channel selection made by :func:`_per_out_channel`."""
    return int(data.out_channels(grid)[np.argmax(sel)])


def psf_partial(data: ImagingData, grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised PSF of this partition, per output channel."""
    kw = grid.gridder_kwargs()

    def one(sel):
        return psf_unnormalised(data.uvw, data.freq[sel], np.ascontiguousarray(data.weight[:, sel]),
                                np.ascontiguousarray(data.flags[:, sel]), grid.npix_x, grid.npix_y, grid.cell, **kw)

    return _per_out_channel(data, grid, one)


def require_data(total_counts: np.ndarray, store: str) -> None:
    """Refuse to image when every sample is flagged."""
    if total_counts[1] <= 0:
        raise InputError(f"{store}: all {int(total_counts[0])} visibilities are flagged or have zero weight; "
                         "nothing to image")
