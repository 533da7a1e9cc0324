"""Continuum imaging with major/minor cycles; the minor cycle runs on the driver.

Data flow (see docs/architecture.md):

1. partitions are loaded on the workers and persisted there (never shipped back);
2. the uv weight density is tree-summed and broadcast; workers apply the weighting;
3. PSF and dirty image: per-partition gridding, tree-summed to the driver;
4. major cycles: the driver cleans the residual (minor cycle), broadcasts the model, the
   workers compute ``invert(vis - predict(model))`` and the partial images are tree-summed;
5. restore, write FITS/PNG/summary atomically; a checkpoint after every major cycle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from distributed import wait

from arl_mpi.errors import ConfigError
from arl_mpi.graphs import graphs as G
from arl_mpi.graphs.partitions import GridSpec, require_data
from arl_mpi.imaging.beam import fit_beam, restore
from arl_mpi.io.store import StoreIndex, open_store
from arl_mpi.pipeline import minor
from arl_mpi.pipeline.outputs import (
    Checkpoint,
    make_image,
    read_checkpoint,
    write_checkpoint,
    write_image_set,
)
from arl_mpi.pipeline.settings import Settings

log = logging.getLogger("arl_mpi.pipeline")


def grid_spec(s: Settings, index: StoreIndex) -> GridSpec:
    """Image geometry and gridder settings of a run on ``index``."""
    nchan = int(index.meta.frequency.size)
    if s.channels_out > nchan:
        raise ConfigError(f"channels-out: {s.channels_out} exceeds the {nchan} channels of {index.path}")
    return GridSpec(npix_x=s.size[0], npix_y=s.size[1], cell=s.cell_rad, epsilon=s.epsilon,
                    nthreads=s.gridder_threads, do_wgridding=s.w_correction, double=s.double,
                    channels_out=s.channels_out, nchan_total=nchan)


def output_frequencies(index: StoreIndex, channels_out: int) -> np.ndarray:
    """Mean frequency of each output channel."""
    f = index.meta.frequency
    oc = (np.arange(f.size) * channels_out) // f.size
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


@dataclass
class ResidentData:
    """Partitions persisted on the workers and what is known about them."""

    data: list  # persisted delayed ImagingData
    counts: np.ndarray
    grid: GridSpec
    timings: dict[str, float] = field(default_factory=dict)


def persist_balanced(client, items: list) -> list:
    """Compute delayed items into futures spread round-robin over the workers.

    The results stay on the workers (the driver holds only futures). Placement is a
    preference: if a worker dies, its items are recomputed (reloaded) elsewhere.
    """
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        return client.compute(items)
    return [client.compute(it, workers=[workers[i % len(workers)]], allow_other_workers=True)
            for i, it in enumerate(items)]


def load_and_weight(client, s: Settings, index: StoreIndex, grid: GridSpec) -> ResidentData:
    """Load all partitions onto the workers, check them, apply imaging weights.

    With ``--stream`` nothing is persisted: the returned graphs re-read each partition
    whenever a later graph needs it, so a worker holds only the partitions it is gridding.
    """
    data = G.load_graph(str(index.path), range(len(index.partitions)), s.stokes, s.verify)
    if not s.stream:
        data = persist_balanced(client, data)
    return weight_data(client, s, data, grid, str(index.path))


def weight_data(client, s: Settings, data: list, grid: GridSpec, where: str) -> ResidentData:
    """Check resident imaging data (counts, all-flagged) and apply the imaging weights."""
    t0 = time.perf_counter()
    counts = client.compute(G.counts_graph(data)).result()
    require_data(counts, where)
    if counts[2]:
        log.warning("%s: flagged %d NaN/Inf or negative-weight samples on load", where, int(counts[2]))
    t1 = time.perf_counter()
    scheme, robust = s.weight
    if scheme != "natural" or s.taper_rad:
        density = None
        if scheme != "natural":
            density = G.constant(client.compute(G.weight_density_graph(data, grid)).result())
        new = G.reweight_graph(data, grid, density, scheme, robust, s.taper_rad)
        if not s.stream:
            new = persist_balanced(client, new)
            wait(new)  # the weighted data exist (on the workers) before the unweighted are released
        data = new
    return ResidentData(data=data, counts=counts, grid=grid,
                        timings={"load_check_s": t1 - t0, "weighting_s": time.perf_counter() - t1})


def image_from(client, graph) -> tuple[np.ndarray, np.ndarray]:
    """Compute a tree-summed ``(image_sum, sumwt)`` and normalise it."""
    pair = client.compute(graph).result()
    return G.normalise(pair), pair[1]


@dataclass
class CleanResult:
    """What a major/minor-cycle loop produced."""

    psf: np.ndarray
    sumwt: np.ndarray
    beam: tuple[float, float, float]
    dirty: np.ndarray
    model: np.ndarray
    residual: np.ndarray
    taylor: np.ndarray | None
    cycles: list[dict[str, Any]]
    niter_done: int
    stop_reason: str
    timings: dict[str, float]

    def restored(self, cell: float) -> np.ndarray:
        """Model convolved with the fitted beam plus residual, per output channel."""
        return np.stack([restore(self.model[c], self.residual[c], self.beam, cell) for c in range(self.model.shape[0])])


def psf_and_dirty(client, data: list, grid: GridSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple, float]:
    """PSF, sum of weights, dirty image and fitted beam (tree-summed from the workers)."""
    t0 = time.perf_counter()
    psf, psf_sumwt = image_from(client, G.psf_graph(data, grid))
    psf_mfs = minor.mfs_image(psf, psf_sumwt) if grid.channels_out > 1 else psf[0]
    beam = fit_beam(psf_mfs, grid.cell)
    dirty, sumwt = image_from(client, G.invert_graph(data, grid))
    return psf, sumwt, dirty, beam, time.perf_counter() - t0


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
            residual, _ = image_from(client, G.invert_graph(data, grid, G.constant(model)))
    last_minor = None
    t_major = t_minor = 0.0
    while s.niter > 0:
        peak, sigma = minor.residual_stats(residual, sumwt)
        stop, stop_reason = minor.stop_rule(peak, sigma, niter_done, cycle, cs, last_minor)
        if stop:
            break
        tm = time.perf_counter()
        update, info = minor.deconvolve(residual, psf, sumwt, freqs_out, cs, niter_done, s.fit_spectral_pol)
        dt_minor = time.perf_counter() - tm
        t_minor += dt_minor
        last_minor = int(info["niter"])
        niter_done += last_minor
        model = model + update
        if "taylor" in info:
            taylor = info["taylor"] if taylor is None else taylor + info["taylor"]
        tj = time.perf_counter()
        residual, _ = image_from(client, G.invert_graph(data, grid, G.constant(model)))
        dt_major = time.perf_counter() - tj
        t_major += dt_major
        cycle += 1
        new_peak, new_sigma = minor.residual_stats(residual, sumwt)
        rec = {"cycle": cycle, "minor_iterations": last_minor, "total_iterations": niter_done,
               "start_peak": peak, "peak": new_peak, "rms_mad": new_sigma,
               "model_flux": float(model.sum() / model.shape[0]), "minor_stop": info.get("stop_reason"),
               "minor_s": round(dt_minor, 3), "major_s": round(dt_major, 3)}
        cycles.append(rec)
        log.info("major cycle %d/%d: %d components (total %d/%d), residual peak %.4g -> %.4g Jy/beam, "
                 "rms %.3g, model flux %.4g Jy", cycle, s.nmiter, last_minor, niter_done, s.niter, peak, new_peak,
                 new_sigma, rec["model_flux"])
        if checkpoint_name:
            write_checkpoint(checkpoint_name, Checkpoint(model=model, cycle=cycle, niter_done=niter_done,
                                                         settings=s.image_settings(), cycles=cycles, taylor=taylor))
    return CleanResult(psf=psf, sumwt=sumwt, beam=beam, dirty=dirty, model=model, residual=residual, taylor=taylor,
                       cycles=cycles, niter_done=niter_done, stop_reason=stop_reason,
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


def dynamic_range(restored: np.ndarray, residual: np.ndarray) -> float:
    """Peak of the restored image over the (MAD) noise of the residual."""
    from arl_mpi.deconvolution.common import mad_sigma

    return float(np.max(restored) / max(mad_sigma(residual[0]), 1e-30))


def run_continuum(client, s: Settings, store: str) -> dict[str, Any]:
    """The continuum pipeline on ``store``; writes the images and returns the summary."""
    t_start = time.perf_counter()
    index = open_store(store)
    grid = grid_spec(s, index)
    freqs_out = output_frequencies(index, s.channels_out)
    log.info("store %s: %d partitions, %d visibilities, %d channels, polarisations %s",
             index.path, len(index.partitions), index.nvis, index.meta.frequency.size, index.meta.polarisations)
    res = load_and_weight(client, s, index, grid)
    cell_warning = check_cell(s, float(res.counts[3]))
    psf, sumwt, dirty, beam, t_psf_dirty = psf_and_dirty(client, res.data, grid)
    log.info("dirty image: peak %.4g Jy/beam; beam %.3g x %.3g asec, pa %.1f deg",
             float(np.max(np.abs(dirty))), *(np.rad2deg(beam[:2]) * 3600), np.rad2deg(beam[2]))
    write_image_set(s.name, {"dirty": make_image(index, dirty, grid.cell, freqs_out, "JY/BEAM", stokes=s.stokes),
                             "psf": make_image(index, psf, grid.cell, freqs_out, "JY/BEAM", stokes=s.stokes)}, s.png)
    r = clean_loop(client, s, res.data, grid, freqs_out, psf, sumwt, dirty, beam,
                   checkpoint_name=s.name if s.checkpoint else None, resume=s.resume)
    images = final_images(index, s, grid, freqs_out, r)
    files = write_image_set(s.name, images, s.png)
    peak, sigma = minor.residual_stats(r.residual, sumwt)
    nworkers = len(client.scheduler_info()["workers"])
    return {
        "pipeline": "continuum", "store": str(index.path), "settings": s.as_dict(),
        "workers": nworkers, "partitions": len(index.partitions),
        "visibilities": {"samples": int(res.counts[0]), "unflagged": int(res.counts[1]),
                         "flagged_on_load": int(res.counts[2]), "uvmax_wavelengths": float(res.counts[3])},
        "beam_deg": [float(np.rad2deg(b)) for b in beam[:2]] + [float(np.rad2deg(beam[2]))],
        "sumwt": [float(x) for x in sumwt], "output_frequencies_hz": freqs_out.tolist(),
        "cycles": r.cycles, "stop_reason": r.stop_reason, "total_iterations": r.niter_done,
        "final": {"residual_peak": peak, "residual_rms_mad": sigma,
                  "model_flux": float(r.model.sum() / r.model.shape[0]),
                  "image_peak": float(np.max(images["image"].data)),
                  "dynamic_range": dynamic_range(images["image"].data[:, 0], r.residual)},
        "warnings": [w for w in [cell_warning] if w],
        "timings_s": {**{k: round(v, 3) for k, v in res.timings.items()}, "psf_dirty_s": round(t_psf_dirty, 3),
                      **r.timings, "total_s": round(time.perf_counter() - t_start, 3)},
        "files": files,
    }
