"""Dask graphs over shards: build with these functions, run with any client.

Every builder returns ``dask.delayed`` objects and runs exactly one task of
:mod:`arl_mpi.graphs.shard_tasks` per shard: ``load_graph`` -> ``load_shard``,
``counts_graph`` -> ``counts_shard``, ``weight_density_graph`` -> ``density_shard``,
``reweight_graph`` -> ``reweight_shard``, ``invert_graph`` -> ``invert_shard``,
``psf_graph`` -> ``psf_shard``. A pipeline persists the loaded shards (one per worker) and
computes images from them cycle after cycle: tasks per cycle grow with the workers, and only
one partial image per worker travels.

Sums over shards are binary trees in shard order, so for a given shard plan the result is
bit-identical on any cluster; different plans (worker counts) agree to the gridder's
accuracy (ducc0 picks its kernel per call: measured below 1e-6 of the peak at epsilon 1e-4).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import dask
import numpy as np
from dask.delayed import Delayed

from arl_mpi.graphs import shard_tasks as tasks
from arl_mpi.imaging.gridspec import GridSpec

delayed = dask.delayed


def constant(value: Any) -> Delayed:
    """A value (e.g. the model image) as one graph node that every shard task shares.

    Unlike ``client.scatter``, the value lives in the graph, so when a worker holding it dies
    the scheduler simply sends it again: nothing is lost with the worker.
    """
    return delayed(value, pure=True)


def tree_reduce(items: Sequence[Any], op: Callable[[Any, Any], Any] = operator.add) -> Delayed:
    """Binary-tree reduction of delayed values in list order (depth log2 n)."""
    level = list(items)
    if not level:
        raise ValueError("tree_reduce of an empty list")
    while len(level) > 1:
        nxt = [delayed(op, pure=True)(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0] if isinstance(level[0], Delayed) else delayed(level[0])


def _add_pair(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return a[0] + b[0], a[1] + b[1]


def tree_sum_images(partials: Sequence[Delayed]) -> Delayed:
    """Tree-sum of ``(image_sum, sumwt)`` pairs."""
    return tree_reduce(partials, _add_pair)


def split_contiguous(sizes: Sequence[float], ngroups: int) -> list[tuple[int, ...]]:
    """Split items ``0..n-1`` into at most ``ngroups`` contiguous groups of similar total size.

    Parameters
    ----------
    sizes : size of each item, in order
    ngroups : wanted groups; fewer when there are fewer items

    Returns
    -------
    groups : item indices of each group, in order; every item in exactly one
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    n = sizes.size
    k = max(1, min(int(ngroups), n))
    if n == 0:
        return []
    bounds = [0]
    cum = np.cumsum(sizes)
    total = cum[-1] if cum[-1] > 0 else float(n)
    if cum[-1] <= 0:
        cum = np.arange(1, n + 1, dtype=np.float64)
    for j in range(1, k):
        cut = int(np.searchsorted(cum, total * j / k, side="left")) + 1
        cut = min(max(cut, bounds[-1] + 1), n - (k - j))
        bounds.append(cut)
    bounds.append(n)
    return [tuple(range(bounds[i], bounds[i + 1])) for i in range(k)]


def plan_chunks(partition_sizes: Sequence[int], chunk_samples: int) -> list[tuple[int, ...]]:
    """Consecutive partitions grouped into chunks of about ``chunk_samples`` samples each.

    The plan depends on the data only (and, through ``chunk_samples``, on the image size),
    never on the number of workers: every ducc0 call then sees the same visibilities on any
    cluster. ``chunk_samples`` should be large against the image (a call's FFTs cost about
    as much as gridding a few samples per pixel), see :func:`chunk_samples_for`.
    """
    total = float(np.sum(partition_sizes))
    n = max(1, int(np.ceil(total / max(int(chunk_samples), 1))))
    return split_contiguous(partition_sizes, n)


def chunk_samples_for(grid: GridSpec, samples_per_pixel: float = 2.0, floor: int = 1 << 18) -> int:
    """Default chunk size: ``samples_per_pixel`` x image pixels (at least ``floor``).

    ducc0's per-call cost beyond the gridding itself (FFTs of the oversampled grid, w-planes)
    is about that of gridding one sample per pixel, so two or more samples per pixel keep the
    per-call overhead a fraction of the gridding while leaving many chunks to spread.
    """
    return max(int(floor), int(samples_per_pixel * grid.npix_x * grid.npix_y))


def plan_shards(chunk_sizes: Sequence[int], nworkers: int) -> list[tuple[int, ...]]:
    """Chunks ``0..n-1`` grouped into at most ``nworkers`` contiguous shards of similar size."""
    return split_contiguous(chunk_sizes, nworkers)


