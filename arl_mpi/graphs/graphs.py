"""Dask graphs over partitions: build with these functions, run with any client.

Every builder returns ``dask.delayed`` objects. A script can ``.compute()`` them, a
pipeline can ``client.persist`` the loaded partitions so they stay resident on the workers
and then compute images from them cycle after cycle: only images move.

Sums over partitions are binary trees in a fixed order (partition order), so the result
is bit-identical whatever the number of workers.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import dask
import numpy as np
from dask.delayed import Delayed

from arl_mpi.graphs import partitions as P

delayed = dask.delayed


def constant(value: Any) -> Delayed:
    """A value (e.g. the model image) as one graph node that every partition task shares.

    Unlike ``client.scatter``, the value lives in the graph, so when a worker holding it dies
    the scheduler simply sends it again: nothing is lost with the worker.
    """
    return delayed(value, pure=True)


def tree_reduce(items: Sequence[Any], op: Callable[[Any, Any], Any] = operator.add, name: str = "sum") -> Delayed:
    """Binary-tree reduction of delayed values in list order (depth log2 n)."""
    level = list(items)
    if not level:
        raise ValueError("tree_reduce of an empty list")
    while len(level) > 1:
        nxt = [delayed(op, pure=True)(level[i], level[i + 1])
               for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0] if isinstance(level[0], Delayed) else delayed(level[0])


def _add_pair(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return a[0] + b[0], a[1] + b[1]


def tree_sum_images(partials: Sequence[Delayed]) -> Delayed:
    """Tree-sum of ``(image_sum, sumwt)`` pairs."""
    return tree_reduce(partials, _add_pair, name="image-sum")


def load_graph(store_path: str, pids: Sequence[int], stokes: str = "I", verify: bool = True) -> list[Delayed]:
    """One delayed ImagingData per partition, loaded on whichever worker runs it."""
    return [delayed(P.load_imaging_data, pure=True)(str(store_path), pid, stokes, verify)
            for pid in pids]


def _combine_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([a[0] + b[0], a[1] + b[1], a[2] + b[2], max(a[3], b[3])])


def counts_graph(data: Sequence[Delayed]) -> Delayed:
    """Total ``[samples, unflagged, flagged-on-load, max uv (wavelengths)]``."""
    return tree_reduce([delayed(P.counts, pure=True)(d) for d in data], _combine_counts, name="counts")


def weight_density_graph(data: Sequence[Delayed], grid: P.GridSpec) -> Delayed:
    """Global uv weight density: per-partition grids, tree-summed."""
    return tree_reduce([delayed(P.weight_density, pure=True)(d, grid) for d in data], operator.add, name="density")


def reweight_graph(data: Sequence[Delayed], grid: P.GridSpec, density: Delayed | np.ndarray | None, scheme: str,
                   robust: float, taper_fwhm_rad: float | None) -> list[Delayed]:
    """Imaging weights applied to every partition (density broadcast to all)."""
    return [delayed(P.reweight, pure=True)(d, grid, density, scheme, robust, taper_fwhm_rad) for d in data]


def invert_graph(data: Sequence[Delayed], grid: P.GridSpec, model: Delayed | np.ndarray | None = None) -> Delayed:
    """Tree-summed ``(image_sum, sumwt)``; with a model, the residual ``vis - predict(model)``."""
    return tree_sum_images([delayed(P.invert_partial, pure=True)(d, grid, model) for d in data])


def psf_graph(data: Sequence[Delayed], grid: P.GridSpec) -> Delayed:
    """Tree-summed un-normalised PSF ``(image_sum, sumwt)``."""
    return tree_sum_images([delayed(P.psf_partial, pure=True)(d, grid) for d in data])


def normalise(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``image_sum / sumwt`` per output channel (channels with no weight stay zero)."""
    img, sw = pair
    out = np.zeros_like(img)
    ok = sw > 0
    out[ok] = img[ok] / sw[ok][:, None, None]
    return out


def map_graph(fn: Callable, items: Sequence[Any], *args, **kwargs) -> list[Delayed]:
    """Generic map: ``fn(item, *args, **kwargs)`` for every item (image or visibility partition)."""
    return [delayed(fn, pure=True)(it, *args, **kwargs) for it in items]


def gather(items: Sequence[Delayed]) -> Delayed:
    """One delayed list of all items (to bring small results to the caller)."""
    return delayed(list)(items)
