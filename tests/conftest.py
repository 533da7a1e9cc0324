"""Shared fixtures: small synthetic partitions and stores, and the repo's interpreter."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation, SkyCoord

import arl_mpi  # noqa: F401  (configures astropy offline)
from arl_mpi.io.store import StoreMeta
from arl_mpi.models import Configuration, Visibility

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _bin(name: str) -> str:
    cand = Path(sys.executable).with_name(name)
    return str(cand) if cand.exists() else name


MPIEXEC = _bin("mpiexec")

# Pipeline flags for a run small enough for 2 shared cores (built-in simulation, 128² image).
SMALL = ["--size", "128", "128", "--scale", "120asec", "--niter", "100", "--mgain", "0.8",
         "--time-partitions", "2", "--no-dashboard", "--no-png"]  # fmt: skip


def run_or_dump(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` in its own session; on a
    timeout, SIGUSR1 the whole process group first (every arl_mpi process prints its Python
    stacks, see :func:`arl_mpi.cli.enable_stack_dumps`), then kill it and fail the test with
    the end of its output: a hang in CI then says where it hung."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, **kw)  # fmt: skip
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGUSR1)
        time.sleep(3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"timed out after {timeout:.0f} s: {' '.join(map(str, cmd))}\n"
                    f"--- stdout (end) ---\n{out[-3000:]}\n--- stderr (end) ---\n{err[-12000:]}")  # fmt: skip
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.fixture
def env_cli(tmp_path) -> dict:
    """Environment for subprocesses: the repo on PYTHONPATH, quiet Dask, scratch under tmp."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["DASK_TEMPORARY_DIRECTORY"] = str(tmp_path / "dask-scratch")
    env.pop("ARL_DASK_SCHEDULER", None)
    return env


def small_configuration(nant: int = 6, seed: int = 0) -> Configuration:
    rng = np.random.default_rng(seed)
    loc = EarthLocation.from_geodetic(116.7 * u.deg, -26.7 * u.deg, 377 * u.m)
    xyz = np.array([c.to_value(u.m) for c in loc.to_geocentric()])[None, :] + rng.normal(0, 300, (nant, 3))
    return Configuration(name="TEST", names=[f"A{i}" for i in range(nant)], xyz=xyz,
                         diameter=np.full(nant, 38.0), location=loc)


def small_visibility(nrow: int = 50, nchan: int = 3, pols=("XX", "YY"), seed: int = 0) -> Visibility:
    rng = np.random.default_rng(seed)
    shape = (nrow, nchan, len(pols))
    return Visibility(
        time=np.sort(rng.uniform(5e9, 5e9 + 100, nrow)), uvw=rng.normal(0, 500, (nrow, 3)),
        antenna1=rng.integers(0, 3, nrow), antenna2=rng.integers(3, 6, nrow),
        vis=(rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64),
        weight=rng.uniform(0.5, 1, shape).astype(np.float32), flags=rng.uniform(size=shape) < 0.1,
        frequency=np.linspace(1e8, 1.2e8, nchan), channel_width=np.full(nchan, 1e6), polarisations=list(pols),
        phase_centre=SkyCoord(ra=15 * u.deg, dec=-45 * u.deg), integration_time=np.full(nrow, 10.0),
    )


def small_meta(vis: Visibility) -> StoreMeta:
    return StoreMeta(phase_centre=vis.phase_centre, frequency=vis.frequency, channel_width=vis.channel_width,
                     polarisations=list(vis.polarisations), configuration=small_configuration(),
                     telescope="TEST", provenance={"test": True})


_SESSION_START = time.time()


def _mapped_anywhere(path: str) -> bool:
    """Whether any process has ``path`` mapped (read from /proc/*/maps)."""
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            if path in maps.read_text():
                return True
        except OSError:
            continue
    return False


def pytest_sessionfinish(session, exitstatus):
    """Remove the MPICH shared-memory segments that MPI jobs killed by the tests left in
    /dev/shm (4 MiB each): only those created during this session and mapped by no process."""
    for f in Path("/dev/shm").glob("mpich_*"):
        with contextlib.suppress(OSError):
            if f.stat().st_mtime >= _SESSION_START and not _mapped_anywhere(str(f)):
                f.unlink()


# Outcomes that depend on the launcher's timing, not on our code: with MPICH's
# -disable-auto-cleanup a killed worker rank sometimes ends the job and sometimes lets it
# finish on the remaining workers (both seen on this machine). Kept as a record, not a gate.
_TIMING_DEPENDENT = {"test_worker_sigkill_with_disable_auto_cleanup_still_ends_job"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.originalname in _TIMING_DEPENDENT:
            item.add_marker(pytest.mark.xfail(reason="launcher-timing dependent: the job may also complete "
                                                     "on the remaining workers", strict=False))
