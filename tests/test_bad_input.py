"""The bad-input catalogue: every case ends in ONE line naming the file or field, a non-zero
exit status, nothing written under a final output name, and the input untouched.

Table-driven: each :class:`Case` builds its input in ``tmp/in`` and gives the command line.
Pipeline cases run in this process: the pipeline's own ``main`` (settings, the checks before
any cluster starts, the driver) under :func:`arl_mpi.cli.run_cli`, with one shared local
cluster in place of a new one per case; ingest cases through ``arl_mpi.ingest``'s ``main``;
one case runs as a subprocess to pin the real entry point. A full disk while the outputs are
written has tests of its own (a tmpfs mounted by the test; needs root): the image outputs,
the gain tables, the checkpoints and a store being ingested. The catalogue and its
messages are listed in docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import PYTHON, REPO, small_meta, small_visibility

from arl_mpi.cli import run_cli
from arl_mpi.io.store import create_store, finalize_store, select, write_partition, write_store

#: a log record (``setup_logging``'s format), not the error line
LOG_LINE = re.compile(r"^\S+ \S+ \[rank \d+ [^]]*\] (DEBUG|INFO|WARNING) ")
FLAGS = ["--size", "64", "64", "--scale", "600asec", "--no-dashboard", "--no-png"]


# ---- inputs --------------------------------------------------------------------------------


def good_store(path: Path, mutate: Callable | None = None, nrow: int = 400, nchan: int = 2) -> Path:
    vis = small_visibility(nrow=nrow, nchan=nchan)
    vis.uvw[:] = np.random.default_rng(1).normal(0, 200, (nrow, 3))
    if mutate:
        mutate(vis)
    write_store(path, small_meta(vis), vis, ntime_parts=2)
    return path


def two_part_store(path: Path, second) -> Path:
    """A store of two time partitions, the second made from ``second(vis)`` (another visibility
    set that disagrees with the store's metadata), index written as for a sound store."""
    vis = small_visibility(nrow=100, nchan=2)
    other = second(vis)
    create_store(path)
    half = vis.time.size // 2
    infos = [write_partition(path, select(vis, slice(0, half), slice(0, 2)), pid=0, time_block=0, freq_block=0,
                             chan_start=0),
             write_partition(path, select(other, slice(half, None), slice(0, other.nchan)), pid=1, time_block=1,
                             freq_block=0, chan_start=0)]
    infos[1] = dataclasses.replace(infos[1], chan_stop=2)  # the index says 2 channels, as for partition 0
    finalize_store(path, small_meta(vis), infos)
    return path


def other_frequencies(vis):
    return small_visibility(nrow=100, nchan=3)


def other_polarisations(vis):
    return small_visibility(nrow=100, nchan=2, pols=("XX", "XY", "YX", "YY"))


_MS_EDITS = {
    # a deep copy of an empty selection: every subtable, no rows
    "no-rows": "t.query('TIME < 0').copy(out, deep=True).close()",
    "flag-all": "t2 = t.copy(out, deep=True); t2.close(); t2 = table(out, readonly=False, ack=False); "
                "t2.putcol('FLAG', np.ones(t2.getcol('FLAG').shape, bool)); t2.close()",
}


def write_ms_from(store: Path, path: Path, edit: str) -> Path:
    """``store`` written as an MS beside ``path``, then copied to ``path`` with ``edit`` (in a
    subprocess, which python-casacore's table cache cannot outlive)."""
    pytest.importorskip("casacore.tables", reason="python-casacore (arl_mpi[ms]) not installed")
    src = path.parent.parent / ("src-" + path.name)
    code = ("import numpy as np; from casacore.tables import table; from arl_mpi.io.ms import write_ms; "
            f"from arl_mpi.io.store import open_store; write_ms(open_store({str(store)!r}), {str(src)!r}); "
            f"out = {str(path)!r}; t = table({str(src)!r}, ack=False); {_MS_EDITS[edit]}; t.close()")
    subprocess.run([PYTHON, "-c", code], check=True, cwd=REPO, timeout=120)
    return path


def synthetic_uvfits(path: Path, edit: Callable | None = None) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "io"))
    from test_ingest import write_synthetic_uvfits

    write_synthetic_uvfits(path, 60.0, -30.0, 60.5, -29.8)
    if edit:
        edit(path)
    return path


