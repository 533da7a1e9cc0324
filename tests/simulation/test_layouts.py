"""Tests for the shipped real antenna layouts (arl_mpi.simulation.layouts)."""

import itertools

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation

from arl_mpi.simulation.layouts import (
    Layout,
    available_layouts,
    enu_to_itrf,
    geodetic_to_itrf,
    itrf_to_enu,
    itrf_to_geodetic,
    read_layout,
)

EXPECTED_COUNTS = {
    "LOW": 512,
    "LOW-CORE": 224,
    "MID": 197,
    "MEERKAT": 64,
    "VLAA": 27,
    "VLAB": 27,
    "VLAC": 27,
    "VLAD": 27,
    "LOFAR-CORE": 24,
}

# |up| bound relative to the documented site (m); LOW's arms reach ~74 km so Earth
# curvature (r^2 / 2R) is ~100 m there; everything is < 1 km.
MAX_UP = 1000.0


def max_baseline(xyz):
    d = xyz[:, None, :] - xyz[None, :, :]
    return float(np.sqrt((d**2).sum(-1)).max())


def test_available_layouts():
    names = available_layouts()
    assert set(EXPECTED_COUNTS) == set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_layout_loads_and_counts(name):
    lay = read_layout(name)
    assert isinstance(lay, Layout)
    n = EXPECTED_COUNTS[name]
    assert lay.name == name
    assert len(lay.names) == n == lay.nant
    assert len(set(lay.names)) == n
    assert lay.xyz.shape == (n, 3) and lay.xyz.dtype == np.float64
    assert lay.diameter.shape == (n,) and np.all(lay.diameter > 0)
    assert lay.source
    # ITRF magnitudes: on the Earth's surface
    r = np.linalg.norm(lay.xyz, axis=1)
    assert np.all((r > 6.35e6) & (r < 6.39e6))


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_enu_heights_and_site(name):
    lay = read_layout(name)
    enu = itrf_to_enu(lay.xyz, lay.site_lon_deg, lay.site_lat_deg, lay.site_height_m)
    assert np.all(np.abs(enu[:, 2]) < MAX_UP)
    c = lay.xyz.mean(axis=0)
    loc = EarthLocation.from_geocentric(c[0], c[1], c[2], unit=u.m)
    assert abs(loc.lat.deg - lay.site_lat_deg) < 0.1
    dlon = (loc.lon.deg - lay.site_lon_deg + 180.0) % 360.0 - 180.0
    assert abs(dlon) < 0.1


def test_own_geodetic_matches_astropy():
    lay = read_layout("MID")
    lon, lat, h = itrf_to_geodetic(lay.xyz)
    loc = EarthLocation.from_geocentric(*lay.xyz.T, unit=u.m)
    np.testing.assert_allclose(lon, loc.lon.deg, atol=1e-9)
    np.testing.assert_allclose(lat, loc.lat.deg, atol=1e-9)
    np.testing.assert_allclose(h, loc.height.to_value(u.m), atol=1e-4)
    back = geodetic_to_itrf(lon, lat, h)
    np.testing.assert_allclose(back, lay.xyz, atol=1e-6)


def test_site_agrees_with_astropy():
    lay = read_layout("VLAA")
    loc = EarthLocation.from_geodetic(lay.site_lon_deg, lay.site_lat_deg, lay.site_height_m)
    ref = np.array([q.to_value(u.m) for q in loc.geocentric])
    np.testing.assert_allclose(lay.site_xyz, ref, atol=1e-6)


@pytest.mark.parametrize(
    "name, expected_m", [("VLAA", 36.4e3), ("VLAB", 11.1e3), ("VLAC", 3.4e3), ("VLAD", 1.03e3)]
)
def test_vla_max_baseline(name, expected_m):
    bmax = max_baseline(read_layout(name).xyz)
    assert abs(bmax - expected_m) / expected_m < 0.1, bmax


def test_meerkat_is_subset_of_mid():
    mid = read_layout("MID")
    mk = read_layout("MEERKAT")
    idx = [mid.names.index(n) for n in mk.names]
    np.testing.assert_array_equal(mid.xyz[idx], mk.xyz)
    assert np.all(mk.diameter == 13.5)
    assert int(np.sum(mid.diameter == 15.0)) == 133


def test_low_core_is_subset_of_low_and_compact():
    low = read_layout("LOW")
    core = read_layout("LOW-CORE")
    assert set(core.names) <= set(low.names)
    assert max_baseline(core.xyz) < 1.2e3
    assert max_baseline(low.xyz) > 60e3
    assert np.all(core.diameter == 38.0)


@pytest.mark.parametrize("name", ["vlaa", "VlaA", "vla-a", "ska1-mid", "low_core", " LOW-CORE "])
def test_case_insensitive_and_aliases(name):
    assert read_layout(name).nant > 0


def test_unknown_name_lists_available():
    with pytest.raises(ValueError) as exc:
        read_layout("NOT-A-TELESCOPE")
    msg = str(exc.value)
    for n in available_layouts():
        assert n in msg


def test_rmax():
    full = read_layout("VLAA")
    small = read_layout("VLAA", rmax_m=2000.0)
    assert 0 < small.nant < full.nant
    r = np.linalg.norm(small.xyz - small.site_xyz, axis=1)
    assert np.all(r <= 2000.0)
    assert len(small.names) == small.xyz.shape[0] == small.diameter.shape[0]
    assert read_layout("LOW", rmax_m=1e6).nant == 512
    assert read_layout("LOW", rmax_m=1.0).nant == 0


@pytest.mark.parametrize(
    "lon, lat, h", [(21.44, -30.71, 1050.0), (-107.6, 34.08, 2120.0), (0, 89.9, 0)]
)
def test_enu_itrf_round_trip(lon, lat, h):
    rng = np.random.default_rng(1)
    enu = rng.uniform(-50e3, 50e3, size=(100, 3))
    xyz = enu_to_itrf(enu, lon, lat, h)
    np.testing.assert_allclose(itrf_to_enu(xyz, lon, lat, h), enu, rtol=0, atol=1e-6)
    lay = read_layout("MID")
    e = itrf_to_enu(lay.xyz, lon, lat, h)
    np.testing.assert_allclose(enu_to_itrf(e, lon, lat, h), lay.xyz, rtol=0, atol=1e-6)


def test_enu_axes():
    lon, lat, h = 10.0, 45.0, 100.0
    origin = geodetic_to_itrf(lon, lat, h)
    up = itrf_to_enu(geodetic_to_itrf(lon, lat, h + 10.0)[None], lon, lat, h)[0]
    np.testing.assert_allclose(up, [0, 0, 10.0], atol=1e-6)
    north = itrf_to_enu(geodetic_to_itrf(lon, lat + 1e-4, h)[None], lon, lat, h)[0]
    assert north[1] > 11.0 and abs(north[0]) < 1e-6
    east = itrf_to_enu(geodetic_to_itrf(lon + 1e-4, lat, h)[None], lon, lat, h)[0]
    assert east[0] > 7.0 and abs(east[1]) < 1e-4  # parallel curves slightly
    assert np.allclose(itrf_to_enu(origin[None], lon, lat, h), 0, atol=1e-6)


def test_frozen():
    lay = read_layout("VLAD")
    with pytest.raises(AttributeError):
        lay.name = "x"
    assert list(itertools.islice(lay.names, 1))
