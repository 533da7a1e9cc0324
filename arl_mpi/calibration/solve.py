"""StefCal / alternating-least-squares antenna gain solver.

The measurement equation is ``V_ij = g_i M_ij conj(g_j)``.  Data are first
reduced, per solution cell (time interval x frequency block x receptor), to
three per-baseline sums

* ``A_ij = sum w V_ij conj(M_ij)`` (complex),
* ``B_ij = sum w |M_ij|^2``,
* ``C_i  = sum_j sum w |V_ij|^2`` (per antenna, for the residual),

completed to Hermitian / symmetric ``nant x nant`` matrices.  Since ``g_j`` is
constant inside a cell, the StefCal update for every antenna of every cell is
then one batched matrix-vector product::

    g_i <- (sum_j A_ij g_j) / (sum_j B_ij |g_j|^2)

with the update averaged with the previous iterate on every second iteration
(Salvini & Wijnholds 2014).  See ``docs/calibration.md`` for the SNR and
flagging definitions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

from arl_mpi.calibration.gaintable import GainTable
from arl_mpi.models import is_parallel_hand

log = logging.getLogger(__name__)

_DEFAULT_LABELS = {1: ["I"], 2: ["XX", "YY"], 4: ["XX", "XY", "YX", "YY"]}
_RECEPTOR_SETS = (("X", "Y"), ("R", "L"))


def default_pol_labels(npol: int) -> list[str]:
    """Polarisation labels assumed when none are given.

    Parameters
    ----------
    npol : int
        Number of polarisation products (1, 2 or 4).

    Returns
    -------
    list of str
        ``['I']``, ``['XX', 'YY']`` or ``['XX', 'XY', 'YX', 'YY']``.
    """
    if npol not in _DEFAULT_LABELS:
        raise ValueError(f"cannot infer polarisation labels for npol={npol}; pass pol_labels")
    return list(_DEFAULT_LABELS[npol])


def select_solver_pols(
    pol_labels: Sequence[str], pol_mode: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Choose the polarisation products used by the solver.

    Parameters
    ----------
    pol_labels : sequence of str
        Labels of the visibility polarisation axis.
    pol_mode : {'scalar', 'diagonal'}
        Scalar: all parallel hands (or a single ``'I'``) feed one receptor.
        Diagonal: ``XX``/``RR`` feed receptor 0, ``YY``/``LL`` receptor 1.

    Returns
    -------
    pol_index : numpy.ndarray
        int, indices into the polarisation axis.
    rec_index : numpy.ndarray
        int, receptor index solved by each selected product.
    receptors : list of str
        Receptor names of the resulting gain table.
    """
    labels = [str(lab).upper() for lab in pol_labels]
    parallel = [(k, lab[0]) for k, lab in enumerate(labels) if is_parallel_hand(lab, include_stokes_i=False)]
    if pol_mode == "scalar":
        if parallel:
            idx = [k for k, _ in parallel]
        elif "I" in labels:
            idx = [labels.index("I")]
        else:
            raise ValueError(f"scalar solve needs parallel hands or 'I', got pols {labels}")
        return np.array(idx, dtype=np.intp), np.zeros(len(idx), dtype=np.intp), ["I"]
    if pol_mode == "diagonal":
        if not parallel:
            raise ValueError(f"diagonal solve needs parallel-hand pols, got {labels}")
        letters = {c for _, c in parallel}
        for rset in _RECEPTOR_SETS:
            if letters <= set(rset):
                recs = list(rset)
                break
        else:
            raise ValueError(f"diagonal solve: mixed or unknown receptors in {labels}")
        idx = np.array([k for k, _ in parallel], dtype=np.intp)
        rec = np.array([recs.index(c) for _, c in parallel], dtype=np.intp)
        return idx, rec, recs
    raise ValueError(f"pol_mode must be 'scalar' or 'diagonal', got {pol_mode!r}")


