"""Ingest of an MS / UVFITS file with every partition read and written by a Dask worker.

The parallel store must hold exactly what the serial one holds (and what the input holds);
an interrupted ingest leaves nothing under the final name; progress lines are rate-limited
and silent at WARNING.
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from arl_mpi.errors import InputError
from arl_mpi.io import ingest as ingest_mod
from arl_mpi.io.ingest import InputSpec, PartitionIngester, ensure_store_from_input, open_reader, plan_ingest
from arl_mpi.io.store import open_store, read_partition
from arl_mpi.testing import realdata as testdata

FIELDS = ("time", "uvw", "antenna1", "antenna2", "vis", "weight", "flags", "integration_time")


def fetch(name: str):
    try:
        return testdata.fetch_pyuvdata_file(name)
    except InputError as e:
        pytest.skip(f"test data unavailable (offline?): {e}")


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cl:
        with distributed.Client(cl) as c:
            yield c


def copy_input(src, tmp_path):
    """A private copy (the store is written beside its input)."""
    import shutil

    dst = tmp_path / src.name
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    return dst


def store_contents(path):
    idx = open_store(path)
    parts = {p.pid: read_partition(idx, p.pid) for p in idx.partitions}
    table = [(p.pid, p.time_block, p.freq_block, p.chan_start, p.chan_stop, p.nrow) for p in idx.partitions]
    return idx, table, parts


def assert_same_store(a, b):
    ia, ta, pa = store_contents(a)
    ib, tb, pb = store_contents(b)
    assert ta == tb
    np.testing.assert_array_equal(ia.meta.frequency, ib.meta.frequency)
    np.testing.assert_array_equal(ia.meta.channel_width, ib.meta.channel_width)
    assert ia.meta.polarisations == ib.meta.polarisations
    for pid in pa:
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(pa[pid], f), getattr(pb[pid], f), err_msg=f"partition {pid} {f}")
        np.testing.assert_array_equal(pa[pid].frequency, pb[pid].frequency)
    return ia


@pytest.mark.parametrize("name", [testdata.MWA_MS, testdata.VLA_UVFITS])
def test_parallel_ingest_equals_serial(tmp_path, client, name):
    if name.endswith(".ms"):
        pytest.importorskip("casacore.tables", reason="python-casacore (arl_mpi[ms]) not installed")
    src = fetch(name)
    (tmp_path / "s").mkdir()
    (tmp_path / "p").mkdir()
    serial_in, par_in = copy_input(src, tmp_path / "s"), copy_input(src, tmp_path / "p")
    nt = 1 if name.endswith(".ms") else 3  # the MWA snapshot has a single integration
    a = ensure_store_from_input(serial_in, nt, 2)
    b = ensure_store_from_input(par_in, nt, 2, map_partitions=ingest_mod_map(client))
    idx = assert_same_store(a, b)
    assert len(idx.partitions) == 2 * nt
    assert idx.meta.provenance["fingerprint"] == open_store(b).meta.provenance["fingerprint"]
    if name.endswith(".ms"):  # and both hold what the MS holds, channel by channel
        import casacore.tables as tables

        with tables.table(str(src), ack=False) as t:
            data, uvw = t.getcol("DATA"), t.getcol("UVW")
            a1, a2, tm = t.getcol("ANTENNA1"), t.getcol("ANTENNA2"), t.getcol("TIME")
        order = np.lexsort((a2, a1, tm))
        _, _, parts = store_contents(b)
        got = np.concatenate([parts[0].vis, parts[1].vis], axis=1)  # two frequency partitions
        np.testing.assert_array_equal(got, data[order].astype(np.complex64))
        np.testing.assert_array_equal(parts[1].uvw, uvw[order])
        assert parts[0].vis.shape[1] == 5 and parts[1].vis.shape[1] == 5


def ingest_mod_map(client):
    from arl_mpi.graphs.ingest_graph import ingest_on_workers

    return ingest_on_workers(client)


def test_tasks_pickle_small(tmp_path):
    """What travels to a worker is the input's name and its row ranges, never the data."""
    src = fetch(testdata.VLA_UVFITS)
    tasks = plan_ingest(open_reader(src), 2, 1)
    ing = PartitionIngester(InputSpec(str(src)), str(tmp_path / "x"))
    assert len(pickle.dumps(ing)) < 1000
    assert all(len(pickle.dumps(t)) < 1500 for t in tasks)  # rows as runs: time-ordered file, one run
    assert [len(t.runs) for t in tasks] == [1, 1]
    np.testing.assert_array_equal(np.concatenate([t.rows for t in tasks]), open_reader(src).rows)


def test_interrupted_ingest_leaves_no_store(tmp_path):
    src = copy_input(fetch(testdata.VLA_UVFITS), tmp_path)

    def dies_after_one(ingester, tasks):
        yield ingester(tasks[0])
        raise KeyboardInterrupt  # e.g. Ctrl-C or a worker lost mid-way

    with pytest.raises(KeyboardInterrupt):
        ensure_store_from_input(src, 3, 1, map_partitions=dies_after_one)
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]  # no store, no temporary left
    store = ensure_store_from_input(src, 3, 1)  # and the next run ingests from scratch
    assert len(open_store(store).partitions) == 3


def test_ingest_progress_lines(tmp_path, monkeypatch, caplog):
    """With a 0 s interval every block of rows logs a line; at WARNING nothing is logged."""
    from arl_mpi.io import uvfits

    src = copy_input(fetch(testdata.VLA_UVFITS), tmp_path)
    monkeypatch.setattr(uvfits, "ROW_BLOCK", 200)
    monkeypatch.setattr(ingest_mod, "PROGRESS_INTERVAL_S", 0.0)
    with caplog.at_level(logging.WARNING, logger="arl_mpi.ingest"):
        store = ensure_store_from_input(src, 2, 1)
    assert not [r for r in caplog.records if "ingest of" in r.getMessage()]
    nrow = open_store(store).partitions[0].nrow + open_store(store).partitions[1].nrow
    import shutil

    shutil.rmtree(store)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="arl_mpi.ingest"):
        ensure_store_from_input(src, 2, 1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"ingest of {src.name}: ")]
    counts = [int(m.split("(")[1].split("/")[0]) for m in lines if "left" in m]
    assert len(counts) >= nrow // 200 and counts == sorted(counts) and counts[-1] == nrow
    assert all(f"/{nrow} rows)" in m for m in lines if "left" in m)
    assert lines[-1].startswith(f"ingest of {src.name}: done ({nrow} rows)")


def test_ms_read_rows_scattered_and_blocked(monkeypatch):
    """Rows in many runs (read through a row selection) and in small blocks give the same data."""
    pytest.importorskip("casacore.tables", reason="python-casacore (arl_mpi[ms]) not installed")
    from arl_mpi.io import ms as ms_mod

    r = open_reader(fetch(testdata.MWA_MS))
    full = r.read_rows(r.rows, r.times, slice(2, 7))
    odd = np.arange(1, r.rows.size, 2)  # > 64 runs of one row
    monkeypatch.setattr(ms_mod, "ROW_BLOCK", 100)
    part = r.read_rows(r.rows[odd], r.times[odd], slice(2, 7))
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(part, f), getattr(full, f)[odd], err_msg=f)
    assert part.vis.shape == (odd.size, 5, 4) and part.frequency.tolist() == r.frequency[2:7].tolist()