def nan_uvw(path: Path) -> None:
    from astropy.io import fits

    with fits.open(path, mode="update") as h:
        for i in range(3, 7):
            h[0].data[i].setpar("UU", np.nan)


def h5parm_without(store: Path, path: Path, drop: str) -> Path:
    from arl_mpi.calibration.gaintable import GainTable, write_gaintable_h5parm
    from arl_mpi.io.store import open_store

    names = [n for n in open_store(store).meta.configuration.names if n != drop]
    shape = (1, len(names), 1, 2)
    gt = GainTable(time=np.array([5e9 + 50]), interval=np.array([1000.0]), freq=np.array([1.1e8]),
                   antennas=np.array(names), gain=np.ones(shape, complex), weight=np.ones(shape),
                   flags=np.zeros(shape, bool), receptors=["X", "Y"])
    write_gaintable_h5parm(path, gt)
    return path


def checkpoint_with(store: Path, prefix: Path, **other) -> None:
    """A continuum checkpoint of the same run but made with ``other`` settings."""
    from arl_mpi.pipeline.outputs import Checkpoint, write_checkpoint
    from arl_mpi.pipeline.settings import settings_from_args

    s = settings_from_args(["--vis", str(store), *FLAGS, "--niter", "10"])
    settings = {**s.image_settings(), **other}
    write_checkpoint(str(prefix), Checkpoint(model=np.zeros((1, 64, 64)), cycle=1, niter_done=1, settings=settings))


# ---- the catalogue -------------------------------------------------------------------------


@dataclass
class Case:
    """One bad input: ``build(tmp_in, out_prefix) -> (argv, needles)``; the error line must
    contain every needle; ``tool`` is pipeline, ingest or subprocess (the pipeline's CLI)."""

    id: str
    build: Callable[[Path, Path], tuple[list[str], list[str]]]
    tool: str = "pipeline"


def _vis(path: Path, *extra: str) -> list[str]:
    return ["--vis", str(path), *FLAGS, *extra]


def _store_index_edit(edit):
    def build(d: Path, out: Path):
        s = good_store(d / "bad.store")
        index = s / "index.h5"
        index.chmod(0o644)
        edit(s, index)
        if index.exists():
            index.chmod(0o444)
        return _vis(s), [str(s)]

    return build


def _garbage(s, index):
    index.write_bytes(b"\x00garbage" * 100)


def _schema(s, index):
    with h5py.File(index, "r+") as f:
        f.attrs["schema_version"] = 99


def _flip_byte(s, index):
    part = next((s / "partitions").glob("t*.h5"))
    part.chmod(0o644)
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    part.write_bytes(bytes(raw))
    part.chmod(0o444)


def _unfinished(s, index):
    index.unlink()


def _text_file(d: Path, out: Path):
    (d / "notes.txt").write_text("not visibilities\n")
    return _vis(d / "notes.txt"), ["notes.txt", "not a MeasurementSet, UVFITS file or visibility store"]


def _hdf5_not_store(d: Path, out: Path):
    (d / "h5dir").mkdir()
    with h5py.File(d / "h5dir" / "index.h5", "w") as f:
        f["x"] = 1
    return _vis(d / "h5dir"), ["h5dir", "missing attribute 'format'"]


def _all_flagged(d: Path, out: Path):
    s = good_store(d / "flagged.store", lambda v: v.flags.__setitem__(slice(None), True))
    return _vis(s), [str(s), "all 800 visibilities are flagged"]


def _disagree(make, needle):
    def build(d: Path, out: Path):
        s = two_part_store(d / "mixed.store", make)
        return _vis(s), [str(s / "partitions" / "t0001-f0000.h5"), needle]

    return build


def _ms(edit, needle):
    def build(d: Path, out: Path):
        s = good_store(d.parent / "src.store")
        ms = write_ms_from(s, d / "obs.ms", edit)
        return _vis(ms), ["obs.ms", needle]

    return build


def _uvfits_nan_uvw(d: Path, out: Path):
    f = synthetic_uvfits(d / "nanuvw.uvfits", nan_uvw)
    return _vis(f), ["nanuvw.uvfits", "UVW"]


