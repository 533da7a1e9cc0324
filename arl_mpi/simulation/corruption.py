"""Simulated instrumental corruptions: smooth antenna gains and thermal noise.

These produce the known truth used by the calibration tests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from arl_mpi.calibration.apply import corrupt_visibilities
from arl_mpi.calibration.gaintable import GainTable

log = logging.getLogger(__name__)

__all__ = ["simulate_gains", "add_thermal_noise", "corrupt_visibilities"]


def _smooth_series(
    rng: np.random.Generator,
    x: np.ndarray,
    nseries: int,
    scale: float,
    ncomp: int,
) -> np.ndarray:
    """Sum of ``ncomp`` random slow sinusoids per series, unit rms over the ensemble.

    Periods are drawn in ``[scale, 4 scale]``; returns [nseries, x.size].
    """
    if x.size == 0 or nseries == 0:
        return np.zeros((nseries, x.size))
    period = scale * rng.uniform(1.0, 4.0, size=(nseries, ncomp, 1))
    phase0 = rng.uniform(0.0, 2 * np.pi, size=(nseries, ncomp, 1))
    amp = rng.normal(size=(nseries, ncomp, 1))
    xr = (x - x.min())[None, None, :]
    s = (amp * np.sin(2 * np.pi * xr / period + phase0)).sum(axis=1)
    # amplitude of a sum of ncomp sinusoids with N(0,1) amplitudes has rms sqrt(ncomp/2)
    return s / np.sqrt(ncomp / 2.0)


def simulate_gains(
    nant: int,
    times: np.ndarray,
    freqs: np.ndarray,
    *,
    phase_rms_deg: float = 30.0,
    amp_rms: float = 0.1,
    smooth_time_s: float = 3600.0,
    seed: int = 0,
    receptors: Sequence[str] = ("X", "Y"),
    delay_rms_ns: float = 0.0,
    bandpass_amp_rms: float = 0.0,
    bandpass_phase_rms_deg: float = 0.0,
    ncomp: int = 3,
    interval: float | np.ndarray | None = None,
    antenna_names: Sequence[str] | None = None,
) -> GainTable:
    """Simulate smooth, reproducible antenna gains.

    For every antenna and receptor::

        phase(t, f) = phase_rms * P(t) + 2 pi f tau + bandpass_phase_rms * Q(f)
        amp(t, f)   = (1 + amp_rms * R(t)) * (1 + bandpass_amp_rms * S(f))

    where P, R (Q, S) are sums of ``ncomp`` random sinusoids with periods
    between 1 and 4 ``smooth_time_s`` (between 1 and 4 times a quarter of the
    band), normalised to unit ensemble rms, and ``tau`` is a Gaussian delay
    with rms ``delay_rms_ns``.

    Parameters
    ----------
    nant : int
        Number of antennas.
    times : numpy.ndarray
        float [ntime], seconds; the table's time axis.
    freqs : numpy.ndarray
        float [nfreq], Hz; the table's frequency axis.
    phase_rms_deg : float, optional
        Rms of the time-variable phase, degrees.
    amp_rms : float, optional
        Fractional rms of the time-variable amplitude.
    smooth_time_s : float, optional
        Shortest variation time scale, seconds.
    seed : int, optional
        Seed for :func:`numpy.random.default_rng`.
    receptors : sequence of str, optional
        ``['X', 'Y']``, ``['R', 'L']`` or ``['I']`` (scalar table).
    delay_rms_ns : float, optional
        Rms of a per-antenna/receptor delay (phase slope in frequency).
    bandpass_amp_rms, bandpass_phase_rms_deg : float, optional
        Rms of smooth ripples in frequency (fractional, degrees).
    ncomp : int, optional
        Sinusoids per smooth series.
    interval : float or numpy.ndarray, optional
        Interval of each time cell; default the smallest time step (or
        ``smooth_time_s`` for a single time).
    antenna_names : sequence of str, optional
        Default ``ANT000`` ...

    Returns
    -------
    GainTable
        ``gain[ntime, nant, nfreq, nrec]``, unflagged, unit weights,
        ``ref_ant = 0`` (the truth is *not* phase-referenced).
    """
    times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    freqs = np.atleast_1d(np.asarray(freqs, dtype=np.float64))
    receptors = [str(r) for r in receptors]
    nrec = len(receptors)
    ntime, nfreq = times.size, freqs.size
    rng = np.random.default_rng(seed)
    nser = nant * nrec

    ph_t = _smooth_series(rng, times, nser, smooth_time_s, ncomp)  # [nser, ntime]
    am_t = _smooth_series(rng, times, nser, smooth_time_s, ncomp)
    bw = float(np.ptp(freqs)) if nfreq > 1 else 1.0
    ph_f = _smooth_series(rng, freqs, nser, max(bw / 4.0, 1e-9), ncomp)  # [nser, nfreq]
    am_f = _smooth_series(rng, freqs, nser, max(bw / 4.0, 1e-9), ncomp)
    tau = rng.normal(scale=delay_rms_ns * 1e-9, size=(nser, 1))

    phase = (
        np.deg2rad(phase_rms_deg) * ph_t[:, :, None]
        + (2 * np.pi * tau * freqs[None, :])[:, None, :]
        + np.deg2rad(bandpass_phase_rms_deg) * ph_f[:, None, :]
    )  # [nser, ntime, nfreq]
    amp = (1.0 + amp_rms * am_t[:, :, None]) * (1.0 + bandpass_amp_rms * am_f[:, None, :])
    if np.any(amp <= 0):
        log.warning("simulate_gains: non-positive amplitudes; reduce amp_rms")
    g = (amp * np.exp(1j * phase)).reshape(nant, nrec, ntime, nfreq).transpose(2, 0, 3, 1)

    if interval is None:
        steps = np.diff(np.unique(times))
        dt = float(steps.min()) if steps.size else float(smooth_time_s)
        interval_arr = np.full(ntime, dt)
    else:
        interval_arr = np.broadcast_to(np.asarray(interval, dtype=np.float64), (ntime,)).copy()
    names = (
        np.array([f"ANT{k:03d}" for k in range(nant)])
        if antenna_names is None
        else np.asarray(antenna_names, dtype=str)
    )
    return GainTable(
        time=times,
        interval=interval_arr,
        freq=freqs,
        antennas=names,
        gain=np.ascontiguousarray(g, dtype=np.complex128),
        weight=np.ones(g.shape),
        flags=np.zeros(g.shape, dtype=bool),
        receptors=receptors,
        phase_only=False,
        ref_ant=0,
    )


def add_thermal_noise(
    vis: np.ndarray, sigma: float | np.ndarray, seed: int | None = None
) -> np.ndarray:
    """Add complex Gaussian thermal noise.

    Parameters
    ----------
    vis : numpy.ndarray
        complex visibilities, any shape.
    sigma : float or numpy.ndarray
        Standard deviation of the real and of the imaginary part each
        (broadcastable to ``vis``), so ``E|n|^2 = 2 sigma^2``.
    seed : int, optional
        Seed for :func:`numpy.random.default_rng`.

    Returns
    -------
    numpy.ndarray
        New array, same shape and dtype as ``vis``.
    """
    vis = np.asarray(vis)
    rng = np.random.default_rng(seed)
    sigma = np.asarray(sigma, dtype=np.float64)
    noise = rng.normal(size=vis.shape) + 1j * rng.normal(size=vis.shape)
    out = vis + sigma * noise
    return out.astype(vis.dtype if vis.dtype.kind == "c" else np.complex128)
