"""Store schema 2: partitions open in xarray (h5netcdf) with MSv4's dimension names and
coordinates, and read back exactly; a version-1 store (written here with plain h5py, as
docs/hdf5-store.md describes version 1) still reads."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from helpers import small_configuration, small_meta, small_visibility

from arl_mpi.io.store import SCHEMA_VERSION, grid_baselines, open_store, read_partition, write_store
from arl_mpi.models import Visibility

xr = pytest.importorskip("xarray", reason="xarray (arl_mpi[xarray]) not installed")
pytest.importorskip("h5netcdf", reason="h5netcdf (arl_mpi[xarray]) not installed")

NTIME, NCHAN, POLS = 6, 5, ["XX", "XY", "YX", "YY"]


def regular_visibility() -> Visibility:
    """6 times x 15 baselines (6 antennas, time-major), 5 channels, 4 correlations."""
    rng = np.random.default_rng(4)
    a1, a2 = np.triu_indices(6, 1)
    nbl = a1.size
    nrow = NTIME * nbl
    shape = (nrow, NCHAN, len(POLS))
    return Visibility(
        time=np.repeat(5e9 + 10.0 * np.arange(NTIME), nbl), uvw=rng.normal(0, 300, (nrow, 3)),
        antenna1=np.tile(a1, NTIME).astype(np.int32), antenna2=np.tile(a2, NTIME).astype(np.int32),
        vis=(rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64),
        weight=rng.uniform(0.5, 1, shape).astype(np.float32), flags=rng.uniform(size=shape) < 0.1,
        frequency=np.linspace(1e8, 1.1e8, NCHAN), channel_width=np.full(NCHAN, 2e6), polarisations=POLS,
        phase_centre=SkyCoord(ra=15 * u.deg, dec=-45 * u.deg), integration_time=np.full(nrow, 10.0))


def test_partition_opens_in_xarray_with_msv4_dims(tmp_path):
    vis = regular_visibility()
    assert grid_baselines(vis) == 15
    idx = write_store(tmp_path / "s", small_meta(vis), vis, ntime_parts=2, nfreq_parts=2)
    assert idx.schema_version == SCHEMA_VERSION == 2
    info = idx.partitions[3]  # time block 1, frequency block 1
    cs = slice(info.chan_start, info.chan_stop)
    rows = vis.time >= np.unique(vis.time)[NTIME // 2]
    with xr.open_dataset(idx.partition_path(3), engine="h5netcdf") as ds:
        assert ds["vis"].dims == ("time", "baseline_id", "frequency", "polarization")
        assert ds["uvw"].dims == ("time", "baseline_id", "uvw_label")
        assert ds["integration_time"].dims == ("time", "baseline_id")
        np.testing.assert_array_equal(ds["time"].values, np.unique(vis.time[rows]))
        np.testing.assert_array_equal(ds["frequency"].values, vis.frequency[cs])
        assert list(ds["polarization"].values) == POLS and list(ds["uvw_label"].values) == ["u", "v", "w"]
        np.testing.assert_array_equal(ds["antenna1"].values, vis.antenna1[:15])
        assert {"antenna1", "antenna2"} <= set(ds["vis"].coords)
        np.testing.assert_array_equal(ds["vis"].values.reshape(-1, info.chan_stop - info.chan_start, 4),
                                      vis.vis[rows][:, cs])
        # labelled selection: one correlation, one baseline, one time
        yy = ds["vis"].sel(polarization="YY", time=vis.time[rows][0]).isel(baseline_id=7)
        np.testing.assert_array_equal(yy.values, vis.vis[rows][7, cs, 3])
        np.testing.assert_array_equal(ds["flags"].values.reshape(-1, yy.size, 4), vis.flags[rows][:, cs])
        assert ds["uvw"].sel(uvw_label="w").shape == (NTIME // 2, 15)
    back = read_partition(idx, 3)  # and the store reads it back exactly, rows in the same order
    for name in ("time", "uvw", "antenna1", "antenna2", "integration_time"):
        np.testing.assert_array_equal(getattr(back, name), getattr(vis, name)[rows])
    for name in ("vis", "weight", "flags"):
        got = getattr(back, name)
        assert got.dtype == getattr(vis, name).dtype
        np.testing.assert_array_equal(got, getattr(vis, name)[rows][:, cs])


def test_irregular_partition_has_a_row_axis(tmp_path):
    vis = small_visibility(nrow=60, nchan=3)  # random times and baselines: no (time, baseline) grid
    assert grid_baselines(vis) is None
    idx = write_store(tmp_path / "s", small_meta(vis), vis)
    with xr.open_dataset(idx.partition_path(0), engine="h5netcdf") as ds:
        assert ds["vis"].dims == ("row", "frequency", "polarization")
        assert ds["time"].dims == ("row",) and ds["uvw"].dims == ("row", "uvw_label")
        np.testing.assert_array_equal(ds["time"].values, vis.time)
        np.testing.assert_array_equal(ds["frequency"].values, vis.frequency)
        np.testing.assert_array_equal(ds["vis"].values, vis.vis)
    np.testing.assert_array_equal(read_partition(idx, 0).vis, vis.vis)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_v1_store(path, vis: Visibility) -> None:
    """A schema-1 store as docs/hdf5-store.md (version 1) lays it out: one partition, row axis."""
    cfg = small_configuration()
    (path / "partitions").mkdir(parents=True)
    part = path / "partitions" / "t0000-f0000.h5"
    with h5py.File(part, "w") as f:
        f.attrs.update({"format": "arl_mpi.visstore.partition", "schema_version": 1, "pid": 0, "time_block": 0,
                        "freq_block": 0, "chan_start": 0, "chan_stop": vis.nchan,
                        "polarisations": json.dumps(list(vis.polarisations))})
        for name in ("time", "integration_time", "uvw", "antenna1", "antenna2", "vis", "weight", "flags"):
            f.create_dataset(name, data=getattr(vis, name), chunks=True, fletcher32=True)
    with h5py.File(path / "index.h5", "w") as f:
        f.attrs.update({"format": "arl_mpi.visstore", "schema_version": 1, "created": "2025-01-01T00:00:00Z",
                        "arl_mpi_version": "0.1.0", "telescope": "TEST", "provenance": "{}",
                        "phase_centre_ra_deg": 15.0, "phase_centre_dec_deg": -45.0, "phase_centre_frame": "ICRS"})
        f["frequency"] = vis.frequency
        f["channel_width"] = vis.channel_width
        f["polarisations"] = np.array(vis.polarisations, dtype="S4")
        g = f.create_group("antennas")
        g.attrs.update({"configuration": "TEST", "site_lon_deg": 116.7, "site_lat_deg": -26.7, "site_height_m": 377.0})
        g["names"] = np.array(cfg.names, dtype="S")
        g["xyz"] = cfg.xyz
        g["diameter"] = cfg.diameter
        dt = np.dtype([("pid", "<i4"), ("filename", "S32"), ("time_block", "<i4"), ("freq_block", "<i4"),
                       ("chan_start", "<i4"), ("chan_stop", "<i4"), ("nrow", "<i8"), ("time_min", "<f8"),
                       ("time_max", "<f8"), ("sha256", "S64")])
        f["partitions"] = np.array([(0, b"t0000-f0000.h5", 0, 0, 0, vis.nchan, vis.nrow, vis.time.min(),
                                     vis.time.max(), _sha(part).encode())], dtype=dt)


def test_version_1_store_still_reads(tmp_path):
    vis = small_visibility(nrow=40, nchan=3)
    write_v1_store(tmp_path / "v1.store", vis)
    idx = open_store(tmp_path / "v1.store")
    assert idx.schema_version == 1
    back = read_partition(idx, 0, verify=True)
    for name in ("time", "uvw", "antenna1", "antenna2", "vis", "weight", "flags", "integration_time"):
        np.testing.assert_array_equal(getattr(back, name), getattr(vis, name))
    np.testing.assert_array_equal(back.frequency, vis.frequency)


def test_grid_chunks_hold_at_most_4096_rows(tmp_path):
    """A grid with more baselines than a chunk's 4096 rows is chunked along baselines too."""
    nbl, nt = 5000, 2
    a1 = np.arange(nbl, dtype=np.int32) % 6
    shape = (nt * nbl, 1, 1)
    vis = Visibility(time=np.repeat([5e9, 5e9 + 10], nbl), uvw=np.zeros((nt * nbl, 3)), antenna1=np.tile(a1, nt),
                     antenna2=np.tile((a1 + 1) % 6, nt), vis=np.ones(shape, np.complex64),
                     weight=np.ones(shape, np.float32), flags=np.zeros(shape, bool), frequency=np.array([1e8]),
                     channel_width=np.array([1e6]), polarisations=["I"],
                     phase_centre=SkyCoord(ra=15 * u.deg, dec=-45 * u.deg), integration_time=np.full(nt * nbl, 10.0))
    idx = write_store(tmp_path / "s", small_meta(vis), vis)
    with h5py.File(idx.partition_path(0), "r") as f:
        assert f.attrs["layout"] == "time_baseline"
        assert f["vis"].shape == (nt, nbl, 1, 1) and f["vis"].chunks == (1, 4096, 1, 1)
        assert f["uvw"].chunks == (1, 4096, 3) and f["vis"].fletcher32
    np.testing.assert_array_equal(read_partition(idx, 0).antenna2, vis.antenna2)
