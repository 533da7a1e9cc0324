"""Steps every pipeline (continuum, ICAL, spectral) shares.

Grid spec and output frequencies of a run, the memory and cell checks, memory admission
(resident or streamed shards), loading and weighting the shards on the workers, images
from tree-summed partials, PSF + dirty image, dynamic range, and the summary block that
every pipeline writes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import dask
import numpy as np
from distributed import wait

from arl_mpi.calibration.solutions import solutions_from_file
from arl_mpi.errors import ConfigError
from arl_mpi.graphs import shard_graphs as graphs
from arl_mpi.graphs.shard_tasks import (
    BYTES_PER_ROW,
    BYTES_PER_SAMPLE,
    VisCounts,
    Weighting,
    require_data,
)
from arl_mpi.imaging.beam import fit_beam
from arl_mpi.imaging.gridspec import GridSpec, output_channel_map
from arl_mpi.imaging.weighting import cell_weights, padded_size
from arl_mpi.io.store import StoreIndex
from arl_mpi.pipeline import minor
from arl_mpi.pipeline.settings import Settings

log = logging.getLogger("arl_mpi.pipeline")


def grid_spec(s: Settings, index: StoreIndex, channels_out: int | None = None) -> GridSpec:
    """Image geometry and gridder settings of a run on ``index``."""
    nchan = int(index.meta.frequency.size)
    nout = s.channels_out if channels_out is None else channels_out
    if nout > nchan:
        raise ConfigError(f"channels-out: {nout} exceeds the {nchan} channels of {index.path}")
    return GridSpec(npix_x=s.size[0], npix_y=s.size[1], cell=s.cell_rad, epsilon=s.epsilon,
                    nthreads=s.gridder_threads, do_wgridding=s.w_correction, double=s.double,
                    channels_out=nout, nchan_total=nchan)


def output_frequencies(index: StoreIndex, channels_out: int) -> np.ndarray:
    """Mean frequency of each output channel."""
    f = index.meta.frequency
    oc = output_channel_map(np.arange(f.size), channels_out, f.size)
    return np.array([f[oc == o].mean() for o in range(channels_out)])


def estimate_driver_memory(s: Settings) -> int:
    """Bytes of images the driver holds (about 10 float64 planes per output channel)."""
    return int(10 * 8 * s.size[0] * s.size[1] * s.channels_out)


def check_memory(s: Settings) -> None:
    """Refuse an image too large for this machine's memory, before any work starts."""
    import psutil

    need = estimate_driver_memory(s)
    avail = psutil.virtual_memory().available
    if need > 0.8 * avail:
        raise ConfigError(f"size: {s.size[0]}x{s.size[1]} x {s.channels_out} channel(s) needs about "
                          f"{need / 2**30:.1f} GiB on the driver but only {avail / 2**30:.1f} GiB is available")


def check_cell(s: Settings, uvmax_wavelengths: float) -> str | None:
    """Warn (return the message) when the pixel does not Nyquist-sample the longest baseline."""
    if uvmax_wavelengths <= 0:
        return None
    nyquist = 1.0 / (2.0 * uvmax_wavelengths)
    if s.cell_rad > nyquist:
        msg = (f"scale {np.rad2deg(s.cell_rad) * 3600:.3g} asec does not sample the longest baseline "
               f"({uvmax_wavelengths:.0f} wavelengths): use <= {np.rad2deg(nyquist) * 3600:.3g} asec")
        log.warning(msg)
        return msg
    return None


# ---- memory admission ------------------------------------------------------------------


@dataclass
class MemoryPlan:
    """Estimated memory of a run and the decision taken on it (``--memory-check``).

    Attributes
    ----------
    worker_resident_bytes : peak while the largest shard loads (its blocks and their merged copy,
        one partition's raw read) plus gridding work space
    worker_process_bytes : the largest worker process before any data (modules imported)
    worker_stream_bytes : the same with ``--stream`` (one batch at a time)
    worker_budget_bytes : what a worker may use: its limit x Dask's target fraction, less
        what the worker process already uses (None: no limit)
    driver_bytes : images on the driver
    stream : whether the shards are streamed; switched : True when admission switched to it
    max_batch_samples : samples read and gridded at once under ``--stream``
    """

    worker_resident_bytes: int
    worker_stream_bytes: int
    worker_budget_bytes: int | None
    driver_bytes: int
    stream: bool
    switched: bool = False
    max_batch_samples: int = 50_000_000
    worker_process_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the summary."""
        return {"worker_resident_estimate_bytes": self.worker_resident_bytes,
                "worker_stream_estimate_bytes": self.worker_stream_bytes,
                "worker_budget_bytes": self.worker_budget_bytes, "driver_estimate_bytes": self.driver_bytes,
                "worker_process_bytes": self.worker_process_bytes,
                "mode": "stream" if self.stream else "resident", "switched_to_stream": self.switched,
                "max_batch_samples": self.max_batch_samples}


def gridder_work_bytes(grid: GridSpec) -> int:
    """ducc0's work space for one call (an oversampled complex grid, about (2N)^2) plus the task's
    partial image, the model and a copy: a bound used for admission, not an exact figure."""
    item = 16 if grid.double else 8
    return int(4 * grid.npix_x * grid.npix_y * item + 3 * grid.image_bytes())


def shard_sizes(index: StoreIndex, shards: list[list[tuple[int, ...]]]) -> list[tuple[int, int]]:
    """``(samples, rows)`` of each shard, from the store's index (nothing is read)."""
    out = []
    for chunks in shards:
        parts = [index.partitions[p] for c in chunks for p in c]
        out.append((sum(p.nsamples for p in parts), sum(p.nrow for p in parts)))
    return out


