"""Apply, invert and interpolate gain tables.

Polarisation product ``ab`` of baseline ``(i, j)`` is multiplied by
``g_i^a conj(g_j^b)``; with a scalar table (receptors ``['I']``) every
product, including Stokes labels, uses the single receptor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from arl_mpi.calibration.gaintable import GainTable

log = logging.getLogger(__name__)


def nearest_solution_indices(
    gaintable: GainTable, time: np.ndarray, freq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Map times and frequencies onto solution cells.

    A time inside a solution interval ``[time - interval/2, time + interval/2]``
    maps to that interval; otherwise (gaps, extrapolation) to the nearest
    interval centre.  Frequencies map to the nearest solution frequency.

    Parameters
    ----------
    gaintable : GainTable
        Table with at least one time and one frequency cell.
    time : numpy.ndarray
        float [n], seconds.
    freq : numpy.ndarray
        float [nchan], Hz.

    Returns
    -------
    tidx : numpy.ndarray
        int [n], solution-time index per time.
    fidx : numpy.ndarray
        int [nchan], solution-frequency index per channel.
    """
    time = np.atleast_1d(np.asarray(time, dtype=np.float64))
    freq = np.atleast_1d(np.asarray(freq, dtype=np.float64))
    if gaintable.ntime == 0 or gaintable.nfreq == 0:
        raise ValueError("gain table has no solution cells")
    tidx = _nearest(gaintable.time, time)
    order = np.argsort(gaintable.time - 0.5 * gaintable.interval, kind="stable")
    start = (gaintable.time - 0.5 * gaintable.interval)[order]
    k = np.searchsorted(start, time, side="right") - 1
    kc = np.clip(k, 0, order.size - 1)
    cand = order[kc]
    inside = (k >= 0) & (time <= gaintable.time[cand] + 0.5 * gaintable.interval[cand])
    tidx = np.where(inside, cand, tidx)
    fidx = _nearest(gaintable.freq, freq)
    return tidx.astype(np.intp), fidx.astype(np.intp)


def _nearest(centres: np.ndarray, x: np.ndarray) -> np.ndarray:
    order = np.argsort(centres, kind="stable")
    c = centres[order]
    k = np.clip(np.searchsorted(c, x), 1, max(c.size - 1, 1))
    if c.size == 1:
        return np.zeros(x.shape, dtype=np.intp)
    left = c[k - 1]
    right = c[k]
    pick = np.where(np.abs(x - left) <= np.abs(right - x), k - 1, k)
    return order[pick]


