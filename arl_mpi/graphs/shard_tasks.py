"""The tasks that run on the workers, one function per task, over *shards*.

A shard is what one worker holds: a run of *chunks*, each chunk a run of consecutive
partitions merged at load time into one :class:`VisBlock` per channel set (time partitions
of one spectral window become one block of concatenated rows). The chunk plan depends on
the data and the image size only (:func:`arl_mpi.graphs.shard_graphs.plan_chunks`), never
on the number of workers; shards are whole chunks. A gridding task makes **one ducc0 call
per output channel per block**, sums its chunks locally (float64) and returns one partial
image for the whole shard: the cost of a major cycle follows the visibilities, not the
partition count, only one image per worker travels, and since every ducc0 call sees the
same visibilities whatever the worker count, images agree across worker counts to float32
rounding of the partial sums.

Under ``--stream`` a shard is a :class:`StreamShard` instead: the recipe (store, chunks,
weighting) from which the task reads one chunk at a time (split further when a chunk
exceeds the memory budget), so a worker never holds more than one batch.

Each builder in :mod:`arl_mpi.graphs.shard_graphs` runs exactly one of these functions
(``invert_graph`` runs :func:`invert_shard`, ``psf_graph`` :func:`psf_shard`, ...). Only
small results travel: one float64 partial image per worker, counts, uv densities.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from arl_mpi.calibration.solutions import apply_solutions, load_solutions
from arl_mpi.constants import SPEED_OF_LIGHT
from arl_mpi.errors import InputError
from arl_mpi.imaging.gridding import invert_unnormalised, psf_unnormalised, residual_unnormalised
from arl_mpi.imaging.gridspec import GridSpec
from arl_mpi.imaging.stokes import to_stokes
from arl_mpi.imaging.weighting import apply_cell_weights, apply_weighting, grid_weight_density, taper_gaussian
from arl_mpi.io.store import open_store, read_partition

log = logging.getLogger(__name__)

#: Bytes one resident Stokes sample costs (complex64 vis + float32 weight + bool flag).
BYTES_PER_SAMPLE = 8 + 4 + 1
#: Bytes one row costs beyond its samples (float64 uvw).
BYTES_PER_ROW = 24


class VisCounts(NamedTuple):
    """Totals over visibilities (summable with :func:`add_counts`)."""

    samples: int
    unflagged: int
    flagged_on_load: int
    uvmax_wavelengths: float


def add_counts(a: VisCounts, b: VisCounts) -> VisCounts:
    """Sum two :class:`VisCounts` (the longest baseline is the maximum)."""
    return VisCounts(a.samples + b.samples, a.unflagged + b.unflagged, a.flagged_on_load + b.flagged_on_load,
                     max(a.uvmax_wavelengths, b.uvmax_wavelengths))


@dataclass
class VisBlock:
    """Rows of one or more partitions that share one channel set: one Stokes product.

    Attributes
    ----------
    pids : partition ids whose rows these are, in row order
    uvw : [nrow, 3] m; freq : [nchan] Hz; chan_start : first channel's index in the observation
    vis : [nrow, nchan] complex64, the Stokes product being imaged
    weight : [nrow, nchan] float32, imaging weights (after weighting/taper)
    flags : [nrow, nchan] bool
    nflag_bad : samples flagged on load because they were NaN/Inf or had negative weight
    """

    pids: tuple[int, ...]
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

    @property
    def nbytes(self) -> int:
        """Bytes the block holds in memory."""
        return int(self.uvw.nbytes + self.vis.nbytes + self.weight.nbytes + self.flags.nbytes)

    def __sizeof__(self) -> int:
        # Dask's scheduler weighs where data sit by sizeof(): without this a shard looks like a few
        # bytes, and a task needing it and the model is sent to the model, moving the whole shard.
        return self.nbytes + 256

    def out_channels(self, grid: GridSpec) -> np.ndarray:
        """Output-channel index of each of this block's channels (``--channels-out``)."""
        return grid.out_channels(self.chan_start, self.freq.size)