def _worker_process_bytes() -> int:
    """Resident memory of this worker process once it has imported what the tasks import."""
    import psutil

    import arl_mpi.graphs.shard_tasks  # noqa: F401 (the tasks' imports: h5py, ducc0, astropy)

    return int(psutil.Process().memory_info().rss)


def _worker_budget(client) -> tuple[int | None, int]:
    """Smallest per-worker budget (memory limit x Dask's target fraction, less what the worker
    process itself uses with the tasks' modules imported) and the largest process size."""
    info = client.scheduler_info()["workers"]
    frac = dask.config.get("distributed.worker.memory.target", 0.6) or 0.6
    try:
        used = {k: int(v) for k, v in client.run(_worker_process_bytes).items()}
    except Exception:  # noqa: BLE001 - a worker that cannot run it: fall back on Dask's metric
        used = {}
    budgets = []
    for addr, w in info.items():
        limit = int(w.get("memory_limit") or 0)
        rss = used.get(addr, int((w.get("metrics") or {}).get("memory", 0) or 0))
        if limit > 0:
            budgets.append(int(limit * frac) - rss)
    return (min(budgets) if budgets else None), max(used.values(), default=0)


def plan_memory(client, s: Settings, index: StoreIndex, grid: GridSpec,
                shards: list[list[tuple[int, ...]]]) -> MemoryPlan:
    """Estimate worker and driver memory; decide resident or streamed shards (``--memory-check``).

    Raises
    ------
    ConfigError with the numbers and the flags to change, when ``--memory-check refuse``
    and the resident shards would not fit.
    """
    sizes = shard_sizes(index, shards)
    largest_part = max((p.nsamples for p in index.partitions), default=0)
    largest_chunk = max((sum(index.partitions[p].nsamples for p in c) for sh in shards for c in sh), default=0)
    npol = max(1, len(index.meta.polarisations))
    raw = BYTES_PER_SAMPLE * (2 * npol + 1)  # a partition read (all correlations), sanitised, to Stokes
    load_transient = largest_part * raw
    work = gridder_work_bytes(grid)
    shard = max((n * BYTES_PER_SAMPLE + r * BYTES_PER_ROW for n, r in sizes), default=0)
    resident = 2 * shard + work + load_transient  # the shard's blocks and their merged copy
    budget, process = _worker_budget(client) if s.memory_check != "off" else (None, 0)
    per_sample_stream = raw + BYTES_PER_SAMPLE + 8  # a batch read + its merged copy + model visibilities
    batch = 50_000_000
    if budget is not None:
        batch = max(1, int((budget - work) / per_sample_stream)) if budget > work else 1
    batch = max(batch, largest_part)  # a batch holds at least one partition
    stream_bytes = min(largest_chunk, batch) * per_sample_stream + work
    plan = MemoryPlan(worker_resident_bytes=int(resident), worker_stream_bytes=int(stream_bytes),
                      worker_budget_bytes=budget, driver_bytes=estimate_driver_memory(s), stream=s.stream,
                      worker_process_bytes=process,
                      max_batch_samples=int(batch))
    log.info("memory estimate: %.3g GiB per worker resident (%.3g GiB streamed), budget %s; driver %.3g GiB",
             resident / 2**30, stream_bytes / 2**30,
             "unlimited" if budget is None else f"{budget / 2**30:.3g} GiB", plan.driver_bytes / 2**30)
    if s.stream or budget is None or resident <= budget:
        return plan
    need = (f"resident visibilities need about {resident / 2**20:.0f} MiB per worker but a worker may use "
            f"{max(budget, 0) / 2**20:.0f} MiB (--memory-limit {s.memory_limit} x "
            f"{dask.config.get('distributed.worker.memory.target', 0.6)} less the process's own memory)")
    if s.memory_check == "refuse":
        raise ConfigError(f"memory-check: {need}: raise --memory-limit, add workers, or use --stream")
    log.warning("%s: streaming the shards from the store instead (--stream)", need)
    plan.stream, plan.switched = True, True
    return plan


