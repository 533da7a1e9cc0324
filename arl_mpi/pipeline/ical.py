"""ICAL: iterative self-calibration with major/minor-cycle imaging in every round.

Round 0 images the data as they are. After each round but the last, every partition
predicts the round's model and solves antenna gains *on its worker* (the visibilities stay
put; only the small gain tables return); the next round images the corrected data. The
first ``--ical-phase-only-rounds`` solves are phase-only, later ones amplitude and phase.

Outputs: the final images under the usual names, the restored image of every round
(``PREFIX-ical<r>-image.fits``), the gain table ``PREFIX-gains.h5`` (HDF5, beside the
outputs, never inside the store), the same solutions as an h5parm ``PREFIX-gains.h5parm``
(DP3/LoSoTo/WSClean read it) and ``PREFIX-gains.png`` (phases/amplitudes vs time). With
``--apply-solutions`` every partition is corrected with that h5parm when loaded, and the
solved gains are those that remain.

Checkpoints (:mod:`arl_mpi.pipeline.checkpoint`): ``PREFIX-ical-state.h5`` at the start of
every round (the round, its gain tables), ``PREFIX-checkpoint.h5`` after every major cycle;
``--resume`` continues from them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from arl_mpi.calibration.gaintable import write_gaintable, write_gaintable_h5parm
from arl_mpi.calibration.plots import plot_gains
from arl_mpi.errors import InputError
from arl_mpi.graphs import calibration as cal_tasks
from arl_mpi.graphs import shard_graphs as graphs
from arl_mpi.graphs.shard_graphs import delayed
from arl_mpi.graphs.shard_tasks import Shard
from arl_mpi.io.store import open_store
from arl_mpi.pipeline import minor
from arl_mpi.pipeline.checkpoint import IcalState, ical_state_path, read_ical_state, write_ical_state
from arl_mpi.pipeline.common import (
    check_cell,
    dynamic_range,
    grid_spec,
    output_frequencies,
    psf_and_dirty,
    shard_plan,
    summary_header,
    weight_data,
)
from arl_mpi.pipeline.major_cycle import clean_loop, final_images
from arl_mpi.pipeline.outputs import checkpoint_path, make_image, write_image_set
from arl_mpi.pipeline.settings import Settings

log = logging.getLogger("arl_mpi.pipeline")


def _amplitude_sums(shard: Shard) -> np.ndarray:
    out = np.zeros(2)
    for b in shard.blocks:
        good = ~b.flags & (b.weight > 0)
        out += [float(np.sum(np.abs(b.vis[good]) * b.weight[good])), float(np.sum(b.weight[good]))]
    return out


def point_model(client, data: list, grid) -> np.ndarray:
    """A point source at the phase centre whose flux is the weighted mean visibility amplitude
    (a calibrator's model when its flux is unknown): ``[channels_out, ny, nx]``."""
    sums = client.compute(graphs.tree_reduce([delayed(_amplitude_sums, pure=True)(d) for d in data])).result()
    model = np.zeros((grid.channels_out, grid.npix_y, grid.npix_x))
    model[:, grid.npix_y // 2, grid.npix_x // 2] = sums[0] / max(sums[1], 1e-30)
    return model


def save_round(client, s: Settings, rnd: int, gains: list, rounds: list[dict[str, Any]]) -> None:
    """Checkpoint the start of round ``rnd``: remove the previous round's major-cycle
    checkpoint, then write the round, its gain tables (gathered from the workers) and the
    finished rounds' records (``PREFIX-ical-state.h5``)."""
    from distributed import Future

    futs = [g for g in gains if isinstance(g, Future)]
    values = iter(client.gather(futs)) if futs else iter(())
    tables = [next(values) if isinstance(g, Future) else g for g in gains]
    checkpoint_path(s.name).unlink(missing_ok=True)
    write_ical_state(s.name, IcalState(round=rnd, gains=tables, rounds=rounds, settings=s.image_settings()))


def run_ical(client, s: Settings, store: str) -> dict[str, Any]:
    """The ICAL pipeline on ``store``; returns the summary."""
    t_start = time.perf_counter()
    index = open_store(store)
    grid = grid_spec(s, index)
    freqs_out = output_frequencies(index, s.channels_out)
    npart = len(index.partitions)
    shards = shard_plan(client, s, index, grid)
    home = {pid: k for k, chunks in enumerate(shards) for c in chunks for pid in c}  # partition -> its shard's worker
    cal = graphs.persist_on_workers(
        client, [delayed(cal_tasks.load_cal_data, pure=True)(str(index.path), pid, s.verify, s.apply_solutions)
                 for pid in range(npart)],
        placement=[home[pid] for pid in range(npart)])
    gains: list = [None] * npart
    rounds: list[dict[str, Any]] = []
    solint = s.ical_solint  # 0: one solution per integration (the solver's meaning of 0)
    result = None
    res = None
    first, resume_loop = 0, False
    if s.resume:
        st = read_ical_state(s.name, s.image_settings())
        first, gains, rounds = st.round, list(st.gains), st.rounds
        resume_loop = checkpoint_path(s.name).is_file()
        log.info("resuming ICAL at round %d (%s)", first,
                 "from its last major cycle" if resume_loop else "from its start")
    for rnd in range(first, s.ical_rounds):
        t0 = time.perf_counter()
        if s.checkpoint and not (s.resume and rnd == first):
            save_round(client, s, rnd, gains, rounds)
        data = graphs.persist_on_workers(
            client, [delayed(cal_tasks.imaging_shard, pure=True)([[cal[p] for p in c] for c in chunks],
                                                                 [[gains[p] for p in c] for c in chunks], s.stokes)
                     for chunks in shards])
        res = weight_data(client, s, data, grid, str(index.path))
        res.shards = shards
        psf, sumwt, dirty, beam, _ = psf_and_dirty(client, res.data, grid)
        result = clean_loop(client, s, res.data, grid, freqs_out, psf, sumwt, dirty, beam,
                            checkpoint_name=s.name if s.checkpoint else None,
                            resume=resume_loop and rnd == first)
        restored = result.restored(grid.cell)
        dr = dynamic_range(restored, result.residual)
        peak, sigma = minor.residual_stats(result.residual, sumwt)
        write_image_set(f"{s.name}-ical{rnd}",
                        {"image": make_image(index, restored, grid.cell, freqs_out, "JY/BEAM", beam, stokes=s.stokes)},
                        png=False)
        info = {"round": rnd, "solved_before": rounds[-1]["solve"] if rounds else None,
                "image_peak": float(restored.max()), "residual_rms_mad": sigma, "residual_peak": peak,
                "dynamic_range": dr, "components": result.niter_done, "cycles": len(result.cycles)}
        log.info("ICAL round %d: image peak %.4g Jy/beam, residual rms %.3g, dynamic range %.1f",
                 rnd, info["image_peak"], sigma, dr)
        if rnd < s.ical_rounds - 1:
            mode = "phase" if rnd < s.ical_phase_only_rounds else "amp_phase"
            model = result.model
            if rnd == 0 and s.ical_point_model:
                model = point_model(client, res.data, grid)
                info["point_model_jy"] = float(model.max())
            model_f = graphs.model_constant(model, grid)
            solve = delayed(cal_tasks.solve_partition, pure=True)
            gains = [client.compute(solve(c, grid, model_f, solint=solint, mode=mode, min_snr=s.ical_min_snr,
                                          pol_mode=s.ical_pol_mode))
                     for c in cal]
            info["solve"] = mode
            info["solve_s"] = round(time.perf_counter() - t0, 3)
        else:
            info["solve"] = None
        rounds.append(info)
        del data
    if result is None or res is None:  # resumed after the last round's state: nothing left but the outputs
        raise InputError(f"{ical_state_path(s.name)}: round {first} is past the last of --ical-rounds "
                         f"{s.ical_rounds}, nothing to resume")
    check_cell_msg = check_cell(s, float(res.counts.uvmax_wavelengths))
    images = final_images(index, s, grid, freqs_out, result)
    files = write_image_set(s.name, images, s.png)
    gain_summary = {}
    if any(g is not None for g in gains):
        tables = client.gather([g for g in gains if g is not None])
        gt = cal_tasks.merge_gaintables(tables)
        gpath = write_gaintable(f"{s.name}-gains.h5", gt, forbidden_dirs=[index.path])
        pc = index.meta.phase_centre.icrs
        hpath = write_gaintable_h5parm(f"{s.name}-gains.h5parm", gt, forbidden_dirs=[index.path],
                                       antenna_positions=index.meta.configuration.xyz,
                                       source_dir=(float(pc.ra.rad), float(pc.dec.rad)))
        plot_gains(gt, f"{s.name}-gains.png", title=f"{s.name}: final gain solutions")
        files += [str(gpath), str(hpath), f"{s.name}-gains.png"]
        good = ~gt.flags
        gain_summary = {"solutions": int(gt.flags.size), "flagged": int(gt.flags.sum()),
                        "phase_rms_deg": float(np.rad2deg(np.std(np.angle(gt.gain[good])))) if good.any() else None,
                        "amp_rms": float(np.std(np.abs(gt.gain[good]))) if good.any() else None}
    peak, sigma = minor.residual_stats(result.residual, result.sumwt)
    return {
        **summary_header("ical", client, s, index, res, result.beam),
        "rounds": rounds, "gains": gain_summary,
        "dynamic_range_gain": rounds[-1]["dynamic_range"] / max(rounds[0]["dynamic_range"], 1e-30),
        "final": {"residual_peak": peak, "residual_rms_mad": sigma, "image_peak": float(images["image"].data.max()),
                  "dynamic_range": rounds[-1]["dynamic_range"]},
        "warnings": [w for w in [check_cell_msg] if w],
        "timings_s": {"total_s": round(time.perf_counter() - t_start, 3)},
        "files": files,
    }
