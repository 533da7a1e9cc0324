"""Spectral-line imaging: every channel (or channel block) imaged and cleaned independently.

Per major cycle the workers grid the residual cube (one plane per output channel, summed
over partitions), then run one minor cycle *per channel, in parallel on the workers*: the
residual cube and the model stay on the workers as futures, only per-channel statistics
(peak, noise, components) come to the driver, which decides when each channel stops.
Optionally the continuum is first subtracted in the uv plane (polynomial per baseline).
After every major cycle ``PREFIX-checkpoint.h5`` keeps the model cube and which channels
have finished; ``--resume`` cleans only the unfinished ones, from that cycle.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from arl_mpi.deconvolution import CleanSettings, minor_cycle_step, stop_rule
from arl_mpi.deconvolution.common import mad_sigma
from arl_mpi.errors import ConfigError
from arl_mpi.graphs import shard_graphs as graphs
from arl_mpi.graphs.shard_tasks import VisBlock, map_blocks
from arl_mpi.imaging.beam import fit_beam, restore
from arl_mpi.imaging.uvcontsub import uv_continuum_subtract
from arl_mpi.io.store import open_store
from arl_mpi.pipeline import minor
from arl_mpi.pipeline.checkpoint import SpectralCheckpoint, read_spectral_checkpoint, write_spectral_checkpoint
from arl_mpi.pipeline.common import (
    check_cell,
    grid_spec,
    load_and_weight,
    output_frequencies,
    summary_header,
)
from arl_mpi.pipeline.outputs import make_image, write_image_set
from arl_mpi.pipeline.settings import Settings

log = logging.getLogger("arl_mpi.pipeline")


def parse_channel_ranges(text: str | None, nchan: int) -> np.ndarray | None:
    """``"0-5,12-15"`` -> boolean mask over the observation's channels (None: all)."""
    if not text:
        return None
    mask = np.zeros(nchan, dtype=bool)
    try:
        for part in str(text).split(","):
            lo, _, hi = part.strip().partition("-")
            a, b = int(lo), int(hi or lo)
            if not 0 <= a <= b < nchan:
                raise ValueError
            mask[a:b + 1] = True
    except ValueError:
        raise ConfigError(f"continuum-fit-channels: '{text}' is not a list of ranges within 0-{nchan - 1}") from None
    return mask


def contsub_block(data: VisBlock, order: int, fit_mask: np.ndarray | None = None) -> VisBlock:
    """Subtract a per-baseline polynomial continuum from one block (runs on a worker).

    The fit uses the block's own channels (``fit_mask`` over the whole observation
    selects line-free ones), so keep all channels of a spectral window in one frequency
    partition for a meaningful fit.
    """
    from dataclasses import replace

    sel = None if fit_mask is None else fit_mask[data.chan_start:data.chan_start + data.freq.size]
    vis = uv_continuum_subtract(data.vis, data.weight, data.flags, data.freq, order, sel)
    return replace(data, vis=vis.astype(data.vis.dtype))


def channel_minor_cycle(pair: tuple[np.ndarray, np.ndarray], psf_pair: tuple[np.ndarray, np.ndarray], chan: int,
                        cs: CleanSettings, niter_done: int, cycle: int, last_minor: int | None) -> dict[str, Any]:
    """One channel's stopping decision and minor cycle, on a worker.

    Returns ``{"update": plane or None, "niter", "peak", "sigma", "stop", "worker", "t0", "t1"}``.
    """
    from distributed import get_worker

    t0 = time.time()
    img, sw = pair
    residual = img[chan] / sw[chan] if sw[chan] > 0 else np.zeros_like(img[chan])
    psf = psf_pair[0][chan] / psf_pair[1][chan] if psf_pair[1][chan] > 0 else None
    peak, sigma = float(np.max(np.abs(residual))), float(mad_sigma(residual))
    out: dict[str, Any] = {"chan": chan, "peak": peak, "sigma": sigma, "niter": 0, "update": None, "stop": ""}
    if psf is None:
        out["stop"] = "no_data"
    else:
        stop, reason = stop_rule(peak, sigma, niter_done, cycle, cs, last_minor)
        if stop:
            out["stop"] = reason
        else:
            upd, info = minor_cycle_step(residual, psf, np.zeros_like(residual), cs, niter_done)
            out.update(update=upd, niter=int(info["niter"]))
    try:
        out["worker"] = get_worker().address
    except ValueError:
        out["worker"] = "local"
    out["t0"], out["t1"] = t0, time.time()
    return out


_TASK_KEYS = ("chan", "worker", "t0", "t1", "niter", "stop")


def _constant(a: np.ndarray) -> np.ndarray:
    return a


def _strip(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "update"}


def _add_updates(model: np.ndarray, *results: dict[str, Any]) -> np.ndarray:
    model = model.copy()
    for r in results:
        if r["update"] is not None:
            model[r["chan"]] += r["update"]
    return model