def _time_bins(time: np.ndarray, solint: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign rows to solution intervals.

    Returns (bin index per row, centre per bin, interval per bin).  Bins are
    ``floor((t - t0) / solint)`` with empty bins dropped; the centre is the
    midpoint of the data the bin holds and the interval its data extent plus
    one integration (smallest positive time step).
    """
    if time.size == 0:
        return np.zeros(0, np.intp), np.zeros(0), np.zeros(0)
    t0 = time.min()
    if solint is None:
        raw = np.zeros(time.size, dtype=np.int64)
    elif solint == 0:  # one solution per integration
        raw = np.unique(time, return_inverse=True)[1].astype(np.int64)
    else:
        if not solint > 0:
            raise ValueError(f"solint must be >= 0 seconds or None, got {solint}")
        # small offset so that rows exactly on a boundary go to the later bin
        raw = np.floor((time - t0) / solint + 1e-6).astype(np.int64)
    uniq, tbin = np.unique(raw, return_inverse=True)
    nbin = uniq.size
    tmin = np.full(nbin, np.inf)
    tmax = np.full(nbin, -np.inf)
    np.minimum.at(tmin, tbin, time)
    np.maximum.at(tmax, tbin, time)
    utimes = np.unique(time)
    steps = np.diff(utimes)
    dt = float(steps[steps > 0].min()) if np.any(steps > 0) else 0.0
    interval = (tmax - tmin) + dt
    if dt == 0.0 and solint is not None:
        interval[:] = solint
    return tbin.astype(np.intp), 0.5 * (tmin + tmax), interval


def _matvec(A: np.ndarray, B: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched ``sum_j A_ij g_j`` and ``sum_j B_ij |g_j|^2``.

    ``einsum`` rather than ``matmul``: a multi-threaded BLAS matrix-vector
    product slows down by more than an order of magnitude on busy shared cores,
    the single-threaded einsum loop does not.
    """
    num = np.einsum("cij,cj->ci", A, g)
    den = np.einsum("cij,cj->ci", B, g.real**2 + g.imag**2)
    return num, den


def _stefcal(
    A: np.ndarray,
    B: np.ndarray,
    phase_only: bool,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run StefCal on a stack of cells.

    Parameters
    ----------
    A : numpy.ndarray
        complex [ncell, nant, nant], Hermitian.
    B : numpy.ndarray
        float [ncell, nant, nant], symmetric, non-negative.
    phase_only : bool
        Normalise gains to unit amplitude after every update.
    tol : float
        Convergence threshold on ``||g_k - g_{k-1}|| / ||g_k||`` per cell.
    max_iter : int
        Maximum iterations.

    Returns
    -------
    g : numpy.ndarray
        complex [ncell, nant]; 1 for antennas without data.
    converged : numpy.ndarray
        bool [ncell].
    niter : numpy.ndarray
        int [ncell]; iteration at which each cell converged (max_iter if not).
    """
    ncell, nant, _ = A.shape
    g = np.ones((ncell, nant), dtype=np.complex128)
    converged = np.zeros(ncell, dtype=bool)
    niter = np.full(ncell, max_iter, dtype=np.int64)
    for it in range(1, max_iter + 1):
        num, den = _matvec(A, B, g)
        ok = den > 0
        g_new = np.where(ok, num / np.where(ok, den, 1.0), g)
        if it % 2 == 0:
            g_new = 0.5 * (g_new + g)
        if phase_only:
            amp = np.abs(g_new)
            g_new = np.where(amp > 0, g_new / np.where(amp > 0, amp, 1.0), 1.0)
        norm = np.linalg.norm(g_new, axis=1)
        delta = np.linalg.norm(g_new - g, axis=1) / np.where(norm > 0, norm, 1.0)
        g = np.where(converged[:, None], g, g_new)
        newly = (delta < tol) & ~converged
        niter[newly] = it
        converged |= newly
        if converged.all():
            break
    return g, converged, niter


def _cell_budget(nant: int, nrec: int, budget_bytes: int) -> int:
    per_cell = nrec * nant * nant * 40  # A (16) + B (8) + temporaries
    return max(1, int(budget_bytes // max(per_cell, 1)))


def solve_gains(
    time: np.ndarray,
    antenna1: np.ndarray,
    antenna2: np.ndarray,
    vis: np.ndarray,
    model_vis: np.ndarray,
    weight: np.ndarray,
    flags: np.ndarray | None,
    freq: np.ndarray,
    nant: int,
    *,
    solint: float | None = None,
    freq_block: int | None = None,
    mode: Literal["phase", "amp_phase"] = "amp_phase",
    pol_mode: Literal["scalar", "diagonal"] = "scalar",
    ref_ant: int = 0,
    tol: float = 1e-6,
    max_iter: int = 200,
    min_snr: float = 3.0,
    pol_labels: Sequence[str] | None = None,
    antenna_names: Sequence[str] | None = None,
    memory_budget_bytes: int = 256 * 2**20,
) -> GainTable:
    """Solve for antenna gains with StefCal.

    Parameters
    ----------
    time : numpy.ndarray
        float64 [nrow], MJD seconds.
    antenna1, antenna2 : numpy.ndarray
        int [nrow], antenna indices in ``[0, nant)``; autocorrelation rows
        (``antenna1 == antenna2``) are ignored; rows with
        ``antenna1 > antenna2`` are treated as the conjugate baseline.
    vis, model_vis : numpy.ndarray
        complex [nrow, nchan, npol], observed and model visibilities.
    weight : numpy.ndarray
        float, broadcastable to ``vis.shape``; relative weights (the absolute
        scale is re-estimated from the residuals).
    flags : numpy.ndarray or None
        bool, broadcastable to ``vis.shape``; True = bad.
    freq : numpy.ndarray
        float [nchan], Hz.
    nant : int
        Number of antennas (gain-table antenna axis).
    solint : float or None, optional
        Solution interval in seconds; 0 = one solution per integration; None = one
        interval for the whole partition.
    freq_block : int or None, optional
        Channels per solution; None = all channels; 1 = per-channel bandpass.
    mode : {'phase', 'amp_phase'}, optional
        'phase' constrains ``|g| = 1``.
    pol_mode : {'scalar', 'diagonal'}, optional
        'scalar': one gain per antenna from the parallel hands (or 'I');
        'diagonal': separate X/Y (R/L) gains from XX/YY (RR/LL); cross hands
        are never used.
    ref_ant : int, optional
        Reference antenna whose phase is set to zero in every cell (if it has
        no data in a cell, the lowest-index antenna with data is used there).
    tol : float, optional
        Relative convergence tolerance of StefCal.
    max_iter : int, optional
        Maximum StefCal iterations; cells not converged are flagged.
    min_snr : float, optional
        Solutions with SNR below this are flagged.
    pol_labels : sequence of str, optional
        Labels of the polarisation axis; default inferred from ``npol``
        (1: I, 2: XX YY, 4: XX XY YX YY).
    antenna_names : sequence of str, optional
        Names for the gain table; default ``ANT000`` ...
    memory_budget_bytes : int, optional
        Approximate memory per batch of cells for the ``nant x nant``
        normal-matrix stacks.

    Returns
    -------
    GainTable
        ``gain[ntime, nant, nfreq_sol, nrec]``; ``weight`` is the inverse
        variance ``sum_j w |g_j M_ij|^2 / s_i`` of each solution and
        ``snr = |g| sqrt(weight)``; ``flags`` marks no data, SNR < min_snr,
        or non-convergence.

    Notes
    -----
    SNR of antenna ``i`` in a cell: with ``chi2_i = sum_j w |V_ij - g_i M_ij
    conj(g_j)|^2`` over its ``n_i`` weighted samples and ``s_i = chi2_i /
    (n_i - 1)``, ``SNR_i = |g_i| sqrt(sum_j w |g_j M_ij|^2 / s_i)``, i.e. the
    gain amplitude over its (complex) standard error.  The rms phase error is
    about ``1 / (sqrt(2) SNR)`` radians.  ``n_i <= 1`` gives SNR 0.  The
    weight ignores the reference antenna's own phase error, which referencing
    adds to every other antenna.
    """
    time = np.asarray(time, dtype=np.float64)
    a1 = np.asarray(antenna1)
    a2 = np.asarray(antenna2)
    vis = np.asarray(vis)
    model_vis = np.asarray(model_vis)
    freq = np.asarray(freq, dtype=np.float64)
    if vis.ndim != 3:
        raise ValueError(f"vis: expected [nrow, nchan, npol], got shape {vis.shape}")
    nrow, nchan, npol = vis.shape
    if model_vis.shape != vis.shape:
        raise ValueError(f"model_vis: shape {model_vis.shape} != vis shape {vis.shape}")
    for name, arr in (("time", time), ("antenna1", a1), ("antenna2", a2)):
        if arr.shape != (nrow,):
            raise ValueError(f"{name}: shape {arr.shape} != ({nrow},)")
    if a1.dtype.kind not in "iu" or a2.dtype.kind not in "iu":
        raise ValueError("antenna1/antenna2: expected integer arrays")
    if freq.shape != (nchan,):
        raise ValueError(f"freq: shape {freq.shape} != ({nchan},)")
    weight = np.broadcast_to(np.asarray(weight), vis.shape)
    flags = (
        np.zeros(vis.shape, dtype=bool)
        if flags is None
        else np.broadcast_to(np.asarray(flags, dtype=bool), vis.shape)
    )
    if mode not in ("phase", "amp_phase"):
        raise ValueError(f"mode must be 'phase' or 'amp_phase', got {mode!r}")
    nant = int(nant)
    if nant < 1:
        raise ValueError(f"nant must be >= 1, got {nant}")
    if not 0 <= ref_ant < nant:
        raise ValueError(f"ref_ant {ref_ant} outside [0, {nant})")
    if nrow and (min(a1.min(), a2.min()) < 0 or max(a1.max(), a2.max()) >= nant):
        raise ValueError(f"antenna indices outside [0, {nant})")
    if freq_block is not None and freq_block < 1:
        raise ValueError(f"freq_block must be >= 1 or None, got {freq_block}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    labels = list(pol_labels) if pol_labels is not None else default_pol_labels(npol)
    if len(labels) != npol:
        raise ValueError(f"pol_labels {labels} do not match npol={npol}")
    pol_idx, rec_of_pol, receptors = select_solver_pols(labels, pol_mode)
    nrec = len(receptors)
    phase_only = mode == "phase"

    # ---- solution grid
    tbin, t_centre, t_interval = _time_bins(time, solint)
    ntb = t_centre.size
    fb = nchan if freq_block is None else int(freq_block)
    nfb = -(-nchan // fb) if nchan else 0
    f_centre = np.array([freq[k * fb : (k + 1) * fb].mean() for k in range(nfb)])

    gain = np.ones((ntb, nant, nfb, nrec), dtype=np.complex128)
    weight_out = np.zeros((ntb, nant, nfb, nrec), dtype=np.float64)
    flag_out = np.ones((ntb, nant, nfb, nrec), dtype=bool)
    names = (
        np.array([f"ANT{k:03d}" for k in range(nant)])
        if antenna_names is None
        else np.asarray(antenna_names, dtype=str)
    )
    if names.shape != (nant,):
        raise ValueError(f"antenna_names: expected {nant} names, got {names.shape}")

    # ---- cross-correlation rows, sorted by time bin
    cross = np.flatnonzero(a1 != a2)
    order = cross[np.argsort(tbin[cross], kind="stable")]
    tb_sorted = tbin[order]

    ncell_max = _cell_budget(nant, nrec, memory_budget_bytes)
    nfb_chunk = max(1, min(nfb, ncell_max))
    ntb_chunk = max(1, ncell_max // nfb_chunk)
    n_not_conv = 0
    iters: list[np.ndarray] = []
    for tb_lo in range(0, ntb, ntb_chunk):
        tb_hi = min(ntb, tb_lo + ntb_chunk)
        r_lo, r_hi = np.searchsorted(tb_sorted, [tb_lo, tb_hi])
        rows = order[r_lo:r_hi]
        for fb_lo in range(0, nfb, nfb_chunk):
            fb_hi = min(nfb, fb_lo + nfb_chunk)
            g, wt, fl, conv, nit = _solve_chunk(
                rows,
                tbin[rows] - tb_lo,
                tb_hi - tb_lo,
                a1,
                a2,
                vis,
                model_vis,
                weight,
                flags,
                slice(fb_lo * fb, min(fb_hi * fb, nchan)),
                fb,
                fb_hi - fb_lo,
                pol_idx,
                rec_of_pol,
                nrec,
                nant,
                phase_only,
                ref_ant,
                tol,
                max_iter,
                min_snr,
            )
            gain[tb_lo:tb_hi, :, fb_lo:fb_hi, :] = g
            weight_out[tb_lo:tb_hi, :, fb_lo:fb_hi, :] = wt
            flag_out[tb_lo:tb_hi, :, fb_lo:fb_hi, :] = fl
            n_not_conv += int((~conv).sum())
            iters.append(nit)

    if iters:
        all_it = np.concatenate(iters)
        log.info(
            "solve_gains: %d cells x %d antennas, mean %.1f / max %d iterations, "
            "%d cells not converged, %.1f%% solutions flagged",
            all_it.size,
            nant,
            all_it.mean(),
            all_it.max(),
            n_not_conv,
            100.0 * flag_out.mean() if flag_out.size else 0.0,
        )
    return GainTable(
        time=t_centre,
        interval=t_interval,
        freq=f_centre,
        antennas=names,
        gain=gain,
        weight=weight_out,
        flags=flag_out,
        receptors=receptors,
        phase_only=phase_only,
        ref_ant=ref_ant,
    )


def _solve_chunk(
    rows: np.ndarray,
    tb_local: np.ndarray,
    ntb: int,
    a1: np.ndarray,
    a2: np.ndarray,
    vis: np.ndarray,
    model_vis: np.ndarray,
    weight: np.ndarray,
    flags: np.ndarray,
    chans: slice,
    fb: int,
    nfb: int,
    pol_idx: np.ndarray,
    rec_of_pol: np.ndarray,
    nrec: int,
    nant: int,
    phase_only: bool,
    ref_ant: int,
    tol: float,
    max_iter: int,
    min_snr: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Accumulate and solve one batch of cells; returns [ntb, nant, nfb, nrec] arrays."""
    ncell = ntb * nfb * nrec
    nn = nant * nant
    ant_i = np.minimum(a1[rows], a2[rows]).astype(np.int64)
    ant_j = np.maximum(a1[rows], a2[rows]).astype(np.int64)
    swap = a1[rows] > a2[rows]

    V = vis[rows, chans][:, :, pol_idx]
    M = model_vis[rows, chans][:, :, pol_idx]
    W = weight[rows, chans][:, :, pol_idx].astype(np.float64)
    good = ~flags[rows, chans][:, :, pol_idx]
    good &= (W > 0) & np.isfinite(W) & np.isfinite(V) & np.isfinite(M)
    W = np.where(good, W, 0.0)
    V = np.where(good, V, 0.0).astype(np.complex128, copy=False)
    M = np.where(good, M, 0.0).astype(np.complex128, copy=False)

    # per-sample products, then sum over the channels of each frequency block
    # and over the polarisations feeding the same receptor (g is constant there)
    nch = V.shape[1]
    starts = np.arange(0, nch, fb)

    def reduce(x: np.ndarray) -> np.ndarray:
        x = np.add.reduceat(x, starts, axis=1) if nch > 1 else x
        return np.stack([x[:, :, rec_of_pol == r].sum(axis=2) for r in range(nrec)], axis=2)

    wvm = reduce(W * V * np.conj(M))  # [nr, nfb, nrec]
    wmm = reduce(W * (M.real**2 + M.imag**2))
    wvv = reduce(W * (V.real**2 + V.imag**2))
    cnt = reduce(good.astype(np.float64))
    del V, M, W, good
    if swap.any():
        wvm[swap] = np.conj(wvm[swap])

    cell = (tb_local.astype(np.int64)[:, None, None] * nfb + np.arange(nfb)[None, :, None]) * nrec
    cell = cell + np.arange(nrec)[None, None, :]  # [nr, nfb, nrec]
    ci = (cell * nant + ant_i[:, None, None]).ravel()
    cj = (cell * nant + ant_j[:, None, None]).ravel()
    flat = ci * nant + ant_j.repeat(nfb * nrec)
    wvm, wmm, wvv, cnt = wvm.ravel(), wmm.ravel(), wvv.ravel(), cnt.ravel()
    A = np.bincount(flat, weights=wvm.real, minlength=ncell * nn) + 1j * np.bincount(
        flat, weights=wvm.imag, minlength=ncell * nn
    )
    B = np.bincount(flat, weights=wmm, minlength=ncell * nn)
    A = A.reshape(ncell, nant, nant)
    B = B.reshape(ncell, nant, nant)
    A += np.conj(A.transpose(0, 2, 1))
    B += B.transpose(0, 2, 1)
    csum = (
        np.bincount(ci, weights=wvv, minlength=ncell * nant)
        + np.bincount(cj, weights=wvv, minlength=ncell * nant)
    ).reshape(ncell, nant)
    nsamp = np.rint(
        np.bincount(ci, weights=cnt, minlength=ncell * nant)
        + np.bincount(cj, weights=cnt, minlength=ncell * nant)
    ).reshape(ncell, nant)
    del wvm, wmm, wvv, cnt, flat, ci, cj

    g, converged, niter = _stefcal(A, B, phase_only, tol, max_iter)
    has_data = B.sum(axis=2) > 0

    # reference phase: ref_ant, or the first antenna with data in the cell
    ref = np.where(has_data[:, ref_ant], ref_ant, np.argmax(has_data, axis=1))
    fallback = (~has_data[:, ref_ant]) & has_data.any(axis=1)
    if fallback.any():
        log.warning(
            "solve_gains: reference antenna %d has no data in %d cells; "
            "using the first antenna with data there",
            ref_ant,
            int(fallback.sum()),
        )
    gref = g[np.arange(ncell), ref]
    aref = np.abs(gref)
    rot = np.where(aref > 0, np.conj(gref) / np.where(aref > 0, aref, 1.0), 1.0)
    g = g * rot[:, None]

    # SNR from residual scatter
    absg2 = g.real**2 + g.imag**2
    num, den = _matvec(A, B, g)
    chi2 = np.maximum(csum - 2.0 * np.real(g * np.conj(num)) + absg2 * den, 0.0)
    nu = nsamp - 1
    s = np.where(nu > 0, chi2 / np.maximum(nu, 1), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        wt = np.where(s > 0, den / s, den)
    wt = np.where(nu > 0, wt, 0.0)
    snr = np.sqrt(absg2 * wt)
    flagged = (~has_data) | (snr < min_snr) | (~converged[:, None]) | ~np.isfinite(g)
    g = np.where(has_data & np.isfinite(g), g, 1.0 + 0.0j)
    wt = np.where(flagged, 0.0, wt)

    def to_out(x: np.ndarray) -> np.ndarray:
        return x.reshape(ntb, nfb, nrec, nant).transpose(0, 3, 1, 2)

    conv_cells = converged.reshape(ntb, nfb, nrec)
    return to_out(g), to_out(wt), to_out(flagged), conv_cells, niter
