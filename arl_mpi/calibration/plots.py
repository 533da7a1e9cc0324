"""Diagnostic plots of gain tables (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from arl_mpi.calibration.gaintable import GainTable
from arl_mpi.io.atomic import atomic_path

log = logging.getLogger(__name__)


def plot_gains(
    gt: GainTable,
    path: str | os.PathLike,
    *,
    freq_index: int | None = None,
    max_antennas: int | None = 64,
    title: str | None = None,
) -> Path:
    """Plot gain phase (degrees) and amplitude against time, one line per antenna.

    Flagged solutions are not drawn.  The PNG is written to a temporary file
    in the destination directory and renamed (:func:`arl_mpi.io.atomic.atomic_path`).

    Parameters
    ----------
    gt : GainTable
        Gains to plot.
    path : str or os.PathLike
        Output PNG file.
    freq_index : int, optional
        Solution-frequency cell to plot; default the middle one.
    max_antennas : int or None, optional
        Plot at most this many antennas (the first ones); None = all.
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    # Figure without pyplot renders through the Agg canvas; no global backend change.
    from matplotlib.figure import Figure

    path = Path(path)
    if gt.nfreq == 0:
        raise ValueError("plot_gains: gain table has no frequency cells")
    fi = gt.nfreq // 2 if freq_index is None else int(freq_index)
    if not 0 <= fi < gt.nfreq:
        raise ValueError(f"plot_gains: freq_index {fi} outside [0, {gt.nfreq})")
    nant = gt.nant if max_antennas is None else min(gt.nant, max_antennas)
    t = gt.time - (gt.time.min() if gt.ntime else 0.0)

    fig = Figure(figsize=(5.0 * gt.nrec + 2.0, 6.0), layout="constrained")
    axes = fig.subplots(2, gt.nrec, squeeze=False, sharex=True)
    for r, rec in enumerate(gt.receptors):
        g = np.where(gt.flags[:, :nant, fi, r], np.nan, gt.gain[:, :nant, fi, r])
        axp, axa = axes[0, r], axes[1, r]
        for a in range(nant):
            axp.plot(t, np.degrees(np.angle(g[:, a])), ".-", lw=0.7, ms=2)
            axa.plot(t, np.abs(g[:, a]), ".-", lw=0.7, ms=2)
        axp.set_ylabel(f"phase {rec} [deg]")
        axa.set_ylabel(f"amplitude {rec}")
        axa.set_xlabel("time - t0 [s]")
        axp.set_title(f"receptor {rec}, freq {gt.freq[fi] / 1e6:.3f} MHz")
    if title:
        fig.suptitle(title)

    path.resolve().parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # a full disk: one line naming the PNG, nothing under its name
        fig.savefig(tmp, format="png", dpi=100)
    log.debug("wrote gain plot %s", path)
    return path
