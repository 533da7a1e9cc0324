"""A real single-node SLURM: the batch template, srun, and a failing job.

The daemons are started by the tests (tests/cluster/slurm_cluster.py) and stopped by PID; the
tests are skipped, with the reason, where SLURM cannot be started (no binaries, not root).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from helpers import PYTHON, REPO, SMALL, run_or_dump
from slurm_cluster import SlurmCluster, SlurmUnavailable

pytestmark = [pytest.mark.mpi, pytest.mark.slurm]

# Batch jobs ask for 1 GB per CPU so that they fit the node's RealMemory (80 % of this
# machine's) on small CI machines too.
SBATCH = ["--mem-per-cpu=1G"]


@pytest.fixture(scope="session")
def slurm():
    root = Path(tempfile.mkdtemp(prefix="arl-slurm-"))
    cluster = SlurmCluster(root)
    try:
        cluster.start()
    except (SlurmUnavailable, OSError) as e:
        pytest.skip(f"cannot start a SLURM cluster here: {e}")
    cluster.env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{cluster.env['PATH']}"
    cluster.env["PYTHONPATH"] = str(REPO)
    yield cluster
    cluster.stop()


def batch_env(tmp_path: Path) -> dict[str, str]:
    """What the batch template reads: the venv, the output directory (under ``tmp_path``,
    made readable to SLURM) and the checkout."""
    os.chmod(tmp_path, 0o755)
    return {
        "ARL_VENV": str(Path(PYTHON).parent.parent),
        "ARL_OUTPUT": str(tmp_path / "out"),
        "ARL_HOME": str(REPO),
    }


def test_sbatch_template_completes(slurm, tmp_path):
    env = batch_env(tmp_path)
    r = slurm.sbatch_wait(
        [*SBATCH, str(REPO / "launch/slurm/arl_mpi.sbatch"), *SMALL],
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    job = r.stdout.strip().split(";")[0]
    state = slurm.job_state(job)
    log = "".join(p.read_text() for p in tmp_path.glob("arl_mpi-*.err"))
    assert r.returncode == 0, (r.stderr, log[-3000:])
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", (state, log[-3000:])
    for kind in ("dirty", "psf", "model", "residual", "image"):
        assert (tmp_path / "out" / f"image-{kind}.fits").is_file()
    out = "".join(p.read_text() for p in tmp_path.glob("arl_mpi-*.out"))
    assert "ssh -N -L 8787:localhost:8787" in out
    # --memory-limit per worker = 80 % of mem-per-cpu x cpus-per-task; threads = cpus-per-task
    assert "worker memory: 819MB" in out and "4 tasks x 1 cpus" in out


def test_srun_pipeline(slurm, tmp_path):
    r = run_or_dump(
        [
            "srun",
            "-n",
            "4",
            "--mpi=pmi2",
            PYTHON,
            "-m",
            "arl_mpi.pipeline",
            "--name",
            str(tmp_path / "s"),
            *SMALL,
        ],
        cwd=tmp_path,
        env=slurm.env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "s-image.fits").is_file()
    assert "[rank 1 driver]" in r.stderr and "2 workers" in r.stderr


def test_failing_job_ends_failed_quickly(slurm, tmp_path):
    env = batch_env(tmp_path)
    t0 = time.monotonic()
    r = slurm.sbatch_wait(
        [
            *SBATCH,
            "--time=10",
            str(REPO / "launch/slurm/arl_mpi.sbatch"),
            "--vis",
            str(tmp_path / "missing.store"),
            *SMALL,
        ],
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    elapsed = time.monotonic() - t0
    job = r.stdout.strip().split(";")[0]
    state = slurm.job_state(job)
    assert r.returncode != 0
    assert state["JobState"] == "FAILED" and state["ExitCode"] != "0:0", state
    assert elapsed < 60, elapsed  # far from the 10-minute limit
    err = "".join(p.read_text() for p in tmp_path.glob("arl_mpi-*.err"))
    assert "no such visibility store" in err
