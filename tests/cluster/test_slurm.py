"""A real single-node SLURM: the batch template, srun, and a failing job.

The daemons are started by the tests (tests/cluster/slurm_cluster.py) and stopped by PID; the
tests are skipped, with the reason, where SLURM cannot be started (no binaries, not root).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from helpers import PYTHON, REPO, SMALL, cli_env, run_or_dump, simulate_store
from slurm_cluster import SlurmCluster, SlurmUnavailable
from test_launchers import CYCLES, assert_images_match_local_run, assert_ranks_gone
from test_reliability import _rank_pids, kill_and_collect, start_until_checkpoint

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
    shutil.rmtree(root, ignore_errors=True)


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


def test_srun_worker_rank_killed_ends_step_then_resume(slurm, tmp_path):
    """``srun`` with the batch template's flags (``--mpi=pmi2 --kill-on-bad-exit=1``): worker
    rank 2 ``SIGKILL``ed once the first checkpoint exists. srun names the task, ends every rank
    of the step, exits non-zero; no traceback, no final image. The same srun command with
    ``--resume`` completes with the images of an undisturbed local-cluster run (1e-6 of the peak)."""
    env = {**cli_env(tmp_path), "SLURM_CONF": slurm.env["SLURM_CONF"], "PATH": slurm.env["PATH"]}
    store = simulate_store(tmp_path / "obs.store", ["--time-partitions", "2"])
    args = ["--vis", str(store), *CYCLES, "--interface", "lo"]
    srun = ["srun", "-n", "4", "--mpi=pmi2", "--kill-on-bad-exit=1", PYTHON, "-m", "arl_mpi.pipeline",
            "--name", str(tmp_path / "run"), *args]  # fmt: skip
    p, ck = start_until_checkpoint(srun, tmp_path, env)
    assert p.poll() is None and ck.exists(), "the run ended before its first checkpoint"
    steps = slurm.step_daemons()  # the tasks are children of slurmstepd, not of srun
    assert len(steps) == 1, steps
    launched = [q for q in steps[0].children(recursive=True) if "python" in q.name()]
    assert len(launched) == 4, launched
    victims = _rank_pids(2, steps[0].pid, "SLURM_PROCID")
    assert len(victims) == 1, victims
    t_kill = time.monotonic()
    out, err = kill_and_collect(p, victims[0], timeout=60)
    ended_after = time.monotonic() - t_kill
    text = out + err
    print(f"srun exit {p.returncode}, {ended_after:.1f} s after the kill")  # shown with pytest -s
    assert p.returncode != 0, text[-3000:]
    assert "task 2: Killed" in text, text[-3000:]  # srun: "error: NODE: task 2: Killed"
    assert "Traceback" not in text, text[-3000:]
    assert not (tmp_path / "run-image.fits").exists()
    assert_ranks_gone(launched, ended_after)
    r = run_or_dump([*srun, "--resume"], timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resuming after major cycle" in r.stderr, r.stderr[-3000:]
    assert_images_match_local_run(tmp_path, "run", args, env)
