"""The graph layer in-process: shard graphs run with Dask's synchronous scheduler must equal
the serial numeric functions on the concatenated partitions (double precision, 1e-12), for
any shard plan, resident or streamed. Seconds, no cluster."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from helpers import small_meta, small_visibility

from arl_mpi import graphs
from arl_mpi.graphs import shard_tasks as tasks
from arl_mpi.imaging.gridding import invert_unnormalised, predict, psf_unnormalised
from arl_mpi.imaging.stokes import to_stokes
from arl_mpi.imaging.weighting import apply_weighting, grid_weight_density
from arl_mpi.io.store import open_store, write_store

NTIME, NFREQ = 6, 2


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    vis = small_visibility(nrow=240, nchan=4, seed=3)
    vis.uvw[:] = np.random.default_rng(5).normal(0, 60, vis.uvw.shape)  # within the 64x64 grid's uv range
    path = tmp_path_factory.mktemp("shards") / "obs.store"
    write_store(path, small_meta(vis), vis, ntime_parts=NTIME, nfreq_parts=NFREQ)
    return path, vis


def _grid(index, channels_out=2):
    return graphs.GridSpec(npix_x=64, npix_y=64, cell=np.deg2rad(0.1), epsilon=1e-12, double=True,
                           channels_out=channels_out, nchan_total=int(index.meta.frequency.size))


def _serial(vis, grid, model=None, weighting=None):
    """Serial reference: the whole observation in one array, per output channel."""
    s_vis, s_wt, s_fl = to_stokes(vis.vis, vis.weight, vis.flags, list(vis.polarisations), "I")
    s_wt = s_wt.astype(np.float32).astype(np.float64)
    if weighting is not None:
        dens = grid_weight_density(vis.uvw, vis.frequency, s_wt, s_fl, grid.npix_x, grid.npix_y, grid.cell)
        s_wt = apply_weighting(vis.uvw, vis.frequency, s_wt, s_fl, dens, weighting, 0.0, cell=grid.cell,
                               npix_x=grid.npix_x, npix_y=grid.npix_y)
        s_wt = s_wt.astype(np.float32).astype(np.float64)  # shards keep float32 weights
    oc = grid.out_channels(0, vis.frequency.size)
    img = np.zeros((grid.channels_out, grid.npix_y, grid.npix_x))
    psf = np.zeros_like(img)
    sw = np.zeros(grid.channels_out)
    kw = grid.gridder_kwargs()
    for o in range(grid.channels_out):
        sel = oc == o
        v = s_vis[:, sel].astype(np.complex64).astype(np.complex128)
        if model is not None:
            v = v - predict(vis.uvw, vis.frequency[sel], model[o], grid.cell, **kw)
        img[o], sw[o] = invert_unnormalised(vis.uvw, vis.frequency[sel], v, s_wt[:, sel], s_fl[:, sel],
                                            grid.npix_x, grid.npix_y, grid.cell, **kw)
        psf[o], _ = psf_unnormalised(vis.uvw, vis.frequency[sel], s_wt[:, sel], s_fl[:, sel],
                                     grid.npix_x, grid.npix_y, grid.cell, **kw)
    return img, psf, sw


def _shards(path, plan, stream=False, batch=10**9):
    return graphs.load_graph(str(path), plan, stream=stream, max_batch_samples=batch)


@pytest.mark.parametrize("nshards,chunk", [(1, 10**9), (2, 10**9), (2, 700), (5, 300), (NTIME * NFREQ, 1)])
@pytest.mark.parametrize("stream", [False, True])
def test_shard_graphs_equal_serial(store, nshards, chunk, stream):
    path, vis = store
    index = open_store(path)
    grid = _grid(index)
    sizes = [p.nsamples for p in index.partitions]
    plan = graphs.shard_layout(sizes, nshards, chunk)
    data = _shards(path, plan, stream=stream, batch=200)  # stream: several batches per shard
    model = np.zeros((2, 64, 64))
    model[0, 30, 34], model[1, 40, 20] = 2.0, -1.0
    ref_img, ref_psf, ref_sw = _serial(vis, grid, model)
    with dask.config.set(scheduler="synchronous"):
        img, sw = dask.compute(graphs.invert_graph(data, grid, graphs.model_constant(model, grid)))[0]
        psf, psw = dask.compute(graphs.psf_graph(data, grid))[0]
        counts = dask.compute(graphs.counts_graph(data))[0]
    peak = np.abs(ref_img).max()
    assert np.abs(img - ref_img).max() <= 1e-12 * peak
    assert np.abs(psf - ref_psf).max() <= 1e-12 * np.abs(ref_psf).max()
    np.testing.assert_allclose(sw, ref_sw, rtol=1e-12)
    np.testing.assert_allclose(psw, ref_sw, rtol=1e-12)
    assert counts.samples == vis.vis.shape[0] * vis.vis.shape[1]


def test_uniform_weighting_graph_equals_serial(store):
    path, vis = store
    index = open_store(path)
    grid = _grid(index)
    plan = graphs.shard_layout([p.nrow for p in index.partitions], 3, 100)
    data = _shards(path, plan)
    with dask.config.set(scheduler="synchronous"):
        density = dask.compute(graphs.weight_density_graph(data, grid))[0]
        w = graphs.reweight_graph(data, grid, graphs.constant(graphs.Weighting("uniform", 0.0, None, density)))
        img, sw = dask.compute(graphs.invert_graph(w, grid))[0]
    ref_img, _, ref_sw = _serial(vis, grid, weighting="uniform")
    assert np.abs(img - ref_img).max() <= 1e-12 * np.abs(ref_img).max()
    np.testing.assert_allclose(sw, ref_sw, rtol=1e-12)


def test_shard_merges_time_partitions_into_one_block_per_channel_set(store):
    """A worker's shard grids with one ducc0 call per output channel per channel set,
    however many time partitions it holds."""
    path, _ = store
    index = open_store(path)
    shard = tasks.load_shard(str(path), [range(len(index.partitions))])
    assert len(shard.blocks) == NFREQ
    assert sorted(p for b in shard.blocks for p in b.pids) == list(range(NTIME * NFREQ))
    assert sum(b.vis.shape[0] for b in shard.blocks) == NFREQ * 240


def test_tasks_per_cycle_grow_with_shards_not_partitions(store):
    path, _ = store
    index = open_store(path)
    grid = _grid(index)
    for nshards in (1, 2, 3):
        plan = graphs.shard_layout([1] * len(index.partitions), nshards, 1)  # one chunk per partition
        g = graphs.invert_graph(_shards(path, plan), grid, graphs.model_constant(np.zeros((2, 64, 64)), grid))
        keys = [k for k in dict(g.__dask_graph__()) if "invert_shard" in str(k) or "add_pair" in str(k)]
        assert len(keys) == 2 * nshards - 1, keys


@pytest.mark.parametrize("n,k", [(1, 1), (5, 2), (12, 5), (3, 8), (64, 14)])
def test_split_contiguous_is_a_partition(n, k):
    rng = np.random.default_rng(n * 31 + k)
    sizes = rng.integers(1, 100, n)
    plan = graphs.split_contiguous(sizes, k)
    assert len(plan) == min(n, k)
    assert [p for g in plan for p in g] == list(range(n))
    assert all(len(g) >= 1 for g in plan)
    if n >= 4 * k:  # balanced to within the largest partition
        loads = [sizes[list(g)].sum() for g in plan]
        assert max(loads) - min(loads) <= 2 * sizes.max()


def test_chunk_plan_does_not_depend_on_workers():
    """The same chunks (so the same ducc0 calls) for 1..16 workers; shards are whole chunks."""
    sizes = [100] * 64
    chunks = graphs.plan_chunks(sizes, 800)
    assert len(chunks) == 8 and all(len(c) == 8 for c in chunks)
    for nw in (1, 2, 3, 7, 16):
        layout = graphs.shard_layout(sizes, nw, 800)
        assert [c for sh in layout for c in sh] == chunks
        assert len(layout) == min(nw, 8)


def test_default_chunk_is_large_against_the_image():
    grid = graphs.GridSpec(npix_x=2048, npix_y=2048, cell=1e-5)
    assert graphs.chunk_samples_for(grid) == 2 * 2048 * 2048
    assert graphs.chunk_samples_for(graphs.GridSpec(npix_x=64, npix_y=64, cell=1e-3)) == 1 << 18


def test_dask_sees_the_size_of_a_shard(store):
    """The scheduler weighs data placement by sizeof(): a shard must report its bytes, or tasks
    are sent to the (smaller) model and whole shards move between workers."""
    from dask.sizeof import sizeof

    path, _ = store
    shard = tasks.load_shard(str(path), [range(NTIME * NFREQ)])
    assert shard.nbytes > 20_000
    assert shard.nbytes <= sizeof(shard) <= shard.nbytes + 4096
    assert sizeof(shard.blocks[0]) >= shard.blocks[0].nbytes


def test_channel_runs_are_the_output_channel_map():
    oc = np.array([0, 0, 1, 1, 1, 3])
    runs = tasks._channel_runs(oc)
    assert runs == [(0, slice(0, 2)), (1, slice(2, 5)), (3, slice(5, 6))]
    assert tasks._channel_runs(np.zeros(0, int)) == []


def test_residual_task_grids_the_resident_arrays_without_copies(store, monkeypatch):
    """With one output channel the residual task hands ducc0 the shard's own arrays (no weighted,
    subtracted or sliced copies); with two, each output channel's columns."""
    path, _ = store
    index = open_store(path)
    shard = tasks.load_shard(str(path), [range(len(index.partitions))])
    seen = []

    def spy(uvw, freq, vis, model, weight, flags, cell, **kw):
        seen.append((vis, weight, flags, freq.size))
        return np.zeros(model.shape), 1.0

    monkeypatch.setattr(tasks, "residual_unnormalised", spy)
    model = np.ones((1, 64, 64))
    tasks.invert_shard(shard, _grid(index, channels_out=1), model)
    assert len(seen) == NFREQ
    for (v, w, f, _), b in zip(seen, shard.blocks, strict=True):
        assert v is b.vis and w is b.weight and f is b.flags
    seen.clear()
    tasks.invert_shard(shard, _grid(index, channels_out=2), np.ones((2, 64, 64)))
    assert sum(n for *_, n in seen) == sum(b.freq.size for b in shard.blocks)
    assert all(v.flags.c_contiguous for v, *_ in seen)