def run_spectral(client, s: Settings, store: str) -> dict[str, Any]:
    """The spectral-line pipeline on ``store``: a cube of every channel (or block)."""
    t_start = time.perf_counter()
    index = open_store(store)
    nchan = int(index.meta.frequency.size)
    grid = grid_spec(s, index, channels_out=nchan if s.channels_out == 1 else s.channels_out)
    nout = grid.channels_out
    freqs_out = output_frequencies(index, nout)
    res = load_and_weight(client, s, index, grid)
    cell_warning = check_cell(s, float(res.counts.uvmax_wavelengths))
    data = res.data
    if s.continuum_subtract_order >= 0:
        if res.stream:
            raise ConfigError("continuum-subtract-order: needs resident shards; it cannot be combined with --stream")
        mask = parse_channel_ranges(s.continuum_fit_channels, nchan)
        data = graphs.persist_on_workers(
            client, graphs.map_graph(map_blocks, data, contsub_block, s.continuum_subtract_order, mask))
        log.info("subtracted a polynomial continuum of order %d per baseline in the uv plane",
                 s.continuum_subtract_order)
    psf_f = client.compute(graphs.psf_graph(data, grid))
    residual_f = client.compute(graphs.invert_graph(data, grid))
    psf_pair, dirty_pair = client.gather([psf_f, residual_f])
    psf, dirty = graphs.normalise(psf_pair), graphs.normalise(dirty_pair)
    beams = [fit_beam(psf[c], grid.cell) if psf_pair[1][c] > 0 else None for c in range(nout)]
    # restore every channel with one common beam (the largest), so Jy/beam means the same everywhere
    common = max((b for b in beams if b is not None), key=lambda b: b[0] * b[1])
    write_image_set(s.name, {"dirty": make_image(index, dirty, grid.cell, freqs_out, "JY/BEAM", stokes=s.stokes),
                             "psf": make_image(index, psf, grid.cell, freqs_out, "JY/BEAM", stokes=s.stokes)}, s.png)
    cs = minor.clean_settings(s)
    workers = sorted(client.scheduler_info()["workers"])
    model_f = client.submit(np.zeros, dirty.shape, pure=False)  # recomputable, unlike a scatter
    niter_done = np.zeros(nout, dtype=int)
    last: list[int | None] = [None] * nout
    active = list(range(nout))
    cycles: list[dict[str, Any]] = []
    minor_tasks: list[dict[str, Any]] = []
    cycle = 0
    if s.resume:
        ck = read_spectral_checkpoint(s.name, s.image_settings())
        cycle, cycles, minor_tasks = ck.cycle, ck.cycles, ck.minor_tasks
        niter_done = np.asarray(ck.niter_done, dtype=int)
        last = [None if n < 0 else int(n) for n in ck.last]
        active = [int(c) for c in np.flatnonzero(ck.active)]
        log.info("resuming after major cycle %d: %d of %d channels finished, %d to clean", cycle,
                 nout - len(active), nout, len(active))
        if cycle:
            model_f = client.submit(_constant, ck.model, pure=False)
            residual_f = client.compute(graphs.invert_graph(data, grid, model_f))
    while s.niter > 0 and active:
        futs = [client.submit(channel_minor_cycle, residual_f, psf_f, c, cs, int(niter_done[c]), cycle, last[c],
                              workers=[workers[i % len(workers)]], allow_other_workers=True, pure=False)
                for i, c in enumerate(active)]
        infos = client.gather([client.submit(_strip, f, pure=False) for f in futs])
        minor_tasks.extend(infos)
        still = []
        for c, info in zip(active, infos, strict=True):
            niter_done[c] += info["niter"]
            last[c] = info["niter"]
            if not info["stop"]:
                still.append(c)
        if not any(i["niter"] for i in infos):
            break
        model_f = client.submit(_add_updates, model_f, *futs, pure=False)
        residual_f = client.compute(graphs.invert_graph(data, grid, model_f))
        cycle += 1
        cycles.append({"cycle": cycle, "channels_cleaned": sum(1 for i in infos if i["niter"]),
                       "components": int(sum(i["niter"] for i in infos)),
                       "max_peak": float(max(i["peak"] for i in infos))})
        log.info("major cycle %d: cleaned %d channels in parallel on %d workers (%d components); %d channels "
                 "still active", cycle, cycles[-1]["channels_cleaned"], len({i["worker"] for i in infos}),
                 cycles[-1]["components"], len(still))
        active = still
        if s.checkpoint:
            write_spectral_checkpoint(s.name, SpectralCheckpoint(
                model=model_f.result(), cycle=cycle, niter_done=niter_done,
                last=np.array([-1 if n is None else n for n in last]),
                active=np.isin(np.arange(nout), active), settings=s.image_settings(), cycles=cycles,
                minor_tasks=[{k: v for k, v in t.items() if k in _TASK_KEYS} for t in minor_tasks]))
    model, residual = client.gather([model_f, residual_f])
    residual = graphs.normalise(residual)
    restored = np.stack([restore(model[c], residual[c], common, grid.cell) for c in range(nout)])
    files = write_image_set(s.name, {
        "model": make_image(index, model, grid.cell, freqs_out, "JY/PIXEL", stokes=s.stokes),
        "residual": make_image(index, residual, grid.cell, freqs_out, "JY/BEAM", common, stokes=s.stokes),
        "image": make_image(index, restored, grid.cell, freqs_out, "JY/BEAM", common, stokes=s.stokes),
    }, s.png)
    return {
        **summary_header("spectral", client, s, index, res, common), "channels_out": nout,
        "output_frequencies_hz": freqs_out.tolist(),
        "channel_beams_deg": [[float(np.rad2deg(x)) for x in b] if b else None for b in beams],
        "cycles": cycles, "components_per_channel": niter_done.tolist(),
        "minor_cycle_tasks": [{k: v for k, v in t.items() if k in _TASK_KEYS} for t in minor_tasks],
        "warnings": [w for w in [cell_warning] if w],
        "timings_s": {"total_s": round(time.perf_counter() - t_start, 3)},
        "files": files,
    }
