"""Applying h5parm solutions (DP3, LoSoTo, WSClean) to visibilities: ``--apply-solutions``.

Every ``phase`` / ``amplitude`` soltab of the solset (and LoSoTo's ``scalarphase`` /
``scalaramplitude``) is brought to the axes ``[time, freq, ant, receptor]``, interpolated
*separately* onto the data's times and channels — linearly between solution points (phases
through their unit phasors, so a wrap at ±π is harmless), held constant beyond the first and
last — and the antenna gain is ``g = Π amplitude · exp(i Σ phase)``. Visibilities are
corrected as DP3's ApplyCal does by default (``invert=true``): product ``ab`` of baseline
``(i, j)`` is divided by ``g_i^a conj(g_j^b)``. A sample is flagged when a solution it uses
(with non-zero interpolation weight) has weight 0 or a non-finite value.

Pure numpy; the tasks that call it on the workers are in :mod:`arl_mpi.graphs.calibration`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arl_mpi.calibration.apply import _receptor_pairs
from arl_mpi.io.h5parm import H5parmError, Soltab, read_h5parm

log = logging.getLogger(__name__)

_KINDS = {"phase": "phase", "scalarphase": "phase", "amplitude": "amplitude", "scalaramplitude": "amplitude"}


@dataclass
class CanonicalSoltab:
    """A phase or amplitude soltab on axes ``[time, freq, ant, receptor]``.

    ``freq`` is None when the soltab has no frequency axis (one value for all channels);
    ``receptors`` is ``['I']`` for a scalar soltab (no ``pol`` axis, or one pol).
    """

    name: str
    kind: str
    time: np.ndarray
    freq: np.ndarray | None
    ant: list[str]
    receptors: list[str]
    val: np.ndarray
    weight: np.ndarray
    flags: np.ndarray


@dataclass
class Solutions:
    """What ``--apply-solutions FILE`` applies: the file's phase/amplitude soltabs."""

    path: str
    tabs: list[CanonicalSoltab]

    @property
    def receptors(self) -> list[str]:
        """Receptors of the combined gain: a diagonal soltab's, else ``['I']``."""
        diag = [t.receptors for t in self.tabs if len(t.receptors) > 1]
        return diag[0] if diag else ["I"]


def _receptors_of(pols: np.ndarray, where: str) -> list[str]:
    labels = [str(p).upper() for p in pols]
    if len(labels) == 1:
        return ["I"]
    if len(labels) == 2 and all(len(p) == 2 and p[0] == p[1] for p in labels):
        return [p[0] for p in labels]
    raise H5parmError(f"{where}: pol axis {labels} is not supported (one pol, or the diagonal XX,YY / RR,LL; "
                      "full-Jones solutions cannot be applied)")


def canonical_soltab(st: Soltab, where: str) -> CanonicalSoltab:
    """Bring a phase/amplitude soltab to axes ``[time, freq, ant, receptor]``.

    Raises
    ------
    H5parmError
        Soltab type not phase/amplitude, no ``time`` or ``ant`` axis, an axis of unknown name,
        more than one direction, or an unsupported pol axis (one line naming the soltab).
    """
    kind = _KINDS.get(st.soltype)
    if kind is None:
        raise H5parmError(f"{where}: soltab type '{st.soltype}' cannot be applied "
                          f"(supported: {', '.join(_KINDS)})")
    for need in ("time", "ant"):
        if need not in st.axes:
            raise H5parmError(f"{where}: no '{need}' axis (AXES is '{','.join(st.axes)}')")
    unknown = [a for a in st.axes if a not in ("time", "freq", "ant", "pol", "dir")]
    if unknown:
        raise H5parmError(f"{where}: unknown axis '{unknown[0]}' in AXES '{','.join(st.axes)}'")
    val, weight, axes = st.val, st.weight, list(st.axes)
    if "dir" in axes:
        nd = len(st.coords["dir"])
        if nd != 1:
            raise H5parmError(f"{where}: {nd} directions; only direction-independent solutions (one dir) "
                              "can be applied")
        k = axes.index("dir")
        val, weight = val.take(0, axis=k), weight.take(0, axis=k)
        axes.pop(k)
    for a in ("freq", "pol"):
        if a not in axes:
            val, weight = val[..., None], weight[..., None]
            axes.append(a)
    order = [axes.index(a) for a in ("time", "freq", "ant", "pol")]
    val = np.transpose(val, order)
    weight = np.transpose(weight, order)
    receptors = _receptors_of(st.coords["pol"], where) if "pol" in st.axes else ["I"]
    flags = (weight == 0) | ~np.isfinite(val) | ~np.isfinite(weight)
    return CanonicalSoltab(name=where, kind=kind, time=np.asarray(st.coords["time"], dtype=np.float64),
                           freq=np.asarray(st.coords["freq"], dtype=np.float64) if "freq" in st.axes else None,
                           ant=[str(a) for a in st.coords["ant"]], receptors=receptors,
                           val=np.where(np.isfinite(val), val, 0.0), weight=np.where(flags, 0.0, weight),
                           flags=flags)


