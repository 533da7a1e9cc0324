"""The major/minor-cycle loop shared by the continuum and ICAL pipelines.

The driver decides (``stop_rule``) and runs the minor cycle — itself, or as sub-image tasks
on the workers with ``--parallel-deconvolution`` — then broadcasts the model as one graph
node; each worker computes ``invert(vis - predict(model))`` for its shard and one partial
image per worker is tree-summed back. A checkpoint is written after every major cycle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arl_mpi.graphs import shard_graphs as graphs
from arl_mpi.imaging.beam import restore
from arl_mpi.imaging.gridspec import GridSpec
from arl_mpi.io.store import StoreIndex
from arl_mpi.pipeline import minor
from arl_mpi.pipeline.common import image_from
from arl_mpi.pipeline.outputs import Checkpoint, make_image, read_checkpoint, write_checkpoint
from arl_mpi.pipeline.settings import Settings

log = logging.getLogger("arl_mpi.pipeline")


@dataclass
class CleanResult:
    """What a major/minor-cycle loop produced."""

    sumwt: np.ndarray
    beam: tuple[float, float, float]
    model: np.ndarray
    residual: np.ndarray
    taylor: np.ndarray | None
    cycles: list[dict[str, Any]]
    niter_done: int
    stop_reason: str
    timings: dict[str, float]
    minor_info: dict[str, Any] = field(default_factory=dict)

    def restored(self, cell: float) -> np.ndarray:
        """Model convolved with the fitted beam plus residual, per output channel."""
        return np.stack([restore(self.model[c], self.residual[c], self.beam, cell) for c in range(self.model.shape[0])])


def task_stream(client):
    """Dask's task stream of the calls inside the ``with`` block (``.data``: one record per task)."""
    from distributed import get_task_stream

    return get_task_stream(client)


def cycle_time_split(records: list[dict], wall: float) -> dict[str, float]:
    """Where a major cycle's wall time went, from its task stream.

    ``gridding_s``: the busiest worker's time in gridding tasks (``invert_shard``);
    ``reduction_s``: time in the tree sum's additions on its critical path (one per level);
    ``overhead_s``: the rest (scheduling, transfers, the driver's normalisation).
    """
    per_worker: dict[str, float] = {}
    adds: list[float] = []
    for r in records:
        key = str(r.get("key", ""))
        spent = sum(ss["stop"] - ss["start"] for ss in r.get("startstops", []) if ss.get("action") == "compute")
        if "invert_shard" in key:
            per_worker[r.get("worker", "")] = per_worker.get(r.get("worker", ""), 0.0) + spent
        elif "add_pair" in key:
            adds.append(spent)
    gridding = max(per_worker.values(), default=0.0)
    depth = int(np.ceil(np.log2(max(len(per_worker), 1)))) if per_worker else 0
    reduction = float(np.sum(sorted(adds, reverse=True)[:depth])) if adds else 0.0
    return {"gridding_s": round(gridding, 3), "reduction_s": round(reduction, 3),
            "overhead_s": round(max(wall - gridding - reduction, 0.0), 3),
            "gridding_workers": len(per_worker), "gridding_tasks_per_worker": sorted(
                sum(1 for r in records if "invert_shard" in str(r.get("key", "")) and r.get("worker") == w)
                for w in per_worker)}


def run_minor_cycle(client, s: Settings, residual: np.ndarray, psf: np.ndarray, sumwt: np.ndarray,
                    freqs_out: np.ndarray, cs, niter_done: int) -> tuple[np.ndarray, dict[str, Any]]:
    """One minor cycle: on the driver, or as sub-image tasks on the workers
    (``--parallel-deconvolution MAXSIZE``). Returns the model increment cube and its info."""
    if not s.parallel_deconvolution:
        return minor.deconvolve(residual, psf, sumwt, freqs_out, cs, niter_done, s.fit_spectral_pol)
    from arl_mpi.pipeline.parallel_minor import deconvolve_on_workers

    return deconvolve_on_workers(client, s, residual, psf, sumwt, freqs_out, cs, niter_done)


