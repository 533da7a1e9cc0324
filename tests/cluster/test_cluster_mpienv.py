"""MPI launch detection, cores per rank and thread pinning (arl_mpi.mpienv), in one place."""

from __future__ import annotations

import os

import pytest
from helpers import REPO

from arl_mpi import mpienv


@pytest.fixture
def clean_env(monkeypatch):
    for k in (*mpienv.MPI_LAUNCH_VARS, *mpienv.SLURM_TASK_VARS, *mpienv.CORES_VARS,
              *mpienv.THREAD_VARS):  # fmt: skip
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


@pytest.mark.parametrize("var", mpienv.MPI_LAUNCH_VARS)
def test_each_launcher_variable_detected(clean_env, var):
    assert not mpienv.launched_by_mpi()
    clean_env.setenv(var, "0")
    assert mpienv.launched_by_mpi()


def test_slurm_task_alone_is_not_an_mpi_launch(clean_env):
    clean_env.setenv("SLURM_PROCID", "0")
    assert not mpienv.launched_by_mpi()
    assert mpienv.mpi_rank_size() == (0, 1)


def test_cores_per_rank_order(clean_env):
    assert mpienv.cores_per_rank() == 1
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert mpienv.cores_per_rank() == 3
    clean_env.setenv("ARL_THREADS", "junk")  # not a positive integer: skipped
    assert mpienv.cores_per_rank() == 3
    clean_env.setenv("SLURM_CPUS_PER_TASK", "8")
    assert mpienv.cores_per_rank() == 8


def test_pinning_only_under_a_launcher_and_keeps_user_values(clean_env):
    assert mpienv.pin_threads_for_launch() is False
    assert not any(k in os.environ for k in mpienv.THREAD_VARS)
    clean_env.setenv("PMI_RANK", "2")
    clean_env.setenv("SLURM_CPUS_PER_TASK", "4")
    clean_env.setenv("MKL_NUM_THREADS", "2")  # set by the user: kept
    assert mpienv.pin_threads_for_launch() is True
    assert {k: os.environ[k] for k in mpienv.THREAD_VARS} == {
        "OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "4", "MKL_NUM_THREADS": "2",
        "NUMEXPR_NUM_THREADS": "4", "DUCC0_NUM_THREADS": "4",
    }  # fmt: skip
    mpienv.pin_numeric_threads(1)  # the cluster's explicit pinning overrides
    assert all(os.environ[k] == "1" for k in mpienv.THREAD_VARS)


def test_mpienv_is_the_bottom_layer():
    """Module level, mpienv imports only the standard library (nothing of arl_mpi, no numpy,
    no mpi4py), so ``arl_mpi/__init__.py`` can use it before numpy is first imported."""
    import ast

    tree = ast.parse((REPO / "arl_mpi" / "mpienv.py").read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add((node.module or "").split(".")[0])
    assert top <= {"__future__", "os", "collections"}, top


POOL_SCRIPT = """
import json, sys
import ducc0  # imported before the cluster starts, as a user's script may
from arl_mpi.cluster.runtime import run_with_client
from arl_mpi.cluster.settings import ClusterSettings
from arl_mpi.pipeline.common import worker_threads

def http_hosts(dask_worker):
    return sorted({s.getsockname()[0] for s in dask_worker.http_server._sockets.values()})

def job(client):
    print("POOLS " + json.dumps(worker_threads(client)), flush=True)
    print("HTTP " + json.dumps(sorted({h for v in client.run(http_hosts).values() for h in v})), flush=True)
    return 0

g = int(sys.argv[1])
sys.exit(run_with_client(job, ClusterSettings(threads_per_worker=1, gridder_threads=g, tls=False,
                                              dashboard=False, cluster_timeout=60)))
"""


@pytest.mark.mpi
def test_gridder_threads_not_capped_by_threads_per_worker(tmp_path):
    """Under mpiexec the worker's ducc0 pool (which caps every call's nthreads) holds
    threads-per-worker x gridder-threads; it was once pinned to threads-per-worker alone, so
    --gridder-threads 2 with one Dask thread ran on one core. And the worker's HTTP server
    (/health, /metrics) listens on loopback only (Dask binds every interface otherwise)."""
    import json

    import ducc0
    from helpers import MPIEXEC, PYTHON, run_or_dump

    want = min(2, ducc0.misc.available_hardware_threads())
    env = {k: v for k, v in os.environ.items() if k not in mpienv.THREAD_VARS}
    env["PYTHONPATH"] = str(REPO)
    for g, expect in ((1, 1), (2, want)):
        r = run_or_dump([MPIEXEC, "-n", "3", PYTHON, "-c", POOL_SCRIPT, str(g)], timeout=120, env=env,
                        cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith("POOLS "))
        pools = json.loads(line[6:])
        assert [w["threads"] for w in pools.values()] == [1], pools
        assert [w["ducc0_pool"] for w in pools.values()] == [expect], (g, pools)
        http = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("HTTP "))[5:])
        assert http == ["127.0.0.1"], http


def test_gridder_threads_0_is_the_workers_threads(tmp_path):
    """--gridder-threads 0 is the workers' threads: a local cluster of one worker x 2 threads
    grids with 2 ducc0 threads per call in a ducc0 pool of 2 (the nanny's OMP_NUM_THREADS=1
    once sized it 1, so the one gridding task per worker ran on one core whatever was asked:
    docs/performance.md section 0.1)."""
    import json
    import subprocess

    import ducc0
    from helpers import PYTHON, SMALL

    want = min(2, ducc0.misc.available_hardware_threads())
    env = {k: v for k, v in os.environ.items() if k not in mpienv.THREAD_VARS}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([PYTHON, "-m", "arl_mpi.pipeline", "--name", "x", *SMALL, "--workers", "1",
                        "--threads-per-worker", "2", "--gridder-threads", "0", "--no-tls"],
                       cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=180)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "x-summary.json").read_text())
    assert summary["settings"]["gridder_threads"] == 2, summary["settings"]
    assert [w["ducc0_pool"] for w in summary["worker_threads"].values()] == [want], summary["worker_threads"]
    assert "gridding with 2 ducc0 thread(s) per task" in r.stderr
