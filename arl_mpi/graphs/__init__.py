"""Dask graphs over visibility shards: the layer between the pure numeric code and a cluster.

Public API (what scripts and pipelines use)::

    from arl_mpi.graphs import GridSpec, shard_layout, load_graph, invert_graph, psf_graph, normalise

* :mod:`arl_mpi.graphs.shard_tasks` — the functions that run on a worker (one per task);
* :mod:`arl_mpi.graphs.shard_graphs` — one builder per task, returning ``dask.delayed``;
* :mod:`arl_mpi.graphs.calibration` — per-partition calibration tasks (ICAL).
"""

from arl_mpi.graphs.shard_graphs import (
    chunk_samples_for,
    constant,
    counts_graph,
    invert_graph,
    load_graph,
    map_graph,
    model_constant,
    normalise,
    persist_on_workers,
    plan_chunks,
    plan_shards,
    psf_graph,
    reweight_graph,
    shard_layout,
    split_contiguous,
    tree_reduce,
    tree_sum_images,
    weight_density_graph,
)
from arl_mpi.graphs.shard_tasks import (
    Shard,
    StreamShard,
    VisBlock,
    VisCounts,
    Weighting,
    require_data,
)
from arl_mpi.imaging.gridspec import GridSpec

__all__ = [
    "GridSpec", "Shard", "StreamShard", "VisBlock", "VisCounts", "Weighting", "chunk_samples_for", "constant",
    "counts_graph", "invert_graph", "load_graph", "map_graph", "model_constant", "normalise", "persist_on_workers",
    "plan_chunks", "plan_shards", "psf_graph", "require_data", "reweight_graph", "shard_layout", "split_contiguous",
    "tree_reduce", "tree_sum_images", "weight_density_graph",
]
