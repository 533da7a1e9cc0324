"""MSv4 processing sets (xradio): the real MWA MS converted by xradio's own converter ingests
to the same data and images as the MS itself; a store exported as a processing set reads back
identically (through xradio); ``python -m arl_mpi.ingest ps.zarr STORE`` and ``--vis
ps.zarr``; a one-line error naming the extra when xradio is missing."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from helpers import PYTHON, REPO

from arl_mpi import graphs
from arl_mpi.errors import InputError
from arl_mpi.graphs import shard_tasks as tasks
from arl_mpi.ingest import ensure_store_from_input, ingest
from arl_mpi.io.store import open_store, read_partition
from arl_mpi.testing import realdata as testdata

pytest.importorskip("xradio.measurement_set", reason="xradio (arl_mpi[msv4]) not installed")
pytest.importorskip("casacore.tables", reason="python-casacore (arl_mpi[ms]) not installed")

FIELDS = ("time", "uvw", "antenna1", "antenna2", "vis", "weight", "flags", "integration_time")


@pytest.fixture(scope="module")
def mwa(tmp_path_factory):
    """The MWA MS, its xradio conversion, and both ingested (2 frequency partitions)."""
    from xradio.measurement_set import convert_msv2_to_processing_set

    try:
        ms = testdata.fetch_pyuvdata_file(testdata.MWA_MS)
    except InputError as e:
        pytest.skip(f"test data unavailable (offline?): {e}")
    tmp = tmp_path_factory.mktemp("msv4")
    ps = tmp / "mwa.ps.zarr"
    convert_msv2_to_processing_set(in_file=str(ms), out_file=str(ps), persistence_mode="w-")
    a = ingest(ms, tmp / "ms.store", time_partitions=1, freq_partitions=2)
    b = ingest(ps, tmp / "ps.store", time_partitions=1, freq_partitions=2)
    return tmp, ms, ps, a, b


def rows(index) -> dict[str, np.ndarray]:
    """Every partition's rows, channels joined, rows sorted by (time, antenna1, antenna2)."""
    parts = [read_partition(index, p.pid) for p in index.partitions]
    out = {}
    for name in FIELDS:
        if name in ("vis", "weight", "flags"):
            blocks = [[getattr(v, name) for v, p in zip(parts, index.partitions, strict=True) if p.time_block == tb]
                      for tb in range(index.ntime_blocks)]
            out[name] = np.concatenate([np.concatenate(b, axis=1) for b in blocks])
        else:
            out[name] = np.concatenate([getattr(v, name) for v, p in zip(parts, index.partitions, strict=True)
                                        if p.freq_block == 0])
    order = np.lexsort((out["antenna2"], out["antenna1"], out["time"]))
    return {k: v[order] for k, v in out.items()}


def dirty(index, npix=256):
    cell = np.deg2rad(3 / 60)
    grid = graphs.GridSpec(npix_x=npix, npix_y=npix, cell=cell, epsilon=1e-6, double=True,
                           nchan_total=int(index.meta.frequency.size))
    shard = tasks.load_shard(str(index.path), [list(range(len(index.partitions)))])
    return graphs.normalise(tasks.invert_shard(shard, grid))[0]


def test_xradio_conversion_ingests_like_the_ms(mwa):
    _, _, _, a, b = mwa
    ra, rb = rows(a), rows(b)
    assert ra["time"].size == rb["time"].size > 7000
    for name in ("uvw", "flags", "weight", "vis", "time"):
        np.testing.assert_array_equal(rb[name], ra[name], err_msg=name)
    np.testing.assert_array_equal(b.meta.frequency, a.meta.frequency)
    np.testing.assert_array_equal(b.meta.channel_width, a.meta.channel_width)
    assert b.meta.polarisations == a.meta.polarisations
    # xradio keeps only the antennas with data (121 of the MS's 128): same antennas by name and position
    na, nb = np.array(a.meta.configuration.names), np.array(b.meta.configuration.names)
    for k in ("antenna1", "antenna2"):
        np.testing.assert_array_equal(nb[rb[k]], na[ra[k]])
    ia = [list(na).index(n) for n in nb]
    np.testing.assert_array_equal(b.meta.configuration.xyz, a.meta.configuration.xyz[ia])
    assert a.meta.phase_centre.separation(b.meta.phase_centre).arcsec < 1e-6
    ia, ib = dirty(a), dirty(b)
    assert np.max(np.abs(ib - ia)) <= 1e-6 * np.max(np.abs(ia))


def test_store_exported_as_processing_set_reads_back(mwa):
    from arl_mpi.io.msv4 import write_processing_set

    tmp, _, _, a, _ = mwa
    out = write_processing_set(a, tmp / "export.ps.zarr")
    from xradio.measurement_set import open_processing_set

    ps = open_processing_set(str(out))  # xradio itself opens it
    (name,) = list(ps.children)
    assert ps[name].ds["VISIBILITY"].dims == ("time", "baseline_id", "frequency", "polarization")
    back = ingest(out, tmp / "export.store", time_partitions=1)
    ra, rc = rows(a), rows(back)
    for name in ("uvw", "flags", "weight", "antenna1", "antenna2", "vis", "time", "integration_time"):
        np.testing.assert_array_equal(rc[name], ra[name], err_msg=name)
    np.testing.assert_array_equal(back.meta.frequency, a.meta.frequency)
    with pytest.raises(InputError, match="already exists"):
        write_processing_set(a, out)


def test_ingest_cli_and_vis(mwa, env_cli):
    tmp, _, ps, _, b = mwa
    out = tmp / "cli.store"
    r = subprocess.run([PYTHON, "-m", "arl_mpi.ingest", str(ps), str(out), "--time-partitions", "1"],
                       capture_output=True, text=True, env=env_cli, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(rows(open_store(out))["vis"], rows(b)["vis"])
    store = ensure_store_from_input(ps, time_partitions=1)  # what --vis ps.zarr does
    assert open_store(store).meta.provenance["format"] == "MSv4"
    assert ensure_store_from_input(ps, time_partitions=1) == store  # reused while unchanged


def test_missing_xradio_is_one_line(mwa, monkeypatch):
    import sys

    from arl_mpi.io.ingest import open_reader

    _, _, ps, _, _ = mwa
    monkeypatch.setitem(sys.modules, "xradio.measurement_set", None)  # as if not installed
    with pytest.raises(InputError) as e:
        open_reader(ps)
    assert "pip install 'arl_mpi[msv4]'" in str(e.value) and "\n" not in str(e.value)