# ---- shards on the workers -----------------------------------------------------------------


@dataclass
class ImagingShards:
    """The run's shards (futures of resident shards, or stream recipes) and what is known of them."""

    data: list
    counts: VisCounts
    grid: GridSpec
    shards: list[list[tuple[int, ...]]]
    stream: bool
    memory: MemoryPlan | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def traffic_per_cycle(self, nworkers: int) -> dict[str, int]:
        """Bytes moved and tasks run by one major cycle (partials up, the model down)."""
        n = len(self.data)
        model_bytes = self.grid.image_bytes() // (1 if self.grid.double else 2)  # sent in the gridder's precision
        return {"shards": n, "chunks": sum(len(sh) for sh in self.shards), "gridding_tasks": n,
                "reduction_tasks": max(n - 1, 0),
                "partial_image_bytes_up": n * self.grid.image_bytes(),
                "model_bytes_down": min(n, max(nworkers, 1)) * model_bytes}


def shard_plan(client, s: Settings, index: StoreIndex, grid: GridSpec) -> list[list[tuple[int, ...]]]:
    """The run's shards, each a list of chunks (partition ids).

    ``--shards worker``: partitions -> chunks of about
    :func:`~arl_mpi.graphs.shard_graphs.chunk_samples_for` samples (a plan that does not
    depend on the workers) -> one shard of whole chunks per worker. ``--shards partition``:
    every partition its own chunk and shard (one task per partition, as before shards).
    """
    sizes = [p.nsamples for p in index.partitions]
    if s.shards == "partition":
        return [[(i,)] for i in range(len(sizes))]
    nworkers = max(1, len(client.scheduler_info()["workers"]))
    return graphs.shard_layout(sizes, nworkers, graphs.chunk_samples_for(grid))


def load_and_weight(client, s: Settings, index: StoreIndex, grid: GridSpec) -> ImagingShards:
    """Load every shard onto its worker (or plan streaming), check it, apply imaging weights."""
    shards = shard_plan(client, s, index, grid)
    mem = plan_memory(client, s, index, grid, shards)
    solutions = None
    if s.apply_solutions:  # checked here, on the driver, before any worker reads it
        solutions = str(Path(s.apply_solutions).resolve())
        log.info("applying %s: %s", solutions, ", ".join(t.name for t in solutions_from_file(solutions).tabs))
    data = graphs.load_graph(str(index.path), shards, s.stokes, s.verify, stream=mem.stream,
                             max_batch_samples=mem.max_batch_samples, solutions=solutions)
    if not mem.stream:
        data = graphs.persist_on_workers(client, data)
    log.info("%d partitions in %d chunks in %d shards (%s)", len(index.partitions),
             sum(len(sh) for sh in shards), len(shards),
             "streamed from the store" if mem.stream else "resident on the workers")
    res = weight_data(client, s, data, grid, str(index.path), stream=mem.stream)
    res.shards, res.memory = shards, mem
    return res


def weight_data(client, s: Settings, data: list, grid: GridSpec, where: str, stream: bool = False) -> ImagingShards:
    """Check the shards (counts, all-flagged) and apply the imaging weights."""
    t0 = time.perf_counter()
    counts = client.compute(graphs.counts_graph(data)).result()
    require_data(counts, where)
    if counts.flagged_on_load:
        log.warning("%s: flagged %d NaN/Inf or negative-weight samples on load", where, counts.flagged_on_load)
    t1 = time.perf_counter()
    scheme, robust = s.weight
    if scheme != "natural" or s.taper_rad:
        cells = None
        if scheme != "natural":  # WSClean's: density on the padded image's uv grid, then the rank filter
            wgrid = replace(grid, npix_x=padded_size(grid.npix_x, s.padding),
                            npix_y=padded_size(grid.npix_y, s.padding))
            density = client.compute(graphs.weight_density_graph(data, wgrid)).result()
            cells = cell_weights(density, scheme, robust, s.weighting_rank_filter, s.weighting_rank_filter_size)
            cells = cells.astype(np.float32)  # what the workers receive: the weights they make are float32
        weighting = graphs.constant(Weighting(scheme, robust, s.taper_rad, cell_weights=cells))
        new = graphs.reweight_graph(data, grid, weighting)
        if not stream:
            new = graphs.persist_on_workers(client, new)
            wait(new)  # the weighted shards exist (on the workers) before the unweighted are released
        data = new
    return ImagingShards(data=data, counts=counts, grid=grid, shards=[], stream=stream,
                         timings={"load_check_s": t1 - t0, "weighting_s": time.perf_counter() - t1})


