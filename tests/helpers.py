"""Helpers shared by the tests: the repo's interpreter and launcher, a runner for the
pipeline's command line, and small synthetic partitions and stores.

``tests/`` is on ``sys.path`` (``pythonpath`` in ``[tool.pytest.ini_options]``), so a test
module anywhere under ``tests/`` imports these with ``from helpers import ...``. Fixtures and
pytest hooks live in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def run_or_dump(cmd: Sequence[str], timeout: float, **kw: Any) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` in its own session; on a
    timeout, SIGUSR1 the whole process group first (every arl_mpi process prints its Python
    stacks, see :func:`arl_mpi.cli.enable_stack_dumps`), then kill it and fail the test with
    the end of its output: a hang in CI then says where it hung."""
    cmd = list(cmd)
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


def cli_env(tmp: Path) -> dict[str, str]:
    """Environment for subprocesses: the repo on PYTHONPATH, Dask scratch and ``ARL_SCRATCH``
    under ``tmp``, no external scheduler (the ``env_cli`` fixture)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["DASK_TEMPORARY_DIRECTORY"] = str(tmp / "dask-scratch")
    env["ARL_SCRATCH"] = str(tmp / "arl-scratch")
    env.pop("ARL_DASK_SCHEDULER", None)
    return env


# ---- the pipeline's command line -------------------------------------------------------------


class PipelineRun(subprocess.CompletedProcess):
    """A finished ``python -m arl_mpi.pipeline`` run: the :class:`subprocess.CompletedProcess`
    plus ``seconds`` (how long it ran) and ``summary`` (``NAME-summary.json`` parsed when the
    run wrote one, else None)."""

    def __init__(self, done: subprocess.CompletedProcess, seconds: float, summary: dict | None):
        super().__init__(done.args, done.returncode, done.stdout, done.stderr)
        self.seconds = seconds
        self.summary = summary


def pipeline_command(tmp: Path, name: str | None, flags: Sequence[str], mpi_ranks: int = 0,
                     mpiexec_args: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """``[mpiexec MPIEXEC_ARGS... -n RANKS] python -m arl_mpi.pipeline [--name TMP/NAME] FLAGS...``
    (the command :func:`run_pipeline` runs; for a test that starts the run in the background)."""
    cmd = [PYTHON, "-m", "arl_mpi.pipeline"]
    if name is not None:
        cmd += ["--name", str(tmp / name)]
    cmd += [str(f) for f in flags]
    if mpi_ranks:
        cmd = [MPIEXEC, *mpiexec_args, "-n", str(mpi_ranks), *cmd]
    return cmd


def read_summary(tmp: Path, name: str) -> dict | None:
    """``TMP/NAME-summary.json`` parsed, or None when the run wrote none."""
    path = tmp / f"{name}-summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_pipeline(
    tmp: Path,
    name: str | None,
    flags: Sequence[str],
    env: dict,
    mpi_ranks: int = 0,
    timeout: float = 300,
    cwd: Path | None = None,
    **kw: Any,
) -> PipelineRun:
    """Run the continuum (or ``--pipeline ...``) pipeline and wait for it.

    Parameters
    ----------
    tmp
        Directory of the run: its outputs are ``tmp/name-*``; also the working directory
        unless ``cwd`` is given.
    name
        Run name, passed as ``--name tmp/name``; None when ``flags`` carry their own
        ``--name`` (or the run needs none).
    flags
        The pipeline's other command-line flags.
    env
        Environment of the run (normally the ``env_cli`` fixture).
    mpi_ranks
        0: a plain ``python -m arl_mpi.pipeline``; otherwise under ``mpiexec -n mpi_ranks``.
    timeout
        Hang guard in seconds, never a speed limit: on expiry every process of the run
        prints its stacks and is killed, and the test fails with the end of the output
        (:func:`run_or_dump`).
    cwd
        Working directory, ``tmp`` by default.
    **kw
        Passed on to :class:`subprocess.Popen`.

    Returns
    -------
    PipelineRun
        The completed process, how long it ran, and the run's parsed summary (if ``name``
        is given and the run wrote one).
    """
    cmd = pipeline_command(tmp, name, flags, mpi_ranks)
    t0 = time.monotonic()
    done = run_or_dump(cmd, timeout, env=env, cwd=tmp if cwd is None else cwd, **kw)
    seconds = time.monotonic() - t0
    return PipelineRun(done, seconds, read_summary(tmp, name) if name is not None else None)


def simulate_store(store: Path, flags: Sequence[str] = (), timeout: float = 300) -> Path:
    """``python -m arl_mpi.simulate STORE FLAGS...`` (the built-in observation), which must
    succeed; returns ``store``."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([PYTHON, "-m", "arl_mpi.simulate", str(store), *map(str, flags)],
                       capture_output=True, text=True, env=env, timeout=timeout)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return store


# ---- small synthetic data ----------------------------------------------------------------------


def small_configuration(nant: int = 6, seed: int = 0) -> Configuration:
    """A random ``nant``-antenna array (300 m scatter) at the MWA site."""
    rng = np.random.default_rng(seed)
    loc = EarthLocation.from_geodetic(116.7 * u.deg, -26.7 * u.deg, 377 * u.m)
    xyz = np.array([c.to_value(u.m) for c in loc.to_geocentric()])[None, :] + rng.normal(0, 300, (nant, 3))
    return Configuration(name="TEST", names=[f"A{i}" for i in range(nant)], xyz=xyz,
                         diameter=np.full(nant, 38.0), location=loc)  # fmt: skip


def small_visibility(nrow: int = 50, nchan: int = 3, pols: Sequence[str] = ("XX", "YY"),
                     seed: int = 0) -> Visibility:  # fmt: skip
    """Random visibilities (about 10 % flagged) on antennas 0-2 x 3-5."""
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
    """Store metadata matching ``vis`` (and :func:`small_configuration`)."""
    return StoreMeta(phase_centre=vis.phase_centre, frequency=vis.frequency, channel_width=vis.channel_width,
                     polarisations=list(vis.polarisations), configuration=small_configuration(),
                     telescope="TEST", provenance={"test": True})  # fmt: skip