def _uvfits_truncated(d: Path, out: Path):
    f = synthetic_uvfits(d / "cut.uvfits")
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    return [str(f), str(out) + ".store"], ["cut.uvfits", "truncated UVFITS file"]


def _ingest_column(d: Path, out: Path):
    f = synthetic_uvfits(d / "ok.uvfits")
    return [str(f), str(out) + ".store", "--column", "MODEL_DATA"], ["--column MODEL_DATA"]


def _h5parm_antenna(d: Path, out: Path):
    s = good_store(d / "obs.store")
    h5 = h5parm_without(s, d / "noant.h5", "A5")
    return _vis(s, "--apply-solutions", str(h5)), ["noant.h5", "no solutions for antenna 'A5'"]


def _h5parm_missing(d: Path, out: Path):
    s = good_store(d / "obs.store")
    return _vis(s, "--apply-solutions", str(d / "absent.h5")), ["absent.h5", "no such h5parm file"]


def _config(text, needle):
    def build(d: Path, out: Path):
        (d / "bad.toml").write_text(text)
        return ["--config", str(d / "bad.toml"), *FLAGS], [needle]

    return build


def _flags(extra, needles):
    def build(d: Path, out: Path):
        s = good_store(d / "obs.store")
        return _vis(s, *extra), [n.replace("{store}", str(s)) for n in needles]

    return build


def _resume_missing(d: Path, out: Path):
    s = good_store(d / "obs.store")
    return _vis(s, "--niter", "10", "--resume"), [f"{out}-checkpoint.h5", "no checkpoint to resume from"]


def _resume_other_settings(d: Path, out: Path):
    s = good_store(d / "obs.store")
    checkpoint_with(s, out, nmiter=7)
    return _vis(s, "--niter", "10", "--resume"), ["settings differ from the checkpoint's", "nmiter: checkpoint 7"]


def _fits_mask_shape(d: Path, out: Path):
    from astropy.io import fits

    s = good_store(d / "obs.store")
    fits.PrimaryHDU(np.ones((1, 1, 32, 32))).writeto(d / "mask.fits")
    return _vis(s, "--fits-mask", str(d / "mask.fits"), "--niter", "10"), ["mask.fits", "mask is 32 x 32 pixels"]


def _predict_model_wcs(d: Path, out: Path):
    """A model image of the right size whose pixels are twice the --scale."""
    from arl_mpi.io.fits import write_fits
    from arl_mpi.io.store import open_store
    from arl_mpi.models import Image, image_wcs

    s = good_store(d / "obs.store")
    meta = open_store(s).meta
    wcs = image_wcs(meta.phase_centre, 64, 64, np.deg2rad(1200 / 3600), float(meta.frequency.mean()), 2e7, ["I"])
    write_fits(d / "model.fits", Image(data=np.zeros((1, 1, 64, 64)), wcs=wcs, bunit="JY/PIXEL"))
    return _vis(s, "--predict", "--predict-model", str(d / "model.fits")), [
        "model.fits", "model WCS does not match the image", "pixel -1200 x 1200 asec"]


