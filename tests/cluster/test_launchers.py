"""A lost worker rank under Open MPI's ``mpirun`` (the launcher matrix of docs/reliability.md).

Debian's Open MPI (``/usr/bin/mpirun``, mpi4py built against it: the cached venv of
``test_site_mpi.py``) ends the whole job when one rank dies. A worker rank (MPI rank 2) is
``SIGKILL``ed once the run's first checkpoint exists: every rank of the job must be gone
promptly (a run still there 120 s after the kill fails the test as a hang), ``mpirun``
exits non-zero naming the signal, no final image is written, and the same command with
``--resume`` under ``mpirun`` completes with the images of an undisturbed local-cluster run
(1e-6 of the peak). Skipped where Open MPI is not installed.
"""

from __future__ import annotations

import time

import numpy as np
import psutil
import pytest
from astropy.io import fits
from helpers import PYTHON, cli_env, run_or_dump, simulate_store
from test_reliability import _rank_pids, kill_and_collect, start_until_checkpoint
from test_site_mpi import MPIRUN, MPIRUN_ARGS, site_python  # noqa: F401 - site_python is a fixture

pytestmark = [pytest.mark.mpi]

# several short major cycles on a small image: the kill lands mid-run, the runs stay short
CYCLES = ["--size", "128", "128", "--scale", "120asec", "--no-dashboard", "--no-png", "--niter", "1000",
          "--mgain", "0.3", "--auto-threshold", "1", "--nmiter", "8"]  # fmt: skip


def test_open_mpi_worker_rank_killed_ends_job_then_resume(site_python, tmp_path):  # noqa: F811
    env = cli_env(tmp_path)
    store = simulate_store(tmp_path / "obs.store", ["--time-partitions", "2"])
    args = ["--vis", str(store), *CYCLES, "--interface", "lo"]
    mpirun = [MPIRUN, *MPIRUN_ARGS, site_python, "-m", "arl_mpi.pipeline", "--name", str(tmp_path / "run"), *args]
    p, ck = start_until_checkpoint(mpirun, tmp_path, env)
    assert p.poll() is None and ck.exists(), "the run ended before its first checkpoint"
    launched = psutil.Process(p.pid).children(recursive=True)
    victims = _rank_pids(2, p.pid, "OMPI_COMM_WORLD_RANK")
    assert len(victims) == 1, victims
    t_kill = time.monotonic()
    out, err = kill_and_collect(p, victims[0], timeout=120)
    ended_after = time.monotonic() - t_kill
    text = out + err
    print(f"mpirun exit {p.returncode}, {ended_after:.1f} s after the kill")  # shown with pytest -s
    assert p.returncode != 0, text[-3000:]
    assert "signal 9" in text, text[-3000:]  # mpirun: "... exited on signal 9 (Killed)"
    assert "Traceback" not in text, text[-3000:]
    assert not (tmp_path / "run-image.fits").exists()
    assert_ranks_gone(launched, ended_after)
    r = run_or_dump([*mpirun, "--resume"], timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resuming after major cycle" in r.stderr, r.stderr[-3000:]
    assert_images_match_local_run(tmp_path, "run", args, env)


def assert_ranks_gone(launched: list[psutil.Process], ended_after: float) -> None:
    """Every process of ``launched`` (the job's ranks, taken before the kill) has ended (one
    second of grace after the launcher returned, for the reaping)."""
    time.sleep(1)
    alive = [q.pid for q in launched if q.is_running() and q.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"ranks still running {ended_after:.0f} s after the kill: {alive}"


def assert_images_match_local_run(tmp_path, name: str, args: list[str], env: dict) -> None:
    """Model, residual and restored images ``tmp_path/NAME-*.fits`` equal those of the same
    pipeline ``args`` on an undisturbed 2-worker local cluster, to 1e-6 of the peak."""
    ref = run_or_dump([PYTHON, "-m", "arl_mpi.pipeline", "--name", str(tmp_path / "ref"), *args, "--workers", "2"],
                      timeout=300, env=env, cwd=tmp_path)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    for kind in ("model", "residual", "image"):
        a = fits.getdata(tmp_path / f"ref-{kind}.fits").astype(np.float64)
        b = fits.getdata(tmp_path / f"{name}-{kind}.fits").astype(np.float64)
        peak = float(np.abs(a).max())
        assert peak > 0, kind
        assert float(np.abs(a - b).max()) <= 1e-6 * peak, kind
