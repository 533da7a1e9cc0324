"""GainTable validation, HDF5 round trip and error handling."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from arl_mpi.calibration import (
    GainTable,
    GainTableFormatError,
    read_gaintable,
    write_gaintable,
)


def _random_table(ntime=3, nant=4, nfreq=2, receptors=("R", "L"), seed=0) -> GainTable:
    rng = np.random.default_rng(seed)
    shape = (ntime, nant, nfreq, len(receptors))
    return GainTable(
        time=5e9 + rng.uniform(size=ntime),
        interval=np.full(ntime, 10.0),
        freq=1e8 + rng.uniform(size=nfreq),
        antennas=np.array([f"SKA{k:03d}" for k in range(nant)]),
        gain=rng.normal(size=shape) + 1j * rng.normal(size=shape),
        weight=rng.uniform(size=shape),
        flags=rng.uniform(size=shape) > 0.7,
        receptors=list(receptors),
        phase_only=True,
        ref_ant=2,
    )


def test_roundtrip_is_bit_exact(tmp_path):
    gt = _random_table()
    path = write_gaintable(tmp_path / "g.h5", gt)
    back = read_gaintable(path)
    for name in ("time", "interval", "freq", "gain", "weight", "flags"):
        a, b = getattr(gt, name), getattr(back, name)
        assert a.dtype == b.dtype, name
        assert a.tobytes() == b.tobytes(), name
    np.testing.assert_array_equal(back.antennas, gt.antennas)
    assert back.receptors == ["R", "L"]
    assert back.phase_only is True and back.ref_ant == 2
    # only the final file remains (atomic write via temporary + os.replace)
    assert [p.name for p in tmp_path.iterdir()] == ["g.h5"]
    # readable with plain h5py
    with h5py.File(path, "r") as f:
        assert f.attrs["schema"] == "arl_mpi.gaintable"
        assert int(f.attrs["schema_version"]) == 1
        assert f["gain"].shape == (3, 4, 2, 2)


def test_overwrite_replaces_file(tmp_path):
    write_gaintable(tmp_path / "g.h5", _random_table(seed=1))
    gt2 = _random_table(seed=2)
    write_gaintable(tmp_path / "g.h5", gt2)
    assert read_gaintable(tmp_path / "g.h5").gain.tobytes() == gt2.gain.tobytes()


def test_bad_schema_version_names_file(tmp_path):
    path = write_gaintable(tmp_path / "old.h5", _random_table())
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(GainTableFormatError, match=r"old\.h5.*schema_version"):
        read_gaintable(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.h5"):
        read_gaintable(tmp_path / "nothere.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(GainTableFormatError, match=r"other\.h5.*not a gain table"):
        read_gaintable(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(GainTableFormatError, match=r"text\.h5"):
        read_gaintable(tmp_path / "text.h5")


def test_refuses_to_write_inside_forbidden_dir(tmp_path):
    store = tmp_path / "vis.store"
    store.mkdir()
    with pytest.raises(ValueError, match="refusing"):
        write_gaintable(store / "sub" / "g.h5", _random_table(), forbidden_dirs=[store])
    assert not (store / "sub").exists()
    write_gaintable(tmp_path / "g.h5", _random_table(), forbidden_dirs=[store])


@pytest.mark.parametrize(
    "field, value",
    [
        ("gain", np.ones((3, 4, 2, 2))),  # real, not complex
        ("gain", np.ones((3, 4, 2, 1), complex)),
        ("weight", np.ones((3, 4, 2))),
        ("flags", np.zeros((3, 4, 2, 2), dtype=int)),
        ("time", np.ones((3, 1))),
        ("interval", np.ones(2)),
        ("freq", np.ones(2, complex)),
        ("antennas", np.zeros((2, 2))),
        ("ref_ant", 7),
        ("phase_only", "yes"),
    ],
)
def test_validation_names_field(field, value):
    gt = _random_table()
    kwargs = {
        k: getattr(gt, k)
        for k in (
            "time interval freq antennas gain weight flags receptors phase_only ref_ant".split()
        )
    }
    kwargs[field] = value
    with pytest.raises(ValueError, match=rf"GainTable\.{field}"):
        GainTable(**kwargs)
