"""Simulated observations: uvw from Earth rotation, visibilities of sky models, noise.

uvw are computed in the ICRS frame of the phase centre (as MeasurementSets from CASA do):
each ITRS baseline vector is rotated into the GCRS with the IAU 2006/2000A
celestial-to-terrestrial matrix (``erfa.c2t06a``, UT1 and polar motion from the IERS
table bundled with astropy; no network) and projected onto the (u, v, w) basis of the
phase centre. Baselines are ``antenna2 - antenna1``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import erfa
import numpy as np
from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.time import Time
from astropy.utils import iers

from arl_mpi.constants import SPEED_OF_LIGHT
from arl_mpi.imaging.dft import dft_predict, radec_to_lm
from arl_mpi.models import (
    POLARISATION_FRAMES,
    Configuration,
    SkyComponent,
    Visibility,
    parallel_hand_mask,
)

log = logging.getLogger(__name__)

SIDEREAL_RATE = 1.00273781191135448  # sidereal days per solar day


def configuration_from_layout(name: str, rmax_m: float | None = None) -> Configuration:
    """Load a named, published array layout shipped with the package.

    Parameters
    ----------
    name : str, e.g. ``"LOW-CORE"``, ``"VLAA"``, ``"MID"`` (see
        :func:`arl_mpi.simulation.layouts.available_layouts`)
    rmax_m : float, optional, keep antennas within this distance of the array centre
    """
    from arl_mpi.simulation.layouts import read_layout

    lay = read_layout(name, rmax_m=rmax_m)
    loc = EarthLocation.from_geodetic(lay.site_lon_deg * u.deg, lay.site_lat_deg * u.deg, lay.site_height_m * u.m)
    return Configuration(name=lay.name, names=list(lay.names), xyz=lay.xyz, diameter=lay.diameter, location=loc)


def _times(mjd_seconds: np.ndarray) -> Time:
    return Time(np.asarray(mjd_seconds, dtype=np.float64) / 86400.0, format="mjd", scale="utc")


def celestial_to_terrestrial(mjd_seconds: np.ndarray) -> np.ndarray:
    """GCRS -> ITRS rotation matrices [ntime, 3, 3] (IAU 2006/2000A, CIO based)."""
    t = _times(mjd_seconds)
    try:
        xp, yp = iers.earth_orientation_table.get().pm_xy(t)
        xp, yp = xp.to_value(u.rad), yp.to_value(u.rad)
    except Exception:  # noqa: BLE001 - outside any table: polar motion ~1e-6 rad, ignore
        xp = yp = np.zeros(t.shape)
    return erfa.c2t06a(t.tt.jd1, t.tt.jd2, t.ut1.jd1, t.ut1.jd2, xp, yp)


def uvw_basis(phase_centre: SkyCoord) -> np.ndarray:
    """Rows are the unit vectors u (east), v (north), w (towards the source), ICRS axes."""
    a = phase_centre.icrs.ra.rad
    d = phase_centre.icrs.dec.rad
    return np.array([
        [-np.sin(a), np.cos(a), 0.0],
        [-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)],
        [np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)],
    ])


def antenna_uvw(xyz: np.ndarray, mjd_seconds: np.ndarray, phase_centre: SkyCoord) -> np.ndarray:
    """Per-antenna (u, v, w) in metres, relative to the array centroid: [ntime, nant, 3]."""
    rel = np.asarray(xyz, dtype=np.float64) - np.mean(xyz, axis=0)
    c2t = celestial_to_terrestrial(np.atleast_1d(mjd_seconds))
    gcrs = np.einsum("tji,aj->tai", c2t, rel)  # ITRS -> GCRS is the transpose
    return np.einsum("kj,taj->tak", uvw_basis(phase_centre), gcrs)


def baselines(nant: int, autocorr: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Antenna index pairs (a1 < a2, or a1 <= a2 with autocorrelations), MS order."""
    a1, a2 = np.triu_indices(nant, k=0 if autocorr else 1)
    return a1.astype(np.int32), a2.astype(np.int32)


def transit_mjd_seconds(phase_centre: SkyCoord, location: EarthLocation, date: str) -> float:
    """UTC time (MJD seconds) of the phase centre's upper transit on ``date`` (YYYY-MM-DD)."""
    t0 = Time(date + "T00:00:00", scale="utc")
    lst0 = t0.sidereal_time("apparent", longitude=location.lon).to_value(u.hourangle)
    dh = (phase_centre.icrs.ra.to_value(u.hourangle) - lst0) % 24.0
    return float(t0.mjd * 86400.0 + dh * 3600.0 / SIDEREAL_RATE)


def hour_angle_times(phase_centre: SkyCoord, location: EarthLocation, hour_angles_h: np.ndarray,
                     date: str) -> np.ndarray:
    """UTC MJD seconds at which the phase centre has the given hour angles (hours)."""
    t_tr = transit_mjd_seconds(phase_centre, location, date)
    return t_tr + np.asarray(hour_angles_h, dtype=np.float64) * 3600.0 / SIDEREAL_RATE


@dataclass
class ObservationSpec:
    """What to simulate (everything needed to regenerate any partition independently)."""

    configuration: Configuration
    phase_centre: SkyCoord
    times: np.ndarray  # MJD seconds, unique sample centres
    frequency: np.ndarray  # Hz
    channel_width: np.ndarray  # Hz
    polarisations: list[str]
    integration_time: float
    autocorr: bool = False