CASES = [
    Case("store-missing", lambda d, o: (_vis(d / "nope.store"), ["nope.store", "no such visibility store"])),
    Case("store-text-file", _text_file),
    Case("store-hdf5-not-a-store", _hdf5_not_store),
    Case("store-index-not-hdf5", _store_index_edit(_garbage)),
    Case("store-schema-99", _store_index_edit(_schema)),
    Case("store-partition-checksum", _store_index_edit(_flip_byte)),
    Case("store-unfinished", _store_index_edit(_unfinished)),
    Case("store-all-flagged", _all_flagged),
    Case("store-partitions-disagree-frequencies", _disagree(other_frequencies, "channels 0-2 where the store")),
    Case("store-partitions-disagree-polarisations", _disagree(other_polarisations, "polarisations")),
    Case("ms-zero-rows", _ms("no-rows", "has no rows")),
    Case("ms-all-flagged", _ms("flag-all", "are flagged")),
    Case("uvfits-nan-uvw", _uvfits_nan_uvw),
    Case("uvfits-truncated", _uvfits_truncated, tool="ingest"),
    Case("ingest-column-not-in-uvfits", _ingest_column, tool="ingest"),
    Case("h5parm-without-data-antenna", _h5parm_antenna),
    Case("h5parm-missing", _h5parm_missing),
    Case("config-bad-value", _config('niter = "many"\n', "niter: invalid value")),
    Case("config-unknown-key", _config("colour = 3\n", "unknown setting 'colour'")),
    Case("config-not-toml", _config("size = [100, \n", "not valid TOML")),
    Case("flag-odd-size", _flags(["--size", "101", "100"], ["size: x size 101 must be even"])),
    Case("flag-channels-out-exceeds-data", _flags(["--channels-out", "8"], ["channels-out: 8 exceeds the 2",
                                                                            "{store}"])),
    Case("flag-continuum-fit-channels", _flags(["--pipeline", "spectral", "--continuum-subtract-order", "1",
                                                "--continuum-fit-channels", "0-9"], ["continuum-fit-channels"])),
    Case("flag-image-too-large", _flags(["--size", "200000", "200000", "--scale", "1asec"],
                                        ["size: 200000x200000", "GiB"])),
    Case("fits-mask-wrong-shape", _fits_mask_shape),
    Case("pol-not-in-data", _flags(["--pol", "U"], ["{store}", "--pol U needs correlations XY+YX"])),
    Case("predict-model-wcs-mismatch", _predict_model_wcs),
    Case("resume-without-checkpoint", _resume_missing),
    Case("resume-other-settings", _resume_other_settings),
    Case("subprocess-config-bad-value", _config('niter = "many"\n', "niter: invalid value"), tool="subprocess"),
]



# ---- running a case ----------------------------------------------------------------------------


def tree_hash(path: Path) -> dict[str, str]:
    """sha256 and mode of every file under ``path`` (or of ``path`` itself)."""
    if not path.exists():
        return {}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode) for p in files}


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as c, \
            Client(c) as cl:  # fmt: skip
        yield cl


def pipeline_in_process(argv: list[str], client) -> int:
    """``python -m arl_mpi.pipeline ARGV`` in this process: its ``main`` (settings, the checks
    before any cluster starts, the driver) under :func:`~arl_mpi.cli.run_cli`, with this
    module's cluster in place of a new one; the logging it sets up is undone afterwards."""
    from arl_mpi.cluster import runtime
    from arl_mpi.cluster.quiet import quiet_shutdown_noise
    from arl_mpi.cluster.watchdog import run_job
    from arl_mpi.pipeline.__main__ import main

    real = runtime.run_with_client
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    def run_here(job, settings=None):
        quiet_shutdown_noise()  # as run_with_client's configure_dask does (Dask's loggers, the filter)
        return run_job(job, client, settings)

    runtime.run_with_client = run_here
    try:
        return run_cli(main, argv, prog="arl_mpi.pipeline")
    finally:
        runtime.run_with_client = real
        root.handlers[:], root.level = handlers, level


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, client, capsys, env_cli):
    d, outdir = tmp_path / "in", tmp_path / "out"
    d.mkdir()
    outdir.mkdir()
    out = outdir / "x"
    argv, needles = case.build(d, out)
    inputs = [Path(a) for a in argv if a.startswith(str(d))]
    before = {p: tree_hash(p) for p in inputs}
    outputs_before = tree_hash(outdir)
    capsys.readouterr()
    if case.tool == "subprocess":
        r = subprocess.run([PYTHON, "-m", "arl_mpi.pipeline", "--name", str(out), "--workers", "1", *argv],
                           capture_output=True, text=True, env=env_cli, cwd=tmp_path, timeout=300)
        code, err = r.returncode, r.stderr
        err_lines = [ln for ln in err.strip().splitlines() if "error:" in ln]
        assert len(err_lines) == 1, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    else:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            if case.tool == "ingest":
                from arl_mpi.ingest import main as ingest_main

                code = run_cli(ingest_main, argv, prog="arl_mpi.ingest")
            else:
                code = pipeline_in_process(["--name", str(out), *argv], client)
        finally:  # the ingest's main logs to the (captured) stderr: undo it
            root.handlers[:], root.level = handlers, level
        err = capsys.readouterr().err
        err_lines = [ln for ln in err.strip().splitlines() if not LOG_LINE.match(ln)]
        assert len(err_lines) == 1, err  # argparse/usage text, tracebacks: more than one line
    line = err_lines[-1]
    assert code == 2, (code, line)
    assert "error:" in line and "Traceback" not in err, line
    for n in needles:
        assert n in line, (n, line)
    # nothing written under a final output name, the input untouched
    assert tree_hash(outdir) == outputs_before, sorted(set(tree_hash(outdir)) ^ set(outputs_before))
    for p in inputs:
        assert tree_hash(p) == before[p], p


