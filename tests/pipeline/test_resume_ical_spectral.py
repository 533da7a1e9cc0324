"""ICAL and spectral-line runs killed (SIGKILL of the whole job) at a checkpoint and resumed
give the images and gain tables of an uninterrupted run; other settings are refused by name.

Small on purpose: a 4-time x 4-channel simulated store (27 antennas), 64^2 images, a few
major cycles. The uninterrupted and the resumed runs run in this process on one local
cluster; only the run that is killed is a subprocess (its own session, killed as a group).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.io import fits
from helpers import PYTHON, REPO, simulate_store

sys.path.insert(0, str(REPO / "tests" / "cluster"))
from test_reliability import start_until_checkpoint  # noqa: E402  (the continuum test's helper)

from arl_mpi.calibration.gaintable import read_gaintable  # noqa: E402
from arl_mpi.errors import ConfigError, InputError  # noqa: E402
from arl_mpi.pipeline.__main__ import run  # noqa: E402
from arl_mpi.pipeline.checkpoint import read_spectral_checkpoint  # noqa: E402
from arl_mpi.pipeline.settings import settings_from_args  # noqa: E402

COMMON = ["--size", "64", "64", "--scale", "480asec", "--mgain", "0.5", "--no-dashboard", "--no-png"]
ICAL = ["--pipeline", "ical", *COMMON, "--niter", "300", "--auto-threshold", "1", "--nmiter", "3",
        "--ical-rounds", "3"]  # fmt: skip
# channels without the line (peak < 1 Jy) finish in the first cycle; the line's channel cleans on
# until --nmiter stops it (binding, so a resume that restarted the cleaning would differ)
SPECTRAL = ["--pipeline", "spectral", *COMMON, "--mgain", "0.2", "--niter", "300", "--threshold", "1.0",
            "--nmiter", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return simulate_store(tmp_path_factory.mktemp("resume") / "obs.store", [
        "--time-partitions", "2", "--sim-ntimes", "4", "--sim-nchan", "4", "--sim-rmax-m", "150",
        "--sim-nsources", "2", "--sim-flux-min-jy", "0.3", "--sim-flux-max-jy", "0.5",
        "--sim-line-peak-jy", "3", "--sim-line-centre-hz", "106.7e6", "--sim-line-fwhm-hz", "1.5e6",
        "--sim-line-ra-offset-deg", "0", "--sim-line-dec-offset-deg", "0"])  # fmt: skip


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as c, \
            Client(c) as cl:  # fmt: skip
        yield cl


def in_process(client, tmp: Path, name: str, flags: list[str]) -> None:
    assert run(settings_from_args([*flags, "--name", str(tmp / name)]), client) == 0


def kill_job(p) -> None:
    """SIGKILL the run's whole process group (driver, scheduler and workers) and reap it."""
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=60)


def wait_for(cond, p, seconds: float = 120) -> None:
    t_end = time.monotonic() + seconds
    while not cond() and p.poll() is None and time.monotonic() < t_end:
        time.sleep(0.02)


def assert_same_images(tmp: Path, a: str, b: str, kinds=("model", "residual", "image")) -> None:
    for kind in kinds:
        x = fits.getdata(tmp / f"{a}-{kind}.fits").astype(float)
        y = fits.getdata(tmp / f"{b}-{kind}.fits").astype(float)
        assert np.abs(x).max() > 0, kind
        assert np.abs(x - y).max() <= 1e-6 * np.abs(x).max(), (kind, np.abs(x - y).max())


def ical_round(path: Path) -> int:
    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs["round"])
    except OSError:
        return -1


def test_ical_resumes_after_kill(tmp_path, store, client, env_cli):
    flags = ["--vis", str(store), *ICAL]
    in_process(client, tmp_path, "ref", flags)
    cmd = [PYTHON, "-m", "arl_mpi.pipeline", "--name", "run", "--workers", "1", *flags]
    p, ck = start_until_checkpoint(cmd, tmp_path, env_cli, capture=False)
    try:
        # past the first self-calibration: round 1 runs with solved gains and has a major-cycle checkpoint
        wait_for(lambda: ical_round(tmp_path / "run-ical-state.h5") >= 1 and ck.exists(), p)
    finally:
        kill_job(p)
    assert ical_round(tmp_path / "run-ical-state.h5") == 1 and ck.exists(), "not killed in round 1"
    assert not (tmp_path / "run-image.fits").exists(), "killed before the end: no final image"
    # the same state without the round's major-cycle checkpoint: a job killed just after the
    # round started (the round is redone from its start with the saved gains)
    shutil.copy(tmp_path / "run-ical-state.h5", tmp_path / "early-ical-state.h5")
    in_process(client, tmp_path, "run", [*flags, "--resume"])
    in_process(client, tmp_path, "early", [*flags, "--resume"])
    ref = read_gaintable(tmp_path / "ref-gains.h5")
    assert np.std(np.angle(ref.gain[~ref.flags])) > 1e-3  # solved gains, not unit ones
    assert_same_images(tmp_path, "ref", "run", kinds=("ical0-image",))  # written before the kill
    for b in ("run", "early"):
        assert_same_images(tmp_path, "ref", b)
        assert_same_images(tmp_path, "ref", b, kinds=("ical1-image", "ical2-image"))
        gt = read_gaintable(tmp_path / f"{b}-gains.h5")
        np.testing.assert_array_equal(gt.flags, ref.flags)
        assert np.abs(gt.gain - ref.gain).max() <= 1e-6 * np.abs(ref.gain).max(), b
    # different image settings are refused by name; a name without a checkpoint is refused
    with pytest.raises(ConfigError, match="settings differ from the checkpoint's.*ical_phase_only_rounds"):
        in_process(client, tmp_path, "run", [*flags, "--ical-phase-only-rounds", "2", "--resume"])
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        in_process(client, tmp_path, "other", [*flags, "--resume"])


def test_spectral_resumes_after_kill(tmp_path, store, client, env_cli):
    flags = ["--vis", str(store), *SPECTRAL]
    in_process(client, tmp_path, "ref", flags)
    cmd = [PYTHON, "-m", "arl_mpi.pipeline", "--name", "run", "--workers", "1", *flags]
    p, ck = start_until_checkpoint(cmd, tmp_path, env_cli, capture=False)
    kill_job(p)
    assert ck.exists() and not (tmp_path / "run-image.fits").exists(), "not killed at a checkpoint"
    saved = read_spectral_checkpoint(str(tmp_path / "run"), settings_from_args([*flags]).image_settings())
    # killed after the first major cycle: the line-free channels are finished, the line's is not
    assert saved.cycle >= 1 and 1 <= saved.active.sum() < saved.active.size, (saved.cycle, saved.active)
    in_process(client, tmp_path, "run", [*flags, "--resume"])
    assert_same_images(tmp_path, "ref", "run")
    with pytest.raises(ConfigError, match="settings differ from the checkpoint's.*threshold"):
        in_process(client, tmp_path, "run", [*flags[:-4], "--threshold", "0.5", "--nmiter", "3", "--resume"])
