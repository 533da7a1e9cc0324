"""The built-in simulated observation: a deterministic recipe any process can regenerate.

A :class:`SimulationSettings` fully determines an observation (array, times, channels,
sky, noise). Any process can build the partition it was asked for from the settings alone,
so partitions are simulated and written in parallel without shipping visibilities.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord

from arl_mpi.errors import ConfigError
from arl_mpi.io.store import PartitionInfo, StoreMeta, plan_partitions, write_partition
from arl_mpi.models import SkyComponent
from arl_mpi.simulation.observation import (
    ObservationSpec,
    add_components,
    add_noise,
    configuration_from_layout,
    create_visibility,
    default_polarisations,
    hour_angle_times,
    random_components,
)

log = logging.getLogger(__name__)


@dataclass
class SimulationSettings:
    """Recipe of a simulated observation (defaults: the built-in LOW-core observation).

    Attributes
    ----------
    layout : str, array layout name (see ``arl_mpi.simulation.layouts``)
    rmax_m : float, keep stations within this radius of the array centre (m); 0 = all
    ra_deg, dec_deg : float, phase centre (ICRS)
    date : str, observing date (UTC), the phase centre transits during it
    ha_start_h, ha_stop_h : float, hour-angle range (hours)
    ntimes : int, number of integrations
    freq_start_hz, freq_stop_hz : float, centres of first and last channel
    nchan : int
    polarisation_frame : str, ``linearnp`` (XX, YY), ``linear``, ``circular``...
    nsources : int, random point sources (plus one bright source at fixed offset)
    fov_deg : float, side of the square the sources are drawn in
    flux_min_jy, flux_max_jy : float
    noise_jy : float, rms noise per real/imaginary part per visibility (0 = none)
    seed : int
    line_peak_jy : float, peak of a Gaussian spectral-line source (0 = none)
    line_centre_hz, line_fwhm_hz : float, its line centre and width
    line_ra_offset_deg, line_dec_offset_deg : float, its offset from the phase centre
    line_continuum_jy : float, flat continuum of the line source
    """

    layout: str = "LOW-CORE"
    rmax_m: float = 600.0
    ra_deg: float = 15.0
    dec_deg: float = -45.0
    date: str = "2026-03-21"
    ha_start_h: float = -2.0
    ha_stop_h: float = 2.0
    ntimes: int = 16
    freq_start_hz: float = 100e6
    freq_stop_hz: float = 120e6
    nchan: int = 4
    polarisation_frame: str = "linearnp"
    nsources: int = 8
    fov_deg: float = 3.0
    flux_min_jy: float = 0.3
    flux_max_jy: float = 3.0
    noise_jy: float = 0.05
    seed: int = 1234
    line_peak_jy: float = 0.0
    line_centre_hz: float = 110e6
    line_fwhm_hz: float = 2e6
    line_ra_offset_deg: float = 0.5
    line_dec_offset_deg: float = -0.3
    line_continuum_jy: float = 0.0
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ConfigError on impossible values."""
        if self.ntimes < 1 or self.nchan < 1:
            raise ConfigError("simulation: ntimes and nchan must be >= 1")
        if not -90 <= self.dec_deg <= 90:
            raise ConfigError(f"simulation: dec_deg {self.dec_deg} outside [-90, 90]")
        if self.freq_start_hz <= 0 or self.freq_stop_hz < self.freq_start_hz:
            raise ConfigError("simulation: need 0 < freq_start_hz <= freq_stop_hz")
        if self.ha_stop_h < self.ha_start_h:
            raise ConfigError("simulation: ha_stop_h must be >= ha_start_h")
        if self.noise_jy < 0:
            raise ConfigError("simulation: noise_jy must be >= 0")


@dataclass
class Simulation:
    """An expanded recipe: the observation spec and the sky model."""

    settings: SimulationSettings
    spec: ObservationSpec
    components: list[SkyComponent]

    def meta(self) -> StoreMeta:
        """Store metadata of this observation."""
        return StoreMeta(
            phase_centre=self.spec.phase_centre, frequency=self.spec.frequency,
            channel_width=self.spec.channel_width, polarisations=list(self.spec.polarisations),
            configuration=self.spec.configuration, telescope=self.settings.layout,
            provenance={"simulated": True, "settings": asdict(self.settings),
                        "components": [component_record(c) for c in self.components]},
        )


def component_record(c: SkyComponent) -> dict:
    """JSON-serialisable description of a component."""
    rec = {"ra_deg": float(c.direction.icrs.ra.deg), "dec_deg": float(c.direction.icrs.dec.deg),
           "flux_jy": float(c.flux), "ref_freq_hz": float(c.ref_freq), "spectral_index": float(c.spectral_index)}
    if c.line_fwhm > 0:
        rec.update(line_peak_jy=float(c.line_peak), line_centre_hz=float(c.line_centre),
                   line_fwhm_hz=float(c.line_fwhm))
    return rec


