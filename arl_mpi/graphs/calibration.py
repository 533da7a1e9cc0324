"""Per-partition calibration operations (run on the workers; visibilities stay put).

A :class:`CalData` is one partition with all its correlations, resident on a worker for a
whole self-calibration run. Each round the worker derives the Stokes product to image
from it (applying that partition's current gain solutions), predicts the model and solves
new gains against it; only gain tables (small) and images travel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arl_mpi.calibration.apply import apply_gains
from arl_mpi.calibration.gaintable import GainTable
from arl_mpi.calibration.solutions import apply_solutions, load_solutions
from arl_mpi.calibration.solve import solve_gains
from arl_mpi.graphs.shard_tasks import Shard, VisBlock, merge_blocks, sanitise
from arl_mpi.imaging.gridding import predict
from arl_mpi.imaging.gridspec import GridSpec
from arl_mpi.imaging.stokes import to_stokes
from arl_mpi.io.store import open_store, read_partition
from arl_mpi.models import parallel_hand_mask


@dataclass
class CalData:
    """One partition with all correlations, as held on a worker during ICAL."""

    pid: int
    time: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    uvw: np.ndarray
    vis: np.ndarray  # [nrow, nchan, npol]
    weight: np.ndarray
    flags: np.ndarray
    freq: np.ndarray
    polarisations: list[str]
    chan_start: int
    antenna_names: list[str]
    nflag_bad: int = 0

    def __sizeof__(self) -> int:
        # what Dask's scheduler sees (see shard_tasks.VisBlock.__sizeof__)
        return int(sum(a.nbytes for a in (self.time, self.antenna1, self.antenna2, self.uvw, self.vis, self.weight,
                                          self.flags, self.freq)) + 256)


def load_cal_data(store_path: str, pid: int, verify: bool = True, solutions: str | None = None) -> CalData:
    """Read partition ``pid`` with all its correlations (NaN/Inf and negative weights flagged).

    ``solutions``: an h5parm to correct the data with first (``--apply-solutions``); ICAL then
    solves for the gains that remain.
    """
    index = open_store(store_path)
    v = read_partition(index, pid, verify=verify)
    vis, weight, flags, nbad = sanitise(v.vis, v.weight, v.flags)
    if solutions:
        vis, flags = apply_solutions(v.time, v.antenna1, v.antenna2, vis, v.frequency, list(v.polarisations),
                                     index.meta.configuration.names, load_solutions(solutions), flags=flags)
    return CalData(pid=pid, time=v.time, antenna1=v.antenna1, antenna2=v.antenna2, uvw=v.uvw,
                   vis=vis.astype(np.complex64), weight=weight.astype(np.float32), flags=flags, freq=v.frequency,
                   polarisations=list(v.polarisations), chan_start=index.partitions[pid].chan_start,
                   antenna_names=list(index.meta.configuration.names), nflag_bad=nbad)


def imaging_block(cal: CalData, gaintable: GainTable | None, stokes: str = "I") -> VisBlock:
    """The Stokes product to image, after correcting with ``gaintable`` (None: raw data)."""
    vis, flags = cal.vis, cal.flags
    if gaintable is not None:
        vis, flags = apply_gains(cal.time, cal.antenna1, cal.antenna2, cal.vis, cal.freq, cal.polarisations,
                                 gaintable, inverse=True, flags=cal.flags)
    s_vis, s_wt, s_fl = to_stokes(vis, cal.weight, flags, cal.polarisations, stokes)
    return VisBlock(pids=(cal.pid,), uvw=cal.uvw, freq=cal.freq, chan_start=cal.chan_start,
                    vis=np.ascontiguousarray(s_vis, dtype=np.complex64),
                    weight=np.ascontiguousarray(s_wt, dtype=np.float32), flags=np.ascontiguousarray(s_fl),
                    nflag_bad=cal.nflag_bad)


def imaging_shard(cals: list[list[CalData]], gaintables: list[list[GainTable | None]], stokes: str = "I") -> Shard:
    """One worker's shard to image: each chunk's partitions corrected with their gains, merged."""
    parts = [merge_blocks([imaging_block(c, g, stokes) for c, g in zip(cc, gg, strict=True)])
             for cc, gg in zip(cals, gaintables, strict=True)]
    return Shard(pids=tuple(p for m in parts for p in m.pids), blocks=[b for m in parts for b in m.blocks])


def model_visibilities(cal: CalData, grid: GridSpec, model: np.ndarray) -> np.ndarray:
    """Model correlations ``[nrow, nchan, npol]`` of an unpolarised (Stokes I) model image cube."""
    nrow, nchan, npol = cal.vis.shape
    out = np.zeros((nrow, nchan), dtype=np.complex64)
    oc = grid.out_channels(cal.chan_start, nchan)
    for o in np.unique(oc):
        sel = oc == o
        if np.any(model[o]):
            out[:, sel] = predict(cal.uvw, cal.freq[sel], model[o], grid.cell, **grid.gridder_kwargs())
    parallel = parallel_hand_mask(cal.polarisations).astype(np.float32)
    return out[:, :, None] * parallel[None, None, :]


def solve_partition(cal: CalData, grid: GridSpec, model: np.ndarray, *, solint: float | None, mode: str,
                    min_snr: float, pol_mode: str = "scalar", ref_ant: int = 0) -> GainTable:
    """Antenna gains of this partition against the predicted model."""
    mv = model_visibilities(cal, grid, model)
    return solve_gains(cal.time, cal.antenna1, cal.antenna2, cal.vis, mv, cal.weight, cal.flags, cal.freq,
                       len(cal.antenna_names), solint=solint, mode=mode, pol_mode=pol_mode, ref_ant=ref_ant,
                       min_snr=min_snr, pol_labels=cal.polarisations, antenna_names=cal.antenna_names)


def merge_gaintables(tables: list[GainTable]) -> GainTable:
    """One table from per-partition tables (union of solution times and frequencies)."""
    first = tables[0]
    times = np.unique(np.concatenate([t.time for t in tables]))
    freqs = np.unique(np.concatenate([t.freq for t in tables]))
    shape = (times.size, first.gain.shape[1], freqs.size, first.gain.shape[3])
    gain = np.ones(shape, dtype=first.gain.dtype)
    weight = np.zeros(shape, dtype=first.weight.dtype)
    flags = np.ones(shape, dtype=bool)
    interval = np.zeros(times.size)
    for t in tables:
        ti = np.searchsorted(times, t.time)
        fi = np.searchsorted(freqs, t.freq)
        gain[np.ix_(ti, np.arange(shape[1]), fi, np.arange(shape[3]))] = t.gain
        weight[np.ix_(ti, np.arange(shape[1]), fi, np.arange(shape[3]))] = t.weight
        flags[np.ix_(ti, np.arange(shape[1]), fi, np.arange(shape[3]))] = t.flags
        interval[ti] = t.interval
    return GainTable(time=times, interval=interval, freq=freqs, antennas=first.antennas, gain=gain, weight=weight,
                     flags=flags, receptors=list(first.receptors), phase_only=first.phase_only, ref_ant=first.ref_ant)