def test_catalogue_has_twenty_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 20


# ---- a disk that fills up while the outputs are written ----------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted at ``tmp/disk`` (needs root and mount rights)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_while_writing_outputs(small_disk, tmp_path, client, capsys):
    """A 1 MiB disk holds the dirty image and PSF (64^2 x 4 channels, 130 kB each, written
    first) but not all later outputs: one line naming the file that did not fit, exit 2,
    the earlier outputs intact (complete FITS), no partial file under a final name."""
    from astropy.io import fits

    s = good_store(tmp_path / "obs.store", nchan=4)
    before = tree_hash(s)
    out = small_disk / "x"
    argv = ["--name", str(out), *_vis(s, "--pipeline", "spectral", "--niter", "20", "--size", "128", "128")]
    capsys.readouterr()
    code = pipeline_in_process(argv, client)
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not LOG_LINE.match(ln)]
    assert code == 2 and len(err) == 1, err
    assert "No space left on device" in err[0] and str(small_disk) in err[0], err[0]
    names = sorted(p.name for p in small_disk.iterdir())
    assert "x-dirty.fits" in names and "x-image.fits" not in names, names
    assert not [n for n in names if n.startswith(".")], names  # temporaries removed
    for n in names:
        if n.endswith(".fits"):
            assert fits.getdata(small_disk / n).shape[-1] == 128, n  # complete
    assert tree_hash(s) == before


def fill_disk(disk: Path, leave: int) -> Path:
    """An earlier output of random bytes that leaves about ``leave`` bytes of ``disk`` free."""
    st = os.statvfs(disk)
    filler = disk / "earlier.bin"
    filler.write_bytes(np.random.default_rng(0).bytes(max(0, st.f_bavail * st.f_frsize - leave)))
    return filler


def no_space(call, final: Path) -> str:
    """``call()`` meets a full disk: an OutputError (the CLI's one line after ``error:``, exit
    2) of one line naming ``final``; returns the line."""
    from arl_mpi.errors import OutputError

    with pytest.raises(OutputError) as e:
        call()
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{final}: No space left on device"), line
    return line


def small_gaintable(ntime: int, nant: int = 30, nfreq: int = 8):
    from arl_mpi.calibration.gaintable import GainTable

    shape = (ntime, nant, nfreq, 2)
    rng = np.random.default_rng(2)
    return GainTable(time=5e9 + np.arange(ntime) * 10.0, interval=np.full(ntime, 10.0),
                     freq=1e8 + np.arange(nfreq) * 1e6, antennas=np.array([f"A{i}" for i in range(nant)]),
                     gain=np.exp(1j * rng.uniform(-1, 1, shape)), weight=np.ones(shape),
                     flags=np.zeros(shape, bool), receptors=["X", "Y"])


@pytest.mark.parametrize("writer", ["gaintable", "h5parm"])
def test_disk_full_while_writing_gain_solutions(small_disk, writer):
    """ICAL's gain table (``PREFIX-gains.h5``) and h5parm on a 1 MiB disk: a 10-time table
    (~100 kB) is written; a 200-time one (~2 MB) is not: one line naming it, nothing under
    its name, no temporary, the earlier table reads back unchanged."""
    from arl_mpi.calibration.gaintable import (
        read_gaintable,
        read_gaintable_h5parm,
        write_gaintable,
        write_gaintable_h5parm,
    )

    write, read = {"gaintable": (write_gaintable, read_gaintable),
                   "h5parm": (write_gaintable_h5parm, read_gaintable_h5parm)}[writer]
    small, big = small_gaintable(10), small_gaintable(200)
    write(small_disk / "x-gains-1.h5", small)
    before = tree_hash(small_disk)
    line = no_space(lambda: write(small_disk / "x-gains.h5", big), small_disk / "x-gains.h5")
    assert "files written before it are complete" in line, line
    assert tree_hash(small_disk) == before  # nothing new: no final name, no temporary
    np.testing.assert_allclose(read(small_disk / "x-gains-1.h5").gain, small.gain, rtol=1e-12)  # amp/phase


