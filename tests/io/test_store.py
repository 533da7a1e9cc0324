"""HDF5 visibility store: round trip, integrity checks, parallel writers, bad inputs."""

from __future__ import annotations

import subprocess
import textwrap

import h5py
import numpy as np
import pytest
from helpers import PYTHON, REPO, small_meta, small_visibility

from arl_mpi.errors import StoreError
from arl_mpi.io.store import (
    INDEX_NAME,
    create_store,
    finalize_store,
    open_store,
    read_partition,
    verify_store,
    write_partition,
    write_store,
)


def _concat(parts, field):
    return np.concatenate([getattr(p, field) for p in parts])


def test_round_trip_bit_exact(tmp_path):
    vis = small_visibility(nrow=60, nchan=4)
    idx = write_store(tmp_path / "s", small_meta(vis), vis, ntime_parts=3, nfreq_parts=2)
    assert len(idx.partitions) == 6 and idx.ntime_blocks == 3 and idx.nfreq_blocks == 2
    assert idx.nvis == vis.nvis
    idx = open_store(tmp_path / "s")
    assert idx.meta.polarisations == ["XX", "YY"]
    np.testing.assert_array_equal(idx.meta.frequency, vis.frequency)
    assert idx.meta.phase_centre.separation(vis.phase_centre).arcsec < 1e-6
    for fb, cs in ((0, slice(0, 2)), (1, slice(2, 4))):
        parts = [read_partition(idx, p.pid) for p in idx.partitions if p.freq_block == fb]
        for f in ("time", "uvw", "antenna1", "antenna2", "integration_time"):
            np.testing.assert_array_equal(_concat(parts, f), getattr(vis, f))
        for f in ("vis", "weight", "flags"):
            got = _concat(parts, f)
            assert got.dtype == getattr(vis, f).dtype
            np.testing.assert_array_equal(got, getattr(vis, f)[:, cs])
        np.testing.assert_array_equal(parts[0].frequency, vis.frequency[cs])
    assert verify_store(idx) == []


def test_flipped_byte_detected(tmp_path):
    vis = small_visibility(nrow=200)
    idx = write_store(tmp_path / "s", small_meta(vis), vis, ntime_parts=2)
    f = idx.partition_path(1)
    raw = bytearray(f.read_bytes())
    # flip a byte inside the vis dataset's data (find it via h5py's offset)
    with h5py.File(f, "r") as h:
        off = h["vis"].id.get_chunk_info(0).byte_offset + 10
    raw[off] ^= 0xFF
    assert f.stat().st_mode & 0o222 == 0  # store files are read-only
    f.chmod(0o644)
    f.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"t0001-f0000.*checksum"):
        read_partition(idx, 1)
    # fletcher32 alone (SHA-256 check off) also catches it, with the partition named
    with pytest.raises(StoreError, match=r"t0001-f0000.*(corrupt|Fletcher|unreadable)"):
        read_partition(idx, 1, verify=False)
    read_partition(idx, 0)  # the other partition is fine
    assert len(verify_store(idx)) == 1


def test_parallel_writers(tmp_path):
    """Two processes write different partitions at the same time; the store is valid."""
    store = tmp_path / "s"
    create_store(store)
    script = textwrap.dedent(f"""
        import sys, pickle
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from helpers import small_visibility
        from arl_mpi.io.store import write_partition
        pid = int(sys.argv[1])
        info = write_partition({str(store)!r}, small_visibility(nrow=20000, seed=pid), pid=pid, time_block=pid,
                               freq_block=0, chan_start=0)
        sys.stdout.buffer.write(pickle.dumps(info))
    """)
    procs = [subprocess.Popen([PYTHON, "-c", script, str(i)], stdout=subprocess.PIPE, cwd=REPO) for i in range(2)]
    import pickle
    infos = [pickle.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    vis0 = small_visibility(nrow=20000, seed=0)
    idx = finalize_store(store, small_meta(vis0), infos)
    np.testing.assert_array_equal(read_partition(idx, 0).vis, vis0.vis)
    np.testing.assert_array_equal(read_partition(idx, 1).vis, small_visibility(nrow=20000, seed=1).vis)


def test_store_never_modified(tmp_path):
    vis = small_visibility()
    write_store(tmp_path / "s", small_meta(vis), vis)
    with pytest.raises(StoreError, match="already exists"):
        create_store(tmp_path / "s")
    with pytest.raises(StoreError, match="finished"):
        write_partition(tmp_path / "s", vis, pid=1, time_block=1, freq_block=0, chan_start=0)


def test_unfinished_store_refused(tmp_path):
    vis = small_visibility()
    create_store(tmp_path / "s")
    write_partition(tmp_path / "s", vis, pid=0, time_block=0, freq_block=0, chan_start=0)
    with pytest.raises(StoreError, match="unfinished"):
        open_store(tmp_path / "s")
    assert not list((tmp_path / "s" / "partitions").glob(".*tmp*"))


def test_reading_one_partition_opens_one_file(tmp_path, monkeypatch):
    vis = small_visibility(nrow=100)
    idx = write_store(tmp_path / "s", small_meta(vis), vis, ntime_parts=4)
    opened = []
    real = h5py.File

    def spy(name, *a, **k):
        opened.append(str(name))
        return real(name, *a, **k)

    monkeypatch.setattr(h5py, "File", spy)
    read_partition(idx, 2)
    assert opened == [str(idx.partition_path(2))]


@pytest.mark.parametrize("case,message", [
    ("missing", "no such visibility store"),
    ("not_hdf5", "not an HDF5 file"),
    ("schema", "unsupported store schema version 99"),
    ("missing_dataset", "missing dataset 'frequency'"),
    ("unfinished", "unfinished visibility store"),
])
def test_bad_inputs_one_line_error(tmp_path, env_cli, case, message):
    store = tmp_path / "s"
    if case != "missing":
        vis = small_visibility()
        write_store(store, small_meta(vis), vis)
        index = store / INDEX_NAME
        index.chmod(0o644)
        if case == "not_hdf5":
            index.write_text("hello")
        elif case == "schema":
            with h5py.File(index, "r+") as f:
                f.attrs["schema_version"] = 99
        elif case == "missing_dataset":
            with h5py.File(index, "r+") as f:
                del f["frequency"]
        elif case == "unfinished":
            index.unlink()
    r = subprocess.run([PYTHON, "-m", "arl_mpi.store", "verify", str(store)], capture_output=True, text=True,
                       env=env_cli, cwd=REPO, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(store) in lines[0], r.stderr
    assert "Traceback" not in r.stderr
