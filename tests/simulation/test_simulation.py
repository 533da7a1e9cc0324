"""Simulated observations: uvw against astropy, parallel writing, FITS WCS, data-model checks."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import GCRS, ITRS, CartesianRepresentation, SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from helpers import MPIEXEC, PYTHON, REPO, small_visibility

from arl_mpi.constants import SPEED_OF_LIGHT
from arl_mpi.io.fits import read_fits, write_fits
from arl_mpi.io.store import open_store, read_partition
from arl_mpi.models import Image, ModelError, Visibility, image_wcs
from arl_mpi.simulation.builtin import SimulationSettings, build
from arl_mpi.simulation.observation import antenna_uvw, configuration_from_layout, hour_angle_times


def test_uvw_matches_astropy_to_1mm():
    """Baselines rotated ITRS->GCRS by astropy's frame machinery and projected on the
    phase-centre basis agree with our erfa-matrix uvw to < 1 mm (VLA-B, 11 km baselines)."""
    cfg = configuration_from_layout("VLAB")
    pc = SkyCoord(ra=150.0 * u.deg, dec=20.0 * u.deg)
    times = hour_angle_times(pc, cfg.location, np.linspace(-3, 3, 5), "2026-05-01")
    ours = antenna_uvw(cfg.xyz, times, pc)  # [t, ant, 3]
    rel = cfg.xyz - cfg.xyz.mean(axis=0)
    s = pc.icrs.cartesian.xyz.value  # unit vector to the source (ICRS ~ GCRS axes)
    east = np.cross([0.0, 0.0, 1.0], s)
    east /= np.linalg.norm(east)
    north = np.cross(s, east)
    for k, t in enumerate(times):
        obstime = Time(t / 86400.0, format="mjd", scale="utc")
        rep = CartesianRepresentation(rel.T * u.m)
        g = ITRS(rep, obstime=obstime).transform_to(GCRS(obstime=obstime)).cartesian.xyz.to_value(u.m).T
        # GCRS positions of points 10 km from the geocentre include no aberration for the
        # vector part; subtract the transformed origin to get pure rotation
        o = ITRS(CartesianRepresentation([0, 0, 0] * u.m), obstime=obstime).transform_to(GCRS(obstime=obstime))
        g = g - o.cartesian.xyz.to_value(u.m)
        ref = np.stack([g @ east, g @ north, g @ s], axis=1)
        assert np.max(np.abs(ours[k] - ref)) < 1e-3, np.max(np.abs(ours[k] - ref))
    # w of a baseline equals its geometric delay path: |uvw| = |baseline| (rotation only)
    b = ours[:, 5] - ours[:, 0]
    assert np.allclose(np.linalg.norm(b, axis=1), np.linalg.norm(rel[5] - rel[0]), atol=1e-6)


def test_hour_angle_zero_means_transit():
    cfg = configuration_from_layout("LOW-CORE", rmax_m=200)
    pc = SkyCoord(ra=15.0 * u.deg, dec=-45.0 * u.deg)
    t = hour_angle_times(pc, cfg.location, np.array([0.0]), "2026-03-21")[0]
    lst = Time(t / 86400, format="mjd", scale="utc").sidereal_time("apparent", longitude=cfg.location.lon)
    # within the ~0.3 deg of precession between ICRS and the apparent equinox of date
    assert abs((lst.deg - 15.0 + 180) % 360 - 180) < 0.5


def test_simulated_sources_in_data():
    """The visibilities of the simulated sky equal a direct sum over the components."""
    sim = build(SimulationSettings(rmax_m=150, ntimes=2, nchan=2, noise_jy=0.0, nsources=3))
    from arl_mpi.simulation.builtin import simulate_partition

    vis = simulate_partition(sim, sim.spec.times, slice(None), 0, 0)
    pc = sim.spec.phase_centre
    expected = np.zeros(vis.vis.shape[:2], complex)
    for c in sim.components:
        off = pc.spherical_offsets_to(c.direction)
        lon, lat = off[0].rad, off[1].rad
        # direction cosines from the tangent-plane geometry (SIN projection)
        d = c.direction.icrs
        l = np.cos(d.dec.rad) * np.sin(d.ra.rad - pc.ra.rad)
        m = (np.sin(d.dec.rad) * np.cos(pc.dec.rad)
             - np.cos(d.dec.rad) * np.sin(pc.dec.rad) * np.cos(d.ra.rad - pc.ra.rad))
        n = np.sqrt(1 - l * l - m * m)
        assert abs(lon) < 0.1 and abs(lat) < 0.1
        uvw = vis.uvw[:, :, None] * vis.frequency[None, None, :] / SPEED_OF_LIGHT
        phase = 2j * np.pi * (uvw[:, 0] * l + uvw[:, 1] * m + uvw[:, 2] * (n - 1))  # MS convention
        expected += c.flux_at(vis.frequency)[None, :] * np.exp(phase)
    np.testing.assert_allclose(vis.vis[:, :, 0], expected, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(vis.vis[:, :, 1], expected, atol=1e-5 * np.abs(expected).max())


@pytest.mark.mpi
def test_parallel_simulation_matches_serial(tmp_path, env_cli):
    args = ["--time-partitions", "3", "--freq-partitions", "2", "--sim-rmax-m", "200", "--sim-ntimes", "6"]
    r = subprocess.run([PYTHON, "-m", "arl_mpi.simulate", str(tmp_path / "serial.store"), *args],
                       capture_output=True, text=True, env=env_cli, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([MPIEXEC, "-n", "3", PYTHON, "-m", "arl_mpi.simulate", str(tmp_path / "mpi.store"), *args],
                       capture_output=True, text=True, env=env_cli, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    a, b = open_store(tmp_path / "serial.store"), open_store(tmp_path / "mpi.store")
    assert len(a.partitions) == len(b.partitions) == 6
    for pid in range(6):
        va, vb = read_partition(a, pid), read_partition(b, pid)
        np.testing.assert_array_equal(va.vis, vb.vis)
        np.testing.assert_array_equal(va.uvw, vb.uvw)


def test_fits_wcs_round_trip(tmp_path):
    pc = SkyCoord(ra=30.0 * u.deg, dec=-30.0 * u.deg)
    cell = np.deg2rad(10 / 3600)
    data = np.zeros((1, 1, 64, 128))
    data[0, 0, 40, 20] = 1.0
    img = Image(data=data, wcs=image_wcs(pc, 128, 64, cell, 1.4e9, 1e6), beam=(0.01, 0.005, 30.0))
    write_fits(tmp_path / "x.fits", img)
    back = read_fits(tmp_path / "x.fits")
    np.testing.assert_array_equal(back.data, data)
    hdr = fits.getheader(tmp_path / "x.fits")
    assert (hdr["CTYPE1"], hdr["CTYPE2"], hdr["CTYPE3"], hdr["CTYPE4"]) == ("RA---SIN", "DEC--SIN", "FREQ", "STOKES")
    assert hdr["BMAJ"] == 0.01 and hdr["BPA"] == 30.0 and hdr["BUNIT"] == "JY/BEAM"
    assert hdr["CDELT1"] < 0 and hdr["CRPIX1"] == 65 and hdr["CRPIX2"] == 33
    # pixel (x=20, y=40) is at l = -(20-64) cell (east), m = (40-32) cell (north)
    w = WCS(hdr).celestial
    sky = w.pixel_to_world(20, 40)
    off = pc.spherical_offsets_to(sky)
    assert off[0].to_value(u.arcsec) == pytest.approx(440, abs=0.5)
    assert off[1].to_value(u.arcsec) == pytest.approx(80, abs=0.5)
    assert not list(tmp_path.glob(".*tmp*"))


def test_models_validate_shapes():
    v = small_visibility()
    with pytest.raises(ModelError, match=r"Visibility.weight: expected \(50, 3, 2\)"):
        Visibility(**{**v.__dict__, "weight": v.weight[:, :2]})
    with pytest.raises(ModelError, match="polarisations: unknown set"):
        Visibility(**{**v.__dict__, "polarisations": ["XX", "QQ"]})
    with pytest.raises(ModelError, match="frequency: must be positive"):
        Visibility(**{**v.__dict__, "frequency": -v.frequency})


def test_thermal_noise_statistics():
    from arl_mpi.simulation.observation import add_noise

    v = small_visibility(nrow=4000, nchan=4)
    v.vis[...] = 0
    add_noise(v, 0.3, seed=5)
    assert np.std(v.vis.real) == pytest.approx(0.3, rel=0.02)
    assert np.std(v.vis.imag) == pytest.approx(0.3, rel=0.02)
    assert abs(np.mean(v.vis)) < 0.01
    np.testing.assert_allclose(v.weight, 1 / 0.09, rtol=1e-6)  # weight = 1/variance (MS convention)


def test_parallel_hands_one_definition():
    """XX/YY/RR/LL (any case) and Stokes I carry an unpolarised source; cross hands and Q/U/V do not."""
    from arl_mpi.models import POLARISATION_FRAMES, is_parallel_hand, parallel_hand_mask
    from arl_mpi.simulation.observation import stokes_i_to_correlations

    assert parallel_hand_mask(POLARISATION_FRAMES["linear"]).tolist() == [True, False, False, True]
    assert parallel_hand_mask(POLARISATION_FRAMES["circular"]).tolist() == [True, False, False, True]
    assert parallel_hand_mask(POLARISATION_FRAMES["stokesIQUV"]).tolist() == [True, False, False, False]
    assert parallel_hand_mask(["I"], include_stokes_i=False).tolist() == [False]
    assert is_parallel_hand("ll") and not is_parallel_hand("XY") and not is_parallel_hand("ZZ")
    np.testing.assert_array_equal(stokes_i_to_correlations(["RR", "RL", "LR", "LL"]), [1.0, 0.0, 0.0, 1.0])


def test_simulated_store_writers_agree(tmp_path):
    """The one writer gives identical stores serially, in a process pool and through a mapper
    that ships the (pickled) partition writer elsewhere."""
    import pickle

    from arl_mpi.errors import ConfigError
    from arl_mpi.simulation.writer import write_simulated_store

    s = SimulationSettings(rmax_m=150, ntimes=4, nchan=2, nsources=2, extra={"gains": {"seed": 3}})
    serial = write_simulated_store(tmp_path / "serial.store", s, 2, 2)
    pooled = write_simulated_store(tmp_path / "pool.store", s, 2, 2, processes=2)
    shipped = []

    def mapper(write, pids):
        remote = pickle.loads(pickle.dumps(write))
        assert remote._sim is None  # settings travel, visibilities do not
        shipped.extend(pids)
        return [remote(pid) for pid in pids]

    mapped = write_simulated_store(tmp_path / "mapped.store", s, 2, 2, map_partitions=mapper)
    assert shipped == [0, 1, 2, 3]
    assert len(serial.partitions) == len(pooled.partitions) == len(mapped.partitions) == 4
    assert serial.meta.provenance == mapped.meta.provenance == pooled.meta.provenance
    for pid in range(4):
        ref = read_partition(serial, pid)
        assert np.abs(ref.vis).max() > 0
        for other in (pooled, mapped):
            np.testing.assert_array_equal(read_partition(other, pid).vis, ref.vis)
    with pytest.raises(ConfigError, match="processes must be >= 1"):
        write_simulated_store(tmp_path / "bad.store", s, 2, 2, processes=0)