def test_disk_full_while_predicting_into_a_store(small_disk, tmp_path, client, capsys):
    """``--predict`` into ``PREFIX-predict.store`` on a disk with a few kB free: one line
    naming the store, exit 2, nothing under its name (it was once written in place, so a
    full disk left half a store there), no temporary, the earlier file and the input intact."""
    s = good_store(tmp_path / "obs.store", nchan=4)
    assert pipeline_in_process(["--name", str(tmp_path / "m"), *_vis(s, "--niter", "10", "--nmiter", "1")],
                               client) == 0  # fmt: skip
    before = tree_hash(s)
    filler = fill_disk(small_disk, 8192)
    disk_before = tree_hash(small_disk)
    capsys.readouterr()
    code = pipeline_in_process(["--name", str(small_disk / "x"), *_vis(s, "--predict", "--predict-model",
                                                                      str(tmp_path / "m-model.fits"))], client)
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not LOG_LINE.match(ln)]
    assert code == 2 and len(err) == 1, err
    assert f"{small_disk / 'x-predict.store'}: No space left on device" in err[0], err[0]
    assert tree_hash(small_disk) == disk_before and filler.is_file()  # no store, no temporary
    assert tree_hash(s) == before


def test_disk_full_while_plotting_gains(small_disk):
    """ICAL's ``PREFIX-gains.png`` when only a few kB are free: one line naming the PNG (it
    once ended in ``internal error: OSError``), nothing under its name, no temporary, the
    earlier file intact."""
    pytest.importorskip("matplotlib")
    from arl_mpi.calibration.plots import plot_gains

    filler = fill_disk(small_disk, 4096)
    before = tree_hash(small_disk)
    no_space(lambda: plot_gains(small_gaintable(50), small_disk / "x-gains.png"), small_disk / "x-gains.png")
    assert tree_hash(small_disk) == before and filler.is_file()


def test_disk_full_while_writing_checkpoints(small_disk, tmp_path, monkeypatch):
    """A checkpoint rewritten each cycle: cycle 2's no longer fits beside cycle 1's (600 kB
    each on 1 MiB), so cycle 1's stays, complete, and --resume still reads it; the same for
    the spectral checkpoint and ICAL's state; and for a checkpoint too large to build in
    memory (HDF5 writing it itself): refused before HDF5 writes a byte."""
    from arl_mpi.io import atomic
    from arl_mpi.pipeline.checkpoint import (
        IcalState,
        SpectralCheckpoint,
        ical_state_path,
        read_ical_state,
        read_spectral_checkpoint,
        write_ical_state,
        write_spectral_checkpoint,
    )
    from arl_mpi.pipeline.outputs import Checkpoint, checkpoint_path, read_checkpoint, write_checkpoint

    model = np.random.default_rng(3).normal(size=(1, 200, 375))  # 600 kB
    prefix = str(small_disk / "x")
    settings = {"niter": 10}
    path = checkpoint_path(prefix)
    write_checkpoint(prefix, Checkpoint(model=model, cycle=1, niter_done=5, settings=settings))
    before = tree_hash(small_disk)
    no_space(lambda: write_checkpoint(prefix, Checkpoint(model=2 * model, cycle=2, niter_done=9,
                                                          settings=settings)), path)
    assert tree_hash(small_disk) == before
    ck = read_checkpoint(prefix, settings)
    assert ck.cycle == 1 and np.array_equal(ck.model, model)

    path.unlink()
    spec = SpectralCheckpoint(model=model, cycle=1, niter_done=np.array([5]), last=np.array([5]),
                              active=np.array([True]), settings=settings)
    write_spectral_checkpoint(prefix, spec)
    before = tree_hash(small_disk)
    no_space(lambda: write_spectral_checkpoint(prefix, dataclasses.replace(spec, cycle=2)), path)
    assert tree_hash(small_disk) == before and read_spectral_checkpoint(prefix, settings).cycle == 1

    path.unlink()
    fill_disk(small_disk, 64 << 10)
    state = IcalState(round=1, gains=[small_gaintable(10)], settings=settings)
    write_ical_state(prefix, dataclasses.replace(state, gains=[None]))
    before = tree_hash(small_disk)
    no_space(lambda: write_ical_state(prefix, state), ical_state_path(prefix))  # ~100 kB of gains
    assert tree_hash(small_disk) == before and read_ical_state(prefix, settings).gains == [None]

    monkeypatch.setattr(atomic, "IN_MEMORY_H5_BYTES", 0)  # the path of large checkpoints
    no_space(lambda: write_checkpoint(prefix, Checkpoint(model=model, cycle=3, niter_done=9,
                                                          settings=settings)), path)
    assert tree_hash(small_disk) == before


