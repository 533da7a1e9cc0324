"""Primary-beam models for ``--apply-primary-beam``: Stokes-I beam images on the image grid.

Two kinds of model, chosen by the telescope name (:func:`beam_model_for`):

``everybeam``
    EveryBeam (optional extra ``[beam]``, GPL-3) evaluated from the MeasurementSet the store was
    ingested from: LOFAR (Hamaker), AARTFAAC, OSKAR / SKA-LOW (SKALA4.0), SKA-MID (its analytic
    dish model) and MWA (the FEE model, whose coefficients file the user supplies with
    ``--mwa-path``, as WSClean). As WSClean does for a snapshot-averaged image, the beam is the
    4x4 Mueller matrix averaged over time intervals (``interval_s``, WSClean's
    ``-beam-aterm-update``, 300 s) and baselines, each weighted by the summed visibility weights
    of that interval and baseline (EveryBeam's ``undersampled_response``), evaluated on a coarse
    grid (about ``pb_grid_size`` nodes along the shorter side, as WSClean's ``-pb-grid-size``, but
    64 rather than 32, with a node beyond each edge) and interpolated to the image with a bicubic
    spline (WSClean FFT-interpolates, which rings at the image edges by a few 1e-3); at each output
    channel's mean frequency.
``airy``
    A uniformly illuminated circular aperture of diameter ``D`` (the antenna table's
    DISH_DIAMETER): voltage pattern ``V(theta) = 2 J1(x) / x`` with ``x = pi D sin(theta) / lambda``,
    power ``V^2`` (half power at ``x = 1.6163``: FWHM = 1.029 lambda / D). For a dish array with
    several diameters the baseline beam is ``V_p V_q``, averaged over all baselines. The beam
    is pointed at the phase centre and has no time dependence; for an output channel it is the
    mean of the beams at its input channels' frequencies (frequency-averaged). Used for dish
    arrays that EveryBeam's Python bindings do not cover (VLA, MeerKAT, ATCA, GMRT, ...).

The Stokes-I beam of a Mueller matrix in the linear-feed basis (XX, XY, YX, YY) is the
response of I to an unpolarised source: ``(M[0,0] + M[0,3] + M[3,0] + M[3,3]) / 2``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.interpolate import RectBivariateSpline
from scipy.special import j1

from arl_mpi.errors import ConfigError, InputError
from arl_mpi.imaging.dft import pixel_to_lm

log = logging.getLogger(__name__)

C_LIGHT = 299792458.0
#: x at which (2 J1(x) / x)^2 = 1/2
AIRY_HALF_POWER_X = 1.616339948310703
#: telescope (upper case, as in OBSERVATION::TELESCOPE_NAME) -> (model, EveryBeam element model)
EVERYBEAM_TELESCOPES = {
    "LOFAR": "default",
    "AARTFAAC": "default",
    "OSKAR": "default",
    "SKA-LOW": "default",
    "MID": "skamid_analytical",
    "SKA-MID": "skamid_analytical",
    "MWA": "default",
}
#: dish arrays with the analytic Airy model (diameters from the antenna table)
AIRY_TELESCOPES = ("VLA", "EVLA", "JVLA", "MEERKAT", "ATCA", "GMRT", "ASKAP", "WSRT", "VLBA")


def beam_model_for(telescope: str) -> str:
    """``"everybeam"`` or ``"airy"`` for a telescope name (case-insensitive).

    Raises
    ------
    InputError
        One line naming the telescope and the telescopes that have a model.
    """
    name = telescope.strip().upper()
    if name in EVERYBEAM_TELESCOPES or name.startswith("OSKAR"):
        return "everybeam"
    if name in AIRY_TELESCOPES:
        return "airy"
    raise InputError(
        f"telescope '{telescope}': no primary-beam model for --apply-primary-beam (EveryBeam: "
        f"{', '.join(EVERYBEAM_TELESCOPES)}; analytic Airy dish: {', '.join(AIRY_TELESCOPES)})"
    )


def airy_voltage(theta: np.ndarray, frequency: float, diameter: float) -> np.ndarray:
    """Voltage pattern ``2 J1(x) / x``, ``x = pi D sin(theta) / lambda`` (1 on axis).

    Parameters
    ----------
    theta : ndarray
        Angle from the pointing centre (rad).
    frequency : float
        Hz.
    diameter : float
        Dish diameter (m).
    """
    x = np.pi * diameter * np.sin(np.asarray(theta, dtype=np.float64)) * frequency / C_LIGHT
    out = np.ones_like(x)
    nz = np.abs(x) > 1e-8
    out[nz] = 2.0 * j1(x[nz]) / x[nz]
    return out


def airy_half_power_radius(frequency: float, diameter: float) -> float:
    """Angle (rad) at which the Airy power pattern falls to one half."""
    return float(np.arcsin(AIRY_HALF_POWER_X * C_LIGHT / (np.pi * diameter * frequency)))


def image_radius(nx: int, ny: int, cell: float) -> np.ndarray:
    """``[ny, nx]`` angle (rad) of each pixel from the image centre (SIN projection)."""
    y, x = np.mgrid[0:ny, 0:nx]
    l, m = pixel_to_lm(x, y, nx, ny, cell)
    return np.arcsin(np.minimum(np.hypot(l, m), 1.0))


def airy_beam(nx: int, ny: int, cell: float, channel_freqs: Sequence[np.ndarray],
              diameters: np.ndarray) -> np.ndarray:  # fmt: skip
    """Stokes-I Airy beam ``[nout, ny, nx]``, pointed at the image centre.

    Parameters
    ----------
    nx, ny, cell
        Image size and pixel size (rad).
    channel_freqs
        For each output channel, the frequencies (Hz) of its input channels; the beam of the
        output channel is their mean (equal weights).
    diameters : ndarray [nant]
        Dish diameters (m); the baseline beam is ``V_p V_q`` averaged over baselines p < q.
    """
    diameters = np.asarray(diameters, dtype=np.float64)
    if diameters.size < 2 or not np.all(diameters > 0):
        raise InputError("antenna table: DISH_DIAMETER must be positive for the Airy primary beam")
    theta = image_radius(nx, ny, cell)
    uniq, counts = np.unique(diameters, return_counts=True)
    nbl = diameters.size * (diameters.size - 1) / 2
    out = np.zeros((len(channel_freqs), ny, nx))
    for o, freqs in enumerate(channel_freqs):
        for f in np.atleast_1d(freqs):
            v = [airy_voltage(theta, float(f), float(d)) for d in uniq]
            s = sum(c * vi for c, vi in zip(counts, v, strict=True))
            s2 = sum(c * vi * vi for c, vi in zip(counts, v, strict=True))
            out[o] += 0.5 * (s * s - s2) / nbl  # sum over p < q of V_p V_q
        out[o] /= np.atleast_1d(freqs).size
    return out


def _require_everybeam():
    try:
        import casacore  # noqa: F401  (sets AIPSPATH so EveryBeam's casacore finds the measures data)
        import everybeam
    except ImportError:
        raise ConfigError("--apply-primary-beam with this telescope needs EveryBeam: pip install 'arl_mpi[beam]'") \
            from None
    return everybeam


def ms_interval_weights(ms_path: str | Path, interval_s: float = 300.0,
                        nstations: int | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Times and per-baseline weights of the MS's time intervals, as EveryBeam expects them.

    Returns
    -------
    times : ndarray [nint]
        Weighted mean time (MJD seconds) of each interval.
    weights : ndarray [nint * nstations * (nstations + 1) / 2]
        Summed unflagged visibility weight of each (interval, baseline ``a1 <= a2``).
    """
    from casacore.tables import table

    with table(str(ms_path), ack=False) as t:
        time = t.getcol("TIME")
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        nrow = t.nrows()
        roww = np.zeros(nrow)
        has_weight = "WEIGHT" in t.colnames()
        step = max(1, 2**24 // max(1, int(np.prod(t.getcell("FLAG", 0).shape)) if nrow else 1))
        for r0 in range(0, nrow, step):  # FLAG in blocks of ~16M samples: bounded memory
            n = min(step, nrow - r0)
            good = 1.0 - t.getcol("FLAG", r0, n).mean(axis=1)  # unflagged fraction [row, corr]
            w = t.getcol("WEIGHT", r0, n).astype(np.float64) if has_weight else np.ones_like(good)
            roww[r0:r0 + n] = (w * good).sum(axis=1) * ~t.getcol("FLAG_ROW", r0, n)
        if nstations is None:
            with table(str(ms_path) + "::ANTENNA", ack=False) as ant:
                nstations = ant.nrows()
    t0, t1 = float(time.min()), float(time.max())
    nint = max(1, int(np.ceil((t1 - t0) / interval_s)) if t1 > t0 else 1)
    k = np.minimum(((time - t0) / interval_s).astype(int), nint - 1)
    lo, hi = np.minimum(a1, a2), np.maximum(a1, a2)
    bl = lo * nstations - lo * (lo - 1) // 2 + (hi - lo)
    nbl = nstations * (nstations + 1) // 2
    weights = np.zeros((nint, nbl))
    np.add.at(weights, (k, bl), roww)
    wt = np.bincount(k, roww, nint)
    tt = np.bincount(k, roww * time, nint)
    times = np.where(wt > 0, tt / np.maximum(wt, 1e-300), t0 + (np.arange(nint) + 0.5) * interval_s)
    return times, weights.ravel()


def stokes_i_of_mueller(m: np.ndarray) -> np.ndarray:
    """``[..., 4, 4]`` linear-basis Mueller matrices -> Stokes-I response ``[...]``."""
    return 0.5 * np.real(m[..., 0, 0] + m[..., 0, 3] + m[..., 3, 0] + m[..., 3, 3])


def load_everybeam(ms_path: str | Path, telescope: str, mwa_path: str | None = None):
    """EveryBeam's telescope object for the MS (``mwa_path``: the MWA FEE coefficients file).

    Raises
    ------
    ConfigError for MWA without ``mwa_path`` or with a missing file; InputError naming the MS
    when EveryBeam cannot read it.
    """
    eb = _require_everybeam()
    name = telescope.strip().upper()
    kw = {"element_response_model": EVERYBEAM_TELESCOPES.get(name, "default")}
    if name == "MWA":
        if not mwa_path:
            raise ConfigError("mwa-path: the MWA primary beam needs the FEE coefficients file "
                              "(mwa_full_embedded_element_pattern.h5): give --mwa-path FILE_OR_DIR")
        p = Path(mwa_path)
        if p.is_dir():
            p = p / "mwa_full_embedded_element_pattern.h5"
        if not p.is_file():
            raise ConfigError(f"mwa-path: {p}: no such MWA FEE coefficients file")
        kw["coeff_path"] = str(p)
    try:
        return eb.load_telescope(str(ms_path), **kw)
    except RuntimeError as e:
        raise InputError(f"{ms_path}: EveryBeam cannot load this MeasurementSet ({e})") from None


def everybeam_beam(ms_path: str | Path, telescope: str, nx: int, ny: int, cell: float, ra: float, dec: float,
                   frequencies: Sequence[float], mwa_path: str | None = None, interval_s: float = 300.0,
                   pb_grid_size: int = 64) -> np.ndarray:  # fmt: skip
    """Stokes-I EveryBeam beam ``[nout, ny, nx]`` on the image grid (see the module docstring).

    Parameters
    ----------
    ms_path, telescope
        The MeasurementSet and its telescope name.
    nx, ny, cell, ra, dec
        Image size, pixel size (rad) and image centre (rad, the pointing of the grid).
    frequencies
        One frequency (Hz) per output channel.
    mwa_path
        MWA's FEE coefficients file (or its directory).
    interval_s, pb_grid_size
        WSClean's ``-beam-aterm-update`` and ``-pb-grid-size``.
    """
    tel = load_everybeam(ms_path, telescope, mwa_path)
    eb = _require_everybeam()
    times, weights = ms_interval_weights(ms_path, interval_s, tel.nr_stations)
    if not np.any(weights > 0):
        raise InputError(f"{ms_path}: every visibility is flagged or has zero weight; no beam to average")
    # the coarse grid: every k-th image pixel from the centre (pixel n//2) outwards, one node beyond each edge
    k = max(1, min(nx, ny) // max(1, pb_grid_size))
    half_x, half_y = -(-(nx // 2) // k) + 1, -(-(ny // 2) // k) + 1
    gs = eb.GridSettings()
    gs.width, gs.height, gs.ra, gs.dec = 2 * half_x, 2 * half_y, ra, dec
    gs.dl, gs.dm, gs.l_shift, gs.m_shift = cell * k, cell * k, 0.0, 0.0
    xc = nx // 2 + (np.arange(2 * half_x) - half_x) * k  # image pixel of each coarse node
    yc = ny // 2 + (np.arange(2 * half_y) - half_y) * k
    out = np.empty((len(frequencies), ny, nx))
    for o, f in enumerate(frequencies):
        # factor 1: EveryBeam's own time- and baseline-weighted Mueller average on the coarse nodes
        coarse = stokes_i_of_mueller(tel.undersampled_response(gs, times, float(f), 1, weights))
        if k == 1:
            out[o] = coarse[half_y - ny // 2:half_y - ny // 2 + ny, half_x - nx // 2:half_x - nx // 2 + nx]
        else:  # bicubic spline through the nodes (no FFT wrap-around at the image edges)
            out[o] = RectBivariateSpline(yc, xc, coarse, kx=3, ky=3)(np.arange(ny), np.arange(nx))
    return out


def pb_correct(image: np.ndarray, beam: np.ndarray, limit: float) -> np.ndarray:
    """``image / beam``, NaN where ``beam < limit`` (WSClean's ``-primary-beam-limit``, on the beam normalised
    to 1 at its peak)."""
    beam = np.asarray(beam, dtype=np.float64)
    ok = beam >= limit
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, image / np.where(ok, beam, 1.0), np.nan)