def solutions_from_file(path: str | os.PathLike, solset: str | None = None) -> Solutions:
    """Read and check an h5parm for applying (every phase/amplitude soltab of its solset).

    Raises
    ------
    H5parmError
        As :func:`arl_mpi.io.h5parm.read_h5parm` and :func:`canonical_soltab`; also when the
        solset holds no phase/amplitude soltab, or diagonal soltabs disagree on receptors.
    """
    ss = read_h5parm(path, solset)
    tabs = [canonical_soltab(st, f"{path}:{ss.name}/{k}") for k, st in ss.soltabs.items()]
    diag = {tuple(t.receptors) for t in tabs if len(t.receptors) > 1}
    if len(diag) > 1:
        raise H5parmError(f"{path}: soltabs disagree on receptors ({sorted(diag)})")
    return Solutions(path=str(path), tabs=tabs)


@functools.lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int) -> Solutions:
    return solutions_from_file(path)


def load_solutions(path: str | os.PathLike) -> Solutions:
    """:func:`solutions_from_file`, read once per process (keyed by path, mtime and size)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise H5parmError(f"{p}: no such h5parm file") from None
    return _cached(str(p), st.st_mtime_ns, st.st_size)


def linear_weights(x_sol: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation from points ``x_sol`` (any order) onto ``x``, constant beyond the ends.

    Returns
    -------
    i0, i1 : int arrays [len(x)], indices into ``x_sol``
    w : float array [len(x)]; the value at ``x`` is ``(1 - w) v[i0] + w v[i1]``
    """
    x_sol = np.asarray(x_sol, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x_sol, kind="stable")
    s = x_sol[order]
    if s.size == 1:
        z = np.zeros(x.shape, dtype=np.intp)
        return z, z, np.zeros(x.shape)
    k = np.clip(np.searchsorted(s, x, side="right") - 1, 0, s.size - 2)
    span = s[k + 1] - s[k]
    w = np.clip((x - s[k]) / np.where(span > 0, span, 1.0), 0.0, 1.0)
    return order[k], order[k + 1], w


def _interp(v: np.ndarray, f: np.ndarray, axis: int, i0, i1, w) -> tuple[np.ndarray, np.ndarray]:
    shape = [1] * v.ndim
    shape[axis] = w.size
    wb = w.reshape(shape)
    out = v.take(i0, axis=axis) * (1 - wb) + v.take(i1, axis=axis) * wb
    fl = (f.take(i0, axis=axis) & (wb < 1)) | (f.take(i1, axis=axis) & (wb > 0))
    return out, fl