@dataclass
class Shard:
    """What one worker holds: its chunks, each merged into one block per channel set."""

    pids: tuple[int, ...]
    blocks: list[VisBlock]

    @property
    def nvis(self) -> int:
        """Samples held."""
        return sum(b.nvis for b in self.blocks)

    @property
    def nbytes(self) -> int:
        """Bytes held in memory."""
        return sum(b.nbytes for b in self.blocks)

    def __sizeof__(self) -> int:
        return self.nbytes + 256  # see VisBlock.__sizeof__


@dataclass(frozen=True)
class Weighting:
    """Imaging weights to apply to visibilities as they are read (``--weight``, ``--taper-gaussian``)."""

    scheme: str = "natural"
    robust: float = 0.0
    taper_fwhm_rad: float | None = None
    density: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: per-uv-cell weights on the weighting grid (:func:`arl_mpi.imaging.weighting.cell_weights`,
    #: computed once on the driver); when set they replace ``scheme``/``robust``/``density``
    cell_weights: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StreamShard:
    """A shard under ``--stream``: read from the store, in batches, whenever a task runs.

    Attributes
    ----------
    store : path of the store; chunks : its chunks (partition ids of each), in order
    stokes, verify : as for loading
    max_batch_samples : at most this many samples are read and gridded at once; a chunk
        larger than that is read in several batches (at least one partition per batch)
    weighting : imaging weights applied to every batch (None: the stored weights)
    solutions : h5parm applied to every batch before the Stokes product (``--apply-solutions``)
    """

    store: str
    chunks: tuple[tuple[int, ...], ...]
    stokes: str = "I"
    verify: bool = True
    max_batch_samples: int = 50_000_000
    weighting: Weighting | None = None
    solutions: str | None = None


def sanitise(vis: np.ndarray, weight: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Flag NaN/Inf visibilities or weights and negative weights; zero them. Returns the count."""
    bad = ~np.isfinite(vis) | ~np.isfinite(weight) | (weight < 0)
    n = int(np.count_nonzero(bad & ~flags))
    if bad.any():
        vis = np.where(bad, 0, vis)
        weight = np.where(bad, 0, weight)
        flags = flags | bad
    return vis, weight, flags, n


def load_block(store_path: str, pid: int, stokes: str = "I", verify: bool = True,
               solutions: str | None = None) -> VisBlock:
    """Read partition ``pid`` of a store (on the worker) and form the Stokes product to image
    (after correcting it with the h5parm ``solutions``, if given)."""
    index = open_store(store_path)
    v = read_partition(index, pid, verify=verify)
    vis, weight, flags, nbad = sanitise(v.vis, v.weight, v.flags)
    if nbad:
        log.warning("%s partition %s: flagged %d NaN/Inf or negative-weight samples",
                    store_path, v.meta.get("partition"), nbad)
    if solutions:
        vis, flags = apply_solutions(v.time, v.antenna1, v.antenna2, vis, v.frequency, list(v.polarisations),
                                     index.meta.configuration.names, load_solutions(solutions), flags=flags)
    # complex64 correlations: the Stokes product in complex64 directly (the same values, no complex128 copy)
    cdt = np.complex64 if vis.dtype == np.complex64 else np.complex128
    s_vis, s_wt, s_fl = to_stokes(vis, weight, flags, list(v.polarisations), stokes, vis_dtype=cdt)
    return VisBlock(pids=(pid,), uvw=np.ascontiguousarray(v.uvw, dtype=np.float64), freq=v.frequency,
                    chan_start=index.partitions[pid].chan_start,
                    vis=np.ascontiguousarray(s_vis, dtype=np.complex64),
                    weight=np.ascontiguousarray(s_wt, dtype=np.float32), flags=np.ascontiguousarray(s_fl),
                    nflag_bad=nbad)


def merge_blocks(blocks: Sequence[VisBlock]) -> Shard:
    """One :class:`Shard` of blocks: blocks with the same channel set are concatenated in order."""
    groups: dict[tuple[int, int], list[VisBlock]] = {}
    for b in blocks:
        groups.setdefault((b.chan_start, b.freq.size), []).append(b)
    merged = []
    for _, bs in sorted(groups.items()):
        if len(bs) == 1:
            merged.append(bs[0])
            continue
        merged.append(VisBlock(
            pids=tuple(p for b in bs for p in b.pids), uvw=np.concatenate([b.uvw for b in bs]), freq=bs[0].freq,
            chan_start=bs[0].chan_start, vis=np.concatenate([b.vis for b in bs]),
            weight=np.concatenate([b.weight for b in bs]), flags=np.concatenate([b.flags for b in bs]),
            nflag_bad=sum(b.nflag_bad for b in bs)))
    return Shard(pids=tuple(p for b in blocks for p in b.pids), blocks=merged)


def load_chunk(store_path: str, pids: Sequence[int], stokes: str = "I", verify: bool = True,
               solutions: str | None = None) -> Shard:
    """Read the partitions ``pids`` (on the worker) and merge them (one block per channel set)."""
    return merge_blocks([load_block(store_path, pid, stokes, verify, solutions) for pid in pids])


def load_shard(store_path: str, chunks: Sequence[Sequence[int]], stokes: str = "I", verify: bool = True,
               solutions: str | None = None) -> Shard:
    """Read a shard's chunks (on the worker): each chunk merged on its own, blocks in chunk order."""
    parts = [load_chunk(store_path, pids, stokes, verify, solutions) for pids in chunks]
    return Shard(pids=tuple(p for c in parts for p in c.pids), blocks=[b for c in parts for b in c.blocks])


def _weighted(block: VisBlock, grid: GridSpec, w: Weighting | None) -> VisBlock:
    if w is None or (w.scheme == "natural" and not w.taper_fwhm_rad):
        return block
    wt = block.weight
    if w.cell_weights is not None:
        wt = apply_cell_weights(block.uvw, block.freq, wt, block.flags, w.cell_weights, grid.cell)
    elif w.scheme != "natural":
        wt = apply_weighting(block.uvw, block.freq, wt, block.flags, w.density, w.scheme, w.robust,
                             cell=grid.cell, npix_x=grid.npix_x, npix_y=grid.npix_y)
    if w.taper_fwhm_rad:
        wt = taper_gaussian(block.uvw, block.freq, wt, w.taper_fwhm_rad)
    return replace(block, weight=np.ascontiguousarray(wt, dtype=np.float32))


def _stream_batches(src: StreamShard) -> Iterator[list[int]]:
    """Each chunk's partitions, split where a chunk exceeds ``max_batch_samples``."""
    index = open_store(src.store)
    for chunk in src.chunks:
        batch, n = [], 0
        for pid in chunk:
            size = index.partitions[pid].nsamples
            if batch and n + size > src.max_batch_samples:
                yield batch
                batch, n = [], 0
            batch.append(pid)
            n += size
        if batch:
            yield batch


def iter_blocks(shard: Shard | StreamShard, grid: GridSpec | None = None) -> Iterator[VisBlock]:
    """The blocks of a shard; a :class:`StreamShard` is read (and weighted) batch by batch."""
    if isinstance(shard, Shard):
        yield from shard.blocks
        return
    for pids in _stream_batches(shard):
        merged = load_chunk(shard.store, pids, shard.stokes, shard.verify, shard.solutions)
        for b in merged.blocks:
            yield _weighted(b, grid, shard.weighting) if grid is not None else b


def counts_shard(shard: Shard | StreamShard) -> VisCounts:
    """:class:`VisCounts` of a shard."""
    total = VisCounts(0, 0, 0, 0.0)
    for b in iter_blocks(shard):
        good = ~b.flags & (b.weight > 0)
        uvmax = 0.0
        if b.uvw.size:
            uvmax = float(np.max(np.hypot(b.uvw[:, 0], b.uvw[:, 1])) * b.freq.max() / SPEED_OF_LIGHT)
        total = add_counts(total, VisCounts(b.nvis, int(np.count_nonzero(good)), int(b.nflag_bad), uvmax))
    return total


def density_shard(shard: Shard | StreamShard, grid: GridSpec) -> np.ndarray:
    """This shard's contribution to the global uv weight density (summable)."""
    out = None
    for b in iter_blocks(shard):
        d = grid_weight_density(b.uvw, b.freq, b.weight, b.flags, grid.npix_x, grid.npix_y, grid.cell)
        out = d if out is None else out + d
    if out is None:
        out = grid_weight_density(np.zeros((0, 3)), np.ones(1), np.zeros((0, 1), np.float32),
                                  np.zeros((0, 1), bool), grid.npix_x, grid.npix_y, grid.cell)
    return out


def reweight_shard(shard: Shard | StreamShard, grid: GridSpec, weighting: Weighting) -> Shard | StreamShard:
    """Apply imaging weights: a new resident shard, or a stream recipe that weights as it reads."""
    if isinstance(shard, StreamShard):
        return replace(shard, weighting=weighting)
    return Shard(pids=shard.pids, blocks=[_weighted(b, grid, weighting) for b in shard.blocks])


def _channel_runs(oc: np.ndarray) -> list[tuple[int, slice]]:
    """``(output channel, slice of the block's channels)`` for each run of equal output channel
    (the channel map is monotonic, so every output channel is one contiguous run)."""
    if oc.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(oc)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [oc.size]])
    return [(int(oc[a]), slice(int(a), int(b))) for a, b in zip(starts, stops, strict=True)]