def interpolate_gains(
    gaintable: GainTable, time: np.ndarray, freq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour interpolation of a gain table onto times and channels.

    Parameters
    ----------
    gaintable : GainTable
        Source table.
    time : numpy.ndarray
        float [ntime_out], seconds.
    freq : numpy.ndarray
        float [nchan], Hz.

    Returns
    -------
    gain : numpy.ndarray
        complex [ntime_out, nant, nchan, nrec].
    flags : numpy.ndarray
        bool [ntime_out, nant, nchan, nrec].
    """
    tidx, fidx = nearest_solution_indices(gaintable, time, freq)
    gain = gaintable.gain[tidx][:, :, fidx, :]
    flags = gaintable.flags[tidx][:, :, fidx, :]
    return gain, flags


def _receptor_pairs(pol_labels: Sequence[str], receptors: Sequence[str]) -> np.ndarray:
    """Receptor indices (a, b) for each polarisation product."""
    labels = [str(p).upper() for p in pol_labels]
    recs = [str(r).upper() for r in receptors]
    if len(recs) == 1:
        return np.zeros((len(labels), 2), dtype=np.intp)
    pairs = []
    for lab in labels:
        if len(lab) != 2 or lab[0] not in recs or lab[1] not in recs:
            raise ValueError(
                f"polarisation {lab!r} cannot be corrected with receptors {list(receptors)}"
            )
        pairs.append((recs.index(lab[0]), recs.index(lab[1])))
    return np.array(pairs, dtype=np.intp)


def apply_gains(
    time: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    vis: np.ndarray,
    freq: np.ndarray,
    pol_labels: Sequence[str],
    gaintable: GainTable,
    *,
    inverse: bool = False,
    flags: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply (corrupt) or remove (correct) antenna gains.

    Parameters
    ----------
    time : numpy.ndarray
        float [nrow], MJD seconds.
    antenna1, antenna2 : numpy.ndarray
        int [nrow]; indices into ``gaintable.antennas``.
    vis : numpy.ndarray
        complex [nrow, nchan, npol].
    freq : numpy.ndarray
        float [nchan], Hz.
    pol_labels : sequence of str
        Labels of the polarisation axis.
    gaintable : GainTable
        Gains, mapped onto rows/channels by :func:`nearest_solution_indices`.
    inverse : bool, optional
        False: ``V' = g_i V conj(g_j)`` (corrupt).  True: ``V' = V / (g_i
        conj(g_j))`` (correct).
    flags : numpy.ndarray, optional
        bool [nrow, nchan, npol] input flags (True = bad).

    Returns
    -------
    vis_out : numpy.ndarray
        Same shape and dtype as ``vis``.  Samples whose solution is flagged
        (or zero, when inverting) are left unchanged and flagged.
    flags_out : numpy.ndarray
        bool [nrow, nchan, npol]: input flags OR flagged solutions.
    """
    vis = np.asarray(vis)
    if vis.ndim != 3:
        raise ValueError(f"vis: expected [nrow, nchan, npol], got shape {vis.shape}")
    nrow, nchan, npol = vis.shape
    time = np.asarray(time, dtype=np.float64)
    a1 = np.asarray(antenna1)
    a2 = np.asarray(antenna2)
    freq = np.asarray(freq, dtype=np.float64)
    for name, arr in (("time", time), ("antenna1", a1), ("antenna2", a2)):
        if arr.shape != (nrow,):
            raise ValueError(f"{name}: shape {arr.shape} != ({nrow},)")
    if freq.shape != (nchan,):
        raise ValueError(f"freq: shape {freq.shape} != ({nchan},)")
    if len(pol_labels) != npol:
        raise ValueError(f"pol_labels {list(pol_labels)} do not match npol={npol}")
    if nrow and (min(a1.min(), a2.min()) < 0 or max(a1.max(), a2.max()) >= gaintable.nant):
        raise ValueError(f"antenna indices outside gain table [0, {gaintable.nant})")
    flags_out = np.zeros(vis.shape, dtype=bool) if flags is None else np.array(flags, dtype=bool)
    if flags_out.shape != vis.shape:
        raise ValueError(f"flags: shape {flags_out.shape} != vis shape {vis.shape}")
    pairs = _receptor_pairs(pol_labels, gaintable.receptors)
    if nrow == 0:
        return vis.copy(), flags_out

    utime, tinv = np.unique(time, return_inverse=True)
    g_u, f_u = interpolate_gains(gaintable, utime, freq)
    gi = g_u[tinv, a1]  # [nrow, nchan, nrec]
    gj = g_u[tinv, a2]
    fi = f_u[tinv, a1]
    fj = f_u[tinv, a2]
    out = np.empty_like(vis)
    for p, (ra, rb) in enumerate(pairs):
        fac = gi[:, :, ra] * np.conj(gj[:, :, rb])
        bad = fi[:, :, ra] | fj[:, :, rb] | ~np.isfinite(fac)
        if inverse:
            bad |= fac == 0
            fac = np.where(bad, 1.0, 1.0 / np.where(bad, 1.0, fac))
        else:
            fac = np.where(bad, 1.0, fac)
        out[:, :, p] = vis[:, :, p] * fac
        flags_out[:, :, p] |= bad
    return out, flags_out


def corrupt_visibilities(
    time: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    vis: np.ndarray,
    freq: np.ndarray,
    pol_labels: Sequence[str],
    gaintable: GainTable,
    *,
    flags: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt visibilities with gains: :func:`apply_gains` with ``inverse=False``.

    Returns
    -------
    vis_out, flags_out : numpy.ndarray
        As for :func:`apply_gains`.
    """
    return apply_gains(
        time, antenna1, antenna2, vis, freq, pol_labels, gaintable, inverse=False, flags=flags
    )


def invert_gaintable(gaintable: GainTable) -> GainTable:
    """Return the table of inverse gains ``1/g``.

    Zero or non-finite gains are flagged and set to 1; flagged solutions keep
    their flag.  Weights transform to first order as ``w |g|^4``.

    Parameters
    ----------
    gaintable : GainTable

    Returns
    -------
    GainTable
    """
    g = gaintable.gain
    bad = (g == 0) | ~np.isfinite(g)
    inv = np.where(bad, 1.0, 1.0 / np.where(bad, 1.0, g)).astype(g.dtype)
    absg2 = np.where(bad, 0.0, np.abs(g) ** 2)
    out = gaintable.copy()
    out.gain = inv
    out.flags = gaintable.flags | bad
    out.weight = np.where(out.flags, 0.0, gaintable.weight * absg2**2).astype(
        gaintable.weight.dtype
    )
    return out
