"""Toy observations for calibration tests and benchmarks.

Random planar antenna layout, simple Earth-rotation uv tracks and a direct
Fourier transform of a few point sources, ``V = sum_k S_k exp(-2 pi i (u l_k +
v m_k))``.  Intentionally minimal: it only has to produce realistic-looking
model visibilities with baseline-dependent phases.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from arl_mpi.constants import SPEED_OF_LIGHT
from arl_mpi.models import is_parallel_hand

log = logging.getLogger(__name__)

SIDEREAL_DAY_S = 86_164.0905


@dataclass
class SyntheticObservation:
    """Arrays of one synthetic visibility partition (system conventions)."""

    time: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    freq: np.ndarray
    pol_labels: list[str]
    model: np.ndarray
    weight: np.ndarray
    flags: np.ndarray
    nant: int


def make_observation(
    nant: int,
    ntime: int,
    nchan: int,
    *,
    pol_labels: Sequence[str] = ("XX", "YY"),
    dt: float = 10.0,
    t0: float = 5.0e9,
    freq0: float = 1.0e8,
    chan_width: float = 1.0e6,
    radius_m: float = 1000.0,
    fluxes: Sequence[float] = (10.0, 3.0, 2.0),
    max_offset_rad: float = 0.02,
    autocorrelations: bool = False,
    dec_deg: float = -45.0,
    seed: int = 1,
    dtype: type = np.complex128,
) -> SyntheticObservation:
    """Build a synthetic partition with a point-source model.

    Parameters
    ----------
    nant, ntime, nchan : int
        Antennas, integrations, channels.
    pol_labels : sequence of str, optional
        Parallel hands and 'I' get the total flux; cross hands are zero.
    dt : float, optional
        Integration time, seconds.
    t0 : float, optional
        First time, MJD seconds.
    freq0, chan_width : float, optional
        First channel frequency and channel width, Hz.
    radius_m : float, optional
        Antennas are uniform in a disc of this radius.
    fluxes : sequence of float, optional
        Source fluxes; the first source is at the phase centre, the others at
        random offsets up to ``max_offset_rad``.
    autocorrelations : bool, optional
        Include ``i == i`` rows (model = total flux).
    dec_deg : float, optional
        Declination used for the v foreshortening.
    seed : int, optional
        Random seed for layout and source positions.
    dtype : numpy dtype, optional
        Complex dtype of the model.

    Returns
    -------
    SyntheticObservation
    """
    rng = np.random.default_rng(seed)
    r = radius_m * np.sqrt(rng.uniform(size=nant))
    phi = rng.uniform(0, 2 * np.pi, size=nant)
    x, y = r * np.cos(phi), r * np.sin(phi)

    i, j = np.triu_indices(nant, k=0 if autocorrelations else 1)
    nbl = i.size
    times = t0 + dt * np.arange(ntime)
    time = np.repeat(times, nbl)
    a1 = np.tile(i, ntime).astype(np.int32)
    a2 = np.tile(j, ntime).astype(np.int32)
    freq = freq0 + chan_width * np.arange(nchan)

    theta = 2 * np.pi * (time - t0) / SIDEREAL_DAY_S + 0.3
    bx, by = x[a2] - x[a1], y[a2] - y[a1]
    u_m = bx * np.cos(theta) - by * np.sin(theta)
    v_m = (bx * np.sin(theta) + by * np.cos(theta)) * np.sin(np.deg2rad(dec_deg))

    nsrc = len(fluxes)
    lm = rng.uniform(-max_offset_rad, max_offset_rad, size=(nsrc, 2))
    lm[0] = 0.0
    inv_lambda = freq / SPEED_OF_LIGHT
    stokes_i = np.zeros((time.size, nchan), dtype=np.complex128)
    for s, flux in enumerate(fluxes):
        path = u_m * lm[s, 0] + v_m * lm[s, 1]  # metres
        stokes_i += flux * np.exp(-2j * np.pi * path[:, None] * inv_lambda[None, :])
    labels = [str(p).upper() for p in pol_labels]
    model = np.zeros((time.size, nchan, len(labels)), dtype=dtype)
    for p, lab in enumerate(labels):
        if is_parallel_hand(lab):
            model[:, :, p] = stokes_i
    return SyntheticObservation(
        time=time,
        antenna1=a1,
        antenna2=a2,
        freq=freq,
        pol_labels=labels,
        model=model,
        weight=np.ones(model.shape, dtype=np.float32),
        flags=np.zeros(model.shape, dtype=bool),
        nant=nant,
    )