def _columns(a: np.ndarray, sl: slice) -> np.ndarray:
    """Channels ``sl`` of ``a`` [nrow, nchan]: the array itself (no copy) when ``sl`` is all of them."""
    if sl.start == 0 and sl.stop == a.shape[1]:
        return a
    return np.ascontiguousarray(a[:, sl])


def _per_out_channel(shard: Shard | StreamShard, grid: GridSpec, fn) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``fn(block, channel_slice, out_channel) -> (image, sumwt)`` over blocks and output channels
    (accumulated in float64, returned as ``grid.image_dtype``)."""
    img = np.zeros((grid.channels_out, grid.npix_y, grid.npix_x), dtype=np.float64)
    sw = np.zeros(grid.channels_out)
    for b in iter_blocks(shard, grid):
        if b.vis.shape[0] == 0:
            continue
        for o, sl in _channel_runs(b.out_channels(grid)):
            part, w = fn(b, sl, o)
            img[o] += part
            sw[o] += w
    return img.astype(grid.image_dtype, copy=False), sw


def invert_shard(shard: Shard | StreamShard, grid: GridSpec,
                 model: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised (residual) image of a shard: ``invert(vis - predict(model))``.

    One ducc0 ``dirty2vis`` + ``vis2dirty`` per output channel per block
    (:func:`~arl_mpi.imaging.gridding.residual_unnormalised`: no weighted or subtracted copies
    of the visibilities; a block whose channels all go to one output channel is passed as is).

    Parameters
    ----------
    shard : the worker's resident shard (or a stream recipe)
    grid : image geometry
    model : [channels_out, ny, nx] Jy/pixel, or None for the dirty image

    Returns
    -------
    image_sum : [channels_out, ny, nx] float64, this shard's sum
    sumwt : [channels_out] float64
    """
    kw = grid.gridder_kwargs()
    nonzero = [model is not None and bool(np.any(model[o])) for o in range(grid.channels_out)]

    def one(b: VisBlock, sl: slice, o: int):
        vis, wt, fl = _columns(b.vis, sl), _columns(b.weight, sl), _columns(b.flags, sl)
        if nonzero[o]:
            return residual_unnormalised(b.uvw, b.freq[sl], vis, model[o], wt, fl, grid.cell, **kw)
        return invert_unnormalised(b.uvw, b.freq[sl], vis, wt, fl, grid.npix_x, grid.npix_y, grid.cell, **kw)

    return _per_out_channel(shard, grid, one)


def psf_shard(shard: Shard | StreamShard, grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised PSF of a shard, per output channel (as :func:`invert_shard`)."""
    kw = grid.gridder_kwargs()

    def one(b: VisBlock, sl: slice, o: int):
        return psf_unnormalised(b.uvw, b.freq[sl], _columns(b.weight, sl), _columns(b.flags, sl),
                                grid.npix_x, grid.npix_y, grid.cell, **kw)

    return _per_out_channel(shard, grid, one)


def map_blocks(shard: Shard, fn, *args, **kwargs) -> Shard:
    """A new shard with ``fn(block, *args, **kwargs)`` applied to every block (e.g. uv contsub)."""
    return Shard(pids=shard.pids, blocks=[fn(b, *args, **kwargs) for b in shard.blocks])


def require_data(total: VisCounts, store: str) -> None:
    """Refuse to image when every sample is flagged."""
    if total.unflagged <= 0:
        raise InputError(f"{store}: all {int(total.samples)} visibilities are flagged or have zero weight; "
                         "nothing to image")