def create_visibility(spec: ObservationSpec, times: np.ndarray | None = None, chans: slice = slice(None)) -> Visibility:
    """Empty (zero) visibilities with uvw, unit weights and no flags for some times/channels."""
    t = spec.times if times is None else np.asarray(times)
    a1, a2 = baselines(spec.configuration.nant, spec.autocorr)
    auvw = antenna_uvw(spec.configuration.xyz, t, spec.phase_centre)
    uvw = (auvw[:, a2, :] - auvw[:, a1, :]).reshape(-1, 3)
    nbl = a1.size
    freq = spec.frequency[chans]
    shape = (t.size * nbl, freq.size, len(spec.polarisations))
    return Visibility(
        time=np.repeat(t, nbl), uvw=uvw, antenna1=np.tile(a1, t.size), antenna2=np.tile(a2, t.size),
        vis=np.zeros(shape, np.complex64), weight=np.ones(shape, np.float32), flags=np.zeros(shape, bool),
        frequency=freq, channel_width=spec.channel_width[chans], polarisations=list(spec.polarisations),
        phase_centre=spec.phase_centre, integration_time=np.full(t.size * nbl, spec.integration_time),
    )


def stokes_i_to_correlations(pols: list[str]) -> np.ndarray:
    """Factor by which Stokes I enters each correlation (1 for XX/YY/RR/LL/I, 0 for cross)."""
    return parallel_hand_mask(pols).astype(np.float64)


def add_components(vis: Visibility, components: list[SkyComponent]) -> Visibility:
    """Add the (unpolarised) point sources to ``vis.vis`` in place by exact DFT (with w-term)."""
    if not components:
        return vis
    ra = np.array([c.direction.icrs.ra.rad for c in components])
    dec = np.array([c.direction.icrs.dec.rad for c in components])
    pc = vis.phase_centre.icrs
    l, m = radec_to_lm(ra, dec, pc.ra.rad, pc.dec.rad)
    flux = np.array([c.flux_at(vis.frequency) for c in components])
    v = dft_predict(l, m, flux, vis.uvw, vis.frequency)
    vis.vis += (v[:, :, None] * stokes_i_to_correlations(vis.polarisations)[None, None, :]).astype(vis.vis.dtype)
    return vis


def add_noise(vis: Visibility, sigma: float, seed: int) -> Visibility:
    """Add complex Gaussian noise of ``sigma`` Jy per real and imaginary part, in place.

    Weights are set to ``1 / sigma**2`` (the MS convention: weight = 1/variance).
    """
    if sigma <= 0:
        return vis
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(vis.vis.shape + (2,), dtype=np.float32) * np.float32(sigma)
    vis.vis += (n[..., 0] + 1j * n[..., 1]).astype(vis.vis.dtype)
    vis.weight[...] = np.float32(1.0 / sigma**2)
    return vis


def random_components(phase_centre: SkyCoord, fov_rad: float, n: int, *, flux_range: tuple[float, float] = (0.1, 2.0),
                      ref_freq: float, seed: int,
                      spectral_index_range: tuple[float, float] = (-1.0, 0.0)) -> list[SkyComponent]:
    """``n`` point sources uniformly in a square of side ``fov_rad`` around the phase centre,
    with log-uniform fluxes and uniform spectral indices (reproducible from ``seed``)."""
    from arl_mpi.imaging.dft import lm_to_radec

    rng = np.random.default_rng(seed)
    l = rng.uniform(-fov_rad / 2, fov_rad / 2, n)
    m = rng.uniform(-fov_rad / 2, fov_rad / 2, n)
    flux = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), n))
    alpha = rng.uniform(*spectral_index_range, n)
    pc = phase_centre.icrs
    ra, dec = lm_to_radec(l, m, pc.ra.rad, pc.dec.rad)
    return [SkyComponent(SkyCoord(ra=r * u.rad, dec=d * u.rad, frame="icrs"), float(f), ref_freq, float(a))
            for r, d, f, a in zip(ra, dec, flux, alpha, strict=True)]


def extended_test_sky(npix: int, cell_rad: float, seed: int = 0) -> np.ndarray:
    """An extended test sky ``[npix, npix]`` in Jy/pixel: a few elliptical Gaussians and a ring.

    Useful to exercise multiscale CLEAN; predict it with :func:`arl_mpi.imaging.predict`.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:npix, 0:npix].astype(np.float64)
    img = np.zeros((npix, npix))
    for _ in range(4):
        cx, cy = rng.uniform(0.3, 0.7, 2) * npix
        sx, sy = rng.uniform(0.01, 0.04, 2) * npix
        img += rng.uniform(0.01, 0.05) * np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))
    r = np.hypot(x - npix * 0.55, y - npix * 0.45)
    img += 0.01 * np.exp(-0.5 * ((r - 0.08 * npix) / (0.01 * npix)) ** 2)
    return img


def default_polarisations(name: str = "linearnp") -> list[str]:
    """Correlation labels of a named frame (``linear``, ``linearnp``, ``circular``...)."""
    return list(POLARISATION_FRAMES[name])


def wavelength(freq: np.ndarray) -> np.ndarray:
    """Wavelength in metres."""
    return SPEED_OF_LIGHT / np.asarray(freq)