def soltab_on_data(tab: CanonicalSoltab, time: np.ndarray, freq: np.ndarray,
                   ant_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A soltab's complex factor on the data's grid.

    Parameters
    ----------
    tab : CanonicalSoltab
    time : [nt] data times (MJD s); freq : [nchan] Hz
    ant_index : [nant_data] index of each data antenna in ``tab.ant`` (-1: not in the soltab,
        not used by the data: factor 1, unflagged)

    Returns
    -------
    factor : complex [nt, nant_data, nchan, nrec] (``exp(i phase)`` or the amplitude)
    flags : bool, same shape
    """
    v = np.exp(1j * tab.val) if tab.kind == "phase" else tab.val.astype(np.complex128)
    v, f = _interp(v, tab.flags, 0, *linear_weights(tab.time, time))
    if tab.freq is None:
        v = np.broadcast_to(v, (v.shape[0], freq.size) + v.shape[2:])
        f = np.broadcast_to(f, v.shape)
    else:
        v, f = _interp(v, f, 1, *linear_weights(tab.freq, freq))
    if tab.kind == "phase":
        v = np.exp(1j * np.angle(v))
    have = ant_index >= 0
    idx = np.where(have, ant_index, 0)
    v = np.where(have[None, None, :, None], v[:, :, idx, :], 1.0)
    f = np.where(have[None, None, :, None], f[:, :, idx, :], False)
    return np.transpose(v, (0, 2, 1, 3)), np.transpose(f, (0, 2, 1, 3))


def _antenna_index(tab: CanonicalSoltab, names: Sequence[str], used: np.ndarray, path: str) -> np.ndarray:
    pos = {n: i for i, n in enumerate(tab.ant)}
    idx = np.array([pos.get(str(n), -1) for n in names], dtype=np.intp)
    missing = [str(names[a]) for a in used if idx[a] < 0]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise H5parmError(f"{tab.name}: no solutions for antenna '{missing[0]}'{more} of the data "
                          f"(its ant axis has {len(tab.ant)} antennas)")
    return idx


def solution_gains(sol: Solutions, time: np.ndarray, freq: np.ndarray, antenna_names: Sequence[str],
                   used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Combined antenna gains of all soltabs on the data's grid.

    Parameters
    ----------
    sol : Solutions
    time : [nt] unique data times; freq : [nchan] Hz
    antenna_names : names of the data's antennas (row antenna indices index this)
    used : indices of the antennas the data use (each must be in every soltab)

    Returns
    -------
    gain : complex128 [nt, nant, nchan, nrec]; flags : bool, same shape
    """
    nrec = len(sol.receptors)
    shape = (np.size(time), len(antenna_names), np.size(freq), nrec)
    gain = np.ones(shape, dtype=np.complex128)
    flags = np.zeros(shape, dtype=bool)
    for tab in sol.tabs:
        fac, fl = soltab_on_data(tab, time, freq, _antenna_index(tab, antenna_names, used, sol.path))
        gain = gain * fac  # a scalar soltab (nrec 1) broadcasts over the receptors
        flags = flags | fl
    return gain, flags


def apply_solutions(time: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray, vis: np.ndarray,
                    freq: np.ndarray, pol_labels: Sequence[str], antenna_names: Sequence[str], sol: Solutions, *,
                    flags: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Correct visibilities with h5parm solutions: ``V / (g_i^a conj(g_j^b))``.

    Parameters
    ----------
    time : [nrow] MJD s; antenna1, antenna2 : [nrow] indices into ``antenna_names``
    vis : complex [nrow, nchan, npol]; freq : [nchan] Hz; pol_labels : npol labels (MS order)
    antenna_names : the data's antenna names, matched by name to each soltab's ant axis
    sol : Solutions from :func:`load_solutions`
    flags : bool [nrow, nchan, npol] input flags (None: none)

    Returns
    -------
    vis_out : same shape and dtype as ``vis`` (flagged samples left unchanged)
    flags_out : input flags OR samples whose solutions are flagged or zero

    Raises
    ------
    H5parmError
        An antenna of the data missing from a soltab, or correlations that the solutions'
        receptors cannot correct (one line naming the file/soltab).
    """
    vis = np.asarray(vis)
    nrow = vis.shape[0]
    flags_out = np.zeros(vis.shape, dtype=bool) if flags is None else np.array(flags, dtype=bool)
    try:
        pairs = _receptor_pairs(pol_labels, sol.receptors)
    except ValueError as e:
        raise H5parmError(f"{sol.path}: {e}") from None
    if nrow == 0:
        return vis.copy(), flags_out
    a1 = np.asarray(antenna1, dtype=np.intp)
    a2 = np.asarray(antenna2, dtype=np.intp)
    utime, tinv = np.unique(np.asarray(time, dtype=np.float64), return_inverse=True)
    used = np.unique(np.concatenate([a1, a2]))
    g, gf = solution_gains(sol, utime, np.asarray(freq, dtype=np.float64), antenna_names, used)
    out = np.empty_like(vis)
    for p, (ra, rb) in enumerate(pairs):
        fac = g[tinv, a1, :, ra] * np.conj(g[tinv, a2, :, rb])
        bad = gf[tinv, a1, :, ra] | gf[tinv, a2, :, rb] | (fac == 0) | ~np.isfinite(fac)
        out[:, :, p] = np.where(bad, vis[:, :, p], vis[:, :, p] / np.where(bad, 1.0, fac))
        flags_out[:, :, p] |= bad
    return out, flags_out