def image_from(client, graph) -> tuple[np.ndarray, np.ndarray]:
    """Compute a tree-summed ``(image_sum, sumwt)`` and normalise it (float64)."""
    pair = client.compute(graph).result()
    return graphs.normalise(pair), np.asarray(pair[1], dtype=np.float64)


def psf_and_dirty(client, data: list, grid: GridSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple, float]:
    """PSF, sum of weights, dirty image and fitted beam (tree-summed from the workers)."""
    t0 = time.perf_counter()
    psf, psf_sumwt = image_from(client, graphs.psf_graph(data, grid))
    psf_mfs = minor.mfs_image(psf, psf_sumwt) if grid.channels_out > 1 else psf[0]
    beam = fit_beam(psf_mfs, grid.cell)
    dirty, sumwt = image_from(client, graphs.invert_graph(data, grid))
    return psf, sumwt, dirty, beam, time.perf_counter() - t0


def dynamic_range(restored: np.ndarray, residual: np.ndarray) -> float:
    """Peak of the restored cube over the (MAD) noise of the residual *in the peak's channel*.

    ``restored`` and ``residual`` are ``[nchan, ny, nx]``.
    """
    from arl_mpi.deconvolution.common import mad_sigma

    restored = np.asarray(restored).reshape((-1,) + restored.shape[-2:])
    residual = np.asarray(residual).reshape((-1,) + residual.shape[-2:])
    c = int(np.argmax(restored.reshape(restored.shape[0], -1).max(axis=1)))
    return float(np.max(restored[c]) / max(mad_sigma(residual[c]), 1e-30))


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _ducc0_pool() -> int:
    """Threads of this process's ducc0 pool (the cap on every gridding call's ``nthreads``)."""
    import ducc0

    return int(ducc0.misc.thread_pool_size())


def worker_threads(client) -> dict[str, Any]:
    """Per worker address: its Dask threads and its ducc0 pool (``--threads-per-worker``,
    ``--gridder-threads``: a pool smaller than the gridder threads caps them)."""
    info = client.scheduler_info()["workers"]
    try:
        pools = {k: int(v) for k, v in client.run(_ducc0_pool).items()}
    except Exception:  # noqa: BLE001 - a site's worker without ducc0 fails later, with its own error
        pools = {}
    return {k: {"threads": int(w.get("nthreads", 0)), "ducc0_pool": pools.get(k)} for k, w in info.items()}


def peak_memory(client) -> dict[str, Any]:
    """Peak resident memory of the driver, the scheduler and every worker process, in bytes
    (a worker restarted by its nanny reports its own life only)."""
    out: dict[str, Any] = {"driver": _peak_rss()}
    try:
        out["scheduler"] = int(client.run_on_scheduler(_peak_rss))
    except Exception:  # noqa: BLE001 - an external scheduler may not import arl_mpi
        out["scheduler"] = None
    try:
        workers = {k: int(v) for k, v in client.run(_peak_rss).items()}
    except Exception:  # noqa: BLE001
        workers = {}
    out["workers_max"] = max(workers.values(), default=None)
    out["workers"] = workers
    return out


def summary_header(pipeline: str, client, s: Settings, index: StoreIndex, res: ImagingShards | None,
                   beam: tuple[float, float, float] | None) -> dict[str, Any]:
    """The summary block every pipeline writes: what ran where, on which data."""
    nworkers = len(client.scheduler_info()["workers"])
    out: dict[str, Any] = {"pipeline": pipeline, "store": str(index.path), "settings": s.as_dict(),
                           "workers": nworkers, "partitions": len(index.partitions),
                           "worker_threads": worker_threads(client)}
    if res is not None:
        out["shards"] = len(res.data)
        out["visibilities"] = {"samples": int(res.counts.samples), "unflagged": int(res.counts.unflagged),
                               "flagged_on_load": int(res.counts.flagged_on_load),
                               "uvmax_wavelengths": float(res.counts.uvmax_wavelengths)}
        out["per_cycle"] = res.traffic_per_cycle(nworkers)
        if res.memory is not None:
            out["memory"] = res.memory.as_dict()
    if beam is not None:
        out["beam_deg"] = [float(np.rad2deg(b)) for b in beam[:2]] + [float(np.rad2deg(beam[2]))]
    return out