def build(settings: SimulationSettings) -> Simulation:
    """Expand settings into an observation spec and sky model (deterministic)."""
    settings.validate()
    cfg = configuration_from_layout(settings.layout, rmax_m=settings.rmax_m or None)
    pc = SkyCoord(ra=settings.ra_deg * u.deg, dec=settings.dec_deg * u.deg, frame="icrs")
    ha = np.linspace(settings.ha_start_h, settings.ha_stop_h, settings.ntimes)
    times = hour_angle_times(pc, cfg.location, ha, settings.date)
    tint = float((settings.ha_stop_h - settings.ha_start_h) * 3600.0 / max(settings.ntimes - 1, 1)) or 10.0
    freq = np.linspace(settings.freq_start_hz, settings.freq_stop_hz, settings.nchan)
    cw = np.full(settings.nchan, (freq[1] - freq[0]) if settings.nchan > 1 else 1e6)
    spec = ObservationSpec(configuration=cfg, phase_centre=pc, times=times, frequency=freq, channel_width=cw,
                           polarisations=default_polarisations(settings.polarisation_frame), integration_time=tint)
    ref = float(np.mean(freq))
    comps = random_components(pc, np.deg2rad(settings.fov_deg), settings.nsources,
                              flux_range=(settings.flux_min_jy, settings.flux_max_jy), ref_freq=ref, seed=settings.seed)
    if settings.line_peak_jy:
        where = pc.spherical_offsets_by(settings.line_ra_offset_deg * u.deg, settings.line_dec_offset_deg * u.deg)
        comps.append(SkyComponent(where, settings.line_continuum_jy, ref, 0.0, line_peak=settings.line_peak_jy,
                                  line_centre=settings.line_centre_hz, line_fwhm=settings.line_fwhm_hz))
    return Simulation(settings=settings, spec=spec, components=comps)


def partition_seed(seed: int, time_block: int, freq_block: int) -> int:
    """Independent, reproducible noise seed of one partition."""
    h = hashlib.sha256(f"{seed}:{time_block}:{freq_block}".encode()).digest()
    return int.from_bytes(h[:8], "little")


def true_gains(sim: Simulation):
    """The antenna gains the recipe corrupts the data with (``settings.extra["gains"]``), or None.

    ``extra["gains"]`` holds keyword arguments of
    :func:`arl_mpi.simulation.corruption.simulate_gains` (phase_rms_deg, amp_rms, seed, ...).
    """
    spec = sim.settings.extra.get("gains") if sim.settings.extra else None
    if not spec:
        return None
    from arl_mpi.simulation.corruption import simulate_gains

    receptors = ["R", "L"] if sim.spec.polarisations[0].startswith("R") else ["X", "Y"]
    return simulate_gains(sim.spec.configuration.nant, sim.spec.times, sim.spec.frequency, receptors=receptors,
                          antenna_names=sim.spec.configuration.names, **spec)


def simulate_partition(sim: Simulation, times: np.ndarray, chans: slice, time_block: int, freq_block: int):
    """Visibilities of one partition (sources, then antenna gains if any, then noise)."""
    vis = create_visibility(sim.spec, times, chans)
    add_components(vis, sim.components)
    gt = true_gains(sim)
    if gt is not None:
        from arl_mpi.calibration.apply import corrupt_visibilities

        corrupted, _ = corrupt_visibilities(vis.time, vis.antenna1, vis.antenna2, vis.vis, vis.frequency,
                                            vis.polarisations, gt)
        vis.vis[...] = corrupted
    add_noise(vis, sim.settings.noise_jy, partition_seed(sim.settings.seed, time_block, freq_block))
    return vis


def partition_plan(sim: Simulation, ntime_parts: int, nfreq_parts: int):
    """Partition plan of the observation (see :func:`arl_mpi.io.store.plan_partitions`)."""
    return plan_partitions(sim.spec.times, sim.spec.frequency.size, ntime_parts, nfreq_parts)


def write_simulated_partition(store: str | Path, sim: Simulation, pid: int, plan) -> PartitionInfo:
    """Simulate partition ``pid`` of ``plan`` and write it into ``store`` (any process)."""
    tb, fb, tt, cs = plan[pid]
    vis = simulate_partition(sim, tt, cs, tb, fb)
    return write_partition(store, vis, pid=pid, time_block=tb, freq_block=fb, chan_start=cs.start)