def test_disk_full_while_ingesting_a_store(small_disk, tmp_path, client, capsys):
    """``python -m arl_mpi.ingest IN.uvfits DISK/obs.store`` with ~40 kB free (the store
    needs ~110 kB): one line naming the store, exit 2, nothing under ``obs.store``, no
    temporary store, the earlier file and the input untouched; the same for ``--vis
    IN.uvfits`` ingesting into ``IN.uvfits.arlstore`` beside an input on the full disk, in
    this process and on the Dask workers (the error raised there reaches the driver)."""
    from arl_mpi.errors import OutputError
    from arl_mpi.graphs.ingest_graph import ingest_on_workers
    from arl_mpi.ingest import main as ingest_main
    from arl_mpi.io.ingest import ensure_store_from_input

    src = synthetic_uvfits(tmp_path / "in.uvfits")
    on_disk = small_disk / "in.uvfits"
    on_disk.write_bytes(src.read_bytes())
    fill_disk(small_disk, 40 << 10)
    before, src_before = tree_hash(small_disk), tree_hash(src)
    store = small_disk / "obs.store"
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    capsys.readouterr()
    try:
        code = run_cli(ingest_main, [str(src), str(store), "--time-partitions", "3"], prog="arl_mpi.ingest")
    finally:
        root.handlers[:], root.level = handlers, level
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not LOG_LINE.match(ln)]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"arl_mpi.ingest: error: {store}: No space left on device while writing "), lines[0]
    assert tree_hash(small_disk) == before and tree_hash(src) == src_before
    assert sorted(p.name for p in small_disk.iterdir()) == ["earlier.bin", "in.uvfits"]

    for where in (None, ingest_on_workers(client)):
        with pytest.raises(OutputError) as e:
            ensure_store_from_input(on_disk, time_partitions=3, map_partitions=where)
        assert str(e.value).startswith(f"{on_disk}.arlstore: No space left on device while writing "), e.value
        assert sorted(p.name for p in small_disk.iterdir()) == ["earlier.bin", "in.uvfits"]
        assert tree_hash(small_disk) == before


def test_ingest_never_writes_into_an_existing_store(tmp_path):
    """``arl_mpi.ingest`` now writes under a temporary name and renames: an existing store,
    or an unfinished one holding partitions, is refused by name and left as it was; an empty
    directory made for the store is taken (as before), and no temporary is left."""
    from arl_mpi.errors import StoreError
    from arl_mpi.io.ingest import ingest

    src = synthetic_uvfits(tmp_path / "in.uvfits")
    done = good_store(tmp_path / "done.store")
    half = tmp_path / "half.store"
    (half / "partitions").mkdir(parents=True)
    (half / "partitions" / "t0000-f0000.h5").write_bytes(b"x")
    for store, needle in ((done, "a finished visibility store already exists here"),
                          (half, "holds an unfinished store")):
        before = tree_hash(store)
        with pytest.raises(StoreError, match=needle) as e:
            ingest(src, store, time_partitions=2)
        assert str(e.value).startswith(str(store)) and tree_hash(store) == before
    empty = tmp_path / "empty.store"
    empty.mkdir()
    assert len(ingest(src, empty, time_partitions=2).partitions) == 2
    assert (empty / "index.h5").is_file()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