def clean_loop(client, s: Settings, data: list, grid: GridSpec, freqs_out: np.ndarray, psf: np.ndarray,
               sumwt: np.ndarray, dirty: np.ndarray, beam: tuple, checkpoint_name: str | None = None,
               resume: bool = False) -> CleanResult:
    """Major/minor cycles: minor cycle on the driver, residuals from the workers.

    With ``checkpoint_name`` a checkpoint is written after every major cycle; with
    ``resume`` the loop continues from it (settings must match).
    """
    cs = minor.clean_settings(s)
    model = np.zeros_like(dirty)
    taylor = None
    residual = dirty
    cycles: list[dict[str, Any]] = []
    niter_done, cycle, stop_reason = 0, 0, "niter" if s.niter == 0 else ""
    if resume and checkpoint_name:
        ck = read_checkpoint(checkpoint_name, s.image_settings())
        model, cycle, niter_done, cycles, taylor = ck.model, ck.cycle, ck.niter_done, ck.cycles, ck.taylor
        log.info("resuming after major cycle %d (%d components)", cycle, niter_done)
        if cycle:
            residual, _ = image_from(client, graphs.invert_graph(data, grid, graphs.model_constant(model, grid)))
    last_minor = None
    minor_info: dict[str, Any] = {"where": "driver", "subimages": None}
    t_major = t_minor = 0.0
    while s.niter > 0:
        peak, sigma = minor.residual_stats(residual, sumwt, cs.mask)  # a --fits-mask: the peak inside it
        stop, stop_reason = minor.stop_rule(peak, sigma, niter_done, cycle, cs, last_minor)
        if stop:
            break
        tm = time.perf_counter()
        update, info = run_minor_cycle(client, s, residual, psf, sumwt, freqs_out, cs, niter_done)
        minor_info = {"where": info.get("where", "driver"), "subimages": info.get("subimages")}
        dt_minor = time.perf_counter() - tm
        t_minor += dt_minor
        last_minor = int(info["niter"])
        niter_done += last_minor
        model = model + update
        if "taylor" in info:
            taylor = info["taylor"] if taylor is None else taylor + info["taylor"]
        tj = time.perf_counter()
        with task_stream(client) as ts:
            residual, _ = image_from(client, graphs.invert_graph(data, grid, graphs.model_constant(model, grid)))
        dt_major = time.perf_counter() - tj
        split = cycle_time_split(ts.data, dt_major)
        t_major += dt_major
        cycle += 1
        new_peak, new_sigma = minor.residual_stats(residual, sumwt, cs.mask)
        rec = {"cycle": cycle, "minor_iterations": last_minor, "total_iterations": niter_done,
               "start_peak": peak, "peak": new_peak, "rms_mad": new_sigma,
               "model_flux": float(model.sum() / model.shape[0]), "minor_stop": info.get("stop_reason"),
               "minor_s": round(dt_minor, 3), "major_s": round(dt_major, 3), **split}
        cycles.append(rec)
        log.info("major cycle %d/%d: %d components (total %d/%d), residual peak %.4g -> %.4g Jy/beam, "
                 "rms %.3g, model flux %.4g Jy", cycle, s.nmiter, last_minor, niter_done, s.niter, peak, new_peak,
                 new_sigma, rec["model_flux"])
        if checkpoint_name:
            write_checkpoint(checkpoint_name, Checkpoint(model=model, cycle=cycle, niter_done=niter_done,
                                                         settings=s.image_settings(), cycles=cycles, taylor=taylor))
    return CleanResult(sumwt=sumwt, beam=beam, model=model, residual=residual, taylor=taylor,
                       cycles=cycles, niter_done=niter_done, stop_reason=stop_reason, minor_info=minor_info,
                       timings={"minor_total_s": round(t_minor, 3), "major_total_s": round(t_major, 3)})


def final_images(index: StoreIndex, s: Settings, grid: GridSpec, freqs_out: np.ndarray, r: CleanResult) -> dict:
    """Model, residual, restored image (and spectral index for Taylor terms) as Images."""
    restored = r.restored(grid.cell)
    images = {
        "model": make_image(index, r.model, grid.cell, freqs_out, "JY/PIXEL", stokes=s.stokes),
        "residual": make_image(index, r.residual, grid.cell, freqs_out, "JY/BEAM", r.beam, stokes=s.stokes),
        "image": make_image(index, restored, grid.cell, freqs_out, "JY/BEAM", r.beam, stokes=s.stokes),
    }
    if r.taylor is not None and r.taylor.shape[0] > 1:
        from arl_mpi.deconvolution.msmfs import spectral_index

        t0r = restore(r.taylor[0], np.zeros_like(r.taylor[0]), r.beam, grid.cell)
        t1r = restore(r.taylor[1], np.zeros_like(r.taylor[1]), r.beam, grid.cell)
        alpha = np.nan_to_num(spectral_index(t0r, t1r, 0.05 * float(np.max(t0r))), nan=0.0)
        images["alpha"] = make_image(index, alpha[None], grid.cell, freqs_out[:1], "", r.beam, stokes=s.stokes)
    return images