def load_graph(store_path: str, shards: Sequence[Sequence[Sequence[int]]], stokes: str = "I", verify: bool = True,
               stream: bool = False, max_batch_samples: int = 50_000_000,
               solutions: str | None = None) -> list[Delayed]:
    """One delayed shard per entry of ``shards`` (each a list of chunks, each a list of
    partition ids), loaded on whichever worker runs it.

    With ``stream`` the shards are :class:`~arl_mpi.graphs.shard_tasks.StreamShard` recipes
    (nothing is read until a gridding task runs, and then a chunk at a time). ``solutions``:
    an h5parm applied to every partition as it is read (``--apply-solutions``).
    """
    def chunks(shard):
        return tuple(tuple(int(p) for p in c) for c in shard)

    if stream:
        return [constant(tasks.StreamShard(str(store_path), chunks(sh), stokes, verify, int(max_batch_samples),
                                           solutions=solutions))
                for sh in shards]
    return [delayed(tasks.load_shard, pure=True)(str(store_path), chunks(sh), stokes, verify, solutions)
            for sh in shards]


def shard_layout(partition_sizes: Sequence[int], nworkers: int, chunk_samples: int) -> list[list[tuple[int, ...]]]:
    """Partitions -> chunks (:func:`plan_chunks`) -> one shard of whole chunks per worker."""
    chunks = plan_chunks(partition_sizes, chunk_samples)
    sizes = [sum(partition_sizes[p] for p in c) for c in chunks]
    return [[chunks[i] for i in g] for g in plan_shards(sizes, nworkers)]


def counts_graph(shards: Sequence[Delayed]) -> Delayed:
    """Total :class:`~arl_mpi.graphs.shard_tasks.VisCounts`."""
    return tree_reduce([delayed(tasks.counts_shard, pure=True)(d) for d in shards], tasks.add_counts)


def weight_density_graph(shards: Sequence[Delayed], grid: GridSpec) -> Delayed:
    """Global uv weight density: per-shard grids, tree-summed."""
    return tree_reduce([delayed(tasks.density_shard, pure=True)(d, grid) for d in shards], operator.add)


def reweight_graph(shards: Sequence[Delayed], grid: GridSpec, weighting: Delayed | tasks.Weighting) -> list[Delayed]:
    """Imaging weights applied to every shard (the weighting, with its density, is one graph node)."""
    return [delayed(tasks.reweight_shard, pure=True)(d, grid, weighting) for d in shards]


def invert_graph(shards: Sequence[Delayed], grid: GridSpec, model: Delayed | np.ndarray | None = None) -> Delayed:
    """Tree-summed ``(image_sum, sumwt)``; with a model, the residual ``vis - predict(model)``."""
    return tree_sum_images([delayed(tasks.invert_shard, pure=True)(d, grid, model) for d in shards])


def psf_graph(shards: Sequence[Delayed], grid: GridSpec) -> Delayed:
    """Tree-summed un-normalised PSF ``(image_sum, sumwt)``."""
    return tree_sum_images([delayed(tasks.psf_shard, pure=True)(d, grid) for d in shards])


def normalise(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``image_sum / sumwt`` per output channel, float64 (channels with no weight stay zero)."""
    img, sw = pair
    out = np.zeros(img.shape, dtype=np.float64)
    ok = np.asarray(sw) > 0
    out[ok] = img[ok] / np.asarray(sw)[ok][:, None, None]
    return out


def map_graph(fn: Callable, items: Sequence[Any], *args, **kwargs) -> list[Delayed]:
    """Generic map: ``fn(item, *args, **kwargs)`` for every item (shard or image)."""
    return [delayed(fn, pure=True)(it, *args, **kwargs) for it in items]


def model_constant(model: np.ndarray, grid: GridSpec) -> Delayed:
    """The model as one graph node in the gridder's precision (what ducc0 degrids: float32
    unless ``double``), so the model sent to each worker costs half the bytes of float64."""
    return constant(np.ascontiguousarray(model, dtype=np.float64 if grid.double else np.float32))


def persist_on_workers(client, items: Sequence[Delayed], placement: Sequence[int] | None = None) -> list:
    """Compute delayed items into futures, item ``i`` preferring worker ``placement[i] mod n``
    (default ``i mod n``; workers sorted by address).

    The results stay on the workers (the driver holds only futures). Placement is a
    preference: if a worker dies, its items are recomputed (reloaded) elsewhere.
    """
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        return client.compute(list(items))
    where = list(range(len(items))) if placement is None else list(placement)
    return [client.compute(it, workers=[workers[k % len(workers)]], allow_other_workers=True)
            for it, k in zip(items, where, strict=True)]
