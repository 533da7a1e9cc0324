"""External scheduler mode: the pipeline as a client of a Dask cluster someone else started.

A ``dask scheduler`` and two ``dask worker`` processes run on 127.0.0.1 with a scheduler
file (plain TCP: an external cluster brings its own security configuration, so the pipeline
runs with ``--no-tls``). The pipeline reaches it through ``ARL_DASK_SCHEDULER=host:port`` or
``ARL_DASK_SCHEDULER_FILE=path``; an unreachable scheduler is a one-line error (exit 2)
within ``--cluster-timeout``. The daemons are stopped by PID at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import PYTHON, REPO, SMALL, run_pipeline

NWORKERS = 2


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["DASK_TEMPORARY_DIRECTORY"] = str(tmp / "dask-scratch")
    for k in ("ARL_DASK_SCHEDULER", "ARL_DASK_SCHEDULER_FILE"):
        env.pop(k, None)
    return env


class DaskCluster:
    """``dask scheduler`` + ``dask worker`` subprocesses, each in its own process group."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sfile = root / "scheduler.json"
        self.env = _env(root)
        self.procs: list[subprocess.Popen] = []
        self.address = ""

    def _spawn(self, args: list[str], log: str) -> None:
        self.procs.append(
            subprocess.Popen(
                [PYTHON, "-m", *args],
                env=self.env,
                cwd=self.root,
                stdout=subprocess.DEVNULL,
                stderr=open(self.root / log, "w"),
                start_new_session=True,
            )
        )

    def start(self, timeout: float = 90) -> DaskCluster:
        self._spawn(
            [
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(self.sfile),
            ],
            "scheduler.log",
        )
        self._spawn(
            [
                "distributed.cli.dask_worker",
                "--scheduler-file",
                str(self.sfile),
                "--nthreads",
                "1",
                "--nworkers",
                str(NWORKERS),
                "--memory-limit",
                "1GB",
                "--local-directory",
                str(self.root / "worker-scratch"),
            ],
            "workers.log",
        )
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a Dask daemon exited: {self.logs()}")
            if self.sfile.exists():
                try:
                    self.address = json.loads(self.sfile.read_text())["address"]
                except (ValueError, KeyError):
                    pass
            if self.address and self.nworkers() >= NWORKERS:
                return self
            time.sleep(0.5)
        raise RuntimeError(f"external Dask cluster not up after {timeout:.0f} s: {self.logs()}")

    def nworkers(self) -> int:
        from distributed import Client

        try:
            with Client(self.address, timeout=5) as c:
                return len(c.scheduler_info()["workers"])
        except OSError:
            return 0

    def logs(self) -> str:
        return " | ".join(
            f.read_text(errors="replace")[-800:] for f in sorted(self.root.glob("*.log"))
        )

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("ext-dask")
    cluster = DaskCluster(root)
    try:
        cluster.start()
    except RuntimeError as e:
        cluster.stop()
        pytest.fail(str(e))
    yield cluster
    cluster.stop()
    assert all(p.poll() is not None for p in cluster.procs)


def check_outputs(prefix: Path) -> dict:
    for kind in ("dirty", "psf", "model", "residual", "image"):
        assert Path(f"{prefix}-{kind}.fits").is_file(), kind
    return json.loads(Path(f"{prefix}-summary.json").read_text())


@pytest.mark.parametrize("how", ["address", "file"])
def test_pipeline_on_external_scheduler(dask_cluster, tmp_path, how):
    env = _env(tmp_path)
    if how == "address":
        env["ARL_DASK_SCHEDULER"] = dask_cluster.address.removeprefix("tcp://")  # host:port
    else:
        env["ARL_DASK_SCHEDULER_FILE"] = str(dask_cluster.sfile)
    r = run_pipeline(tmp_path, "ext", ["--no-tls", *SMALL], env)
    assert r.returncode == 0, r.stderr[-3000:] + dask_cluster.logs()
    assert (
        f"connected to external scheduler {dask_cluster.address} with {NWORKERS} workers"
        in r.stderr
    )
    summary = check_outputs(tmp_path / "ext")
    assert summary["timings_s"]["total_s"] > 0
    # the built-in observation was simulated by the external workers into PREFIX-sim.store
    assert (tmp_path / "ext-sim.store" / "index.h5").is_file()
    # the pipeline closes only its client: the external cluster stays up for the next user
    assert dask_cluster.nworkers() == NWORKERS
    assert all(p.poll() is None for p in dask_cluster.procs)


def test_unreachable_scheduler_is_one_line_error(tmp_path):
    env = dict(_env(tmp_path), ARL_DASK_SCHEDULER="127.0.0.1:1")
    r = run_pipeline(tmp_path, "x", ["--cluster-timeout", "2", "--no-tls", *SMALL], env, timeout=120)
    dt = r.seconds
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1, r.stderr[-2000:]
    assert errors[0].startswith(
        "arl_mpi.pipeline: error: ARL_DASK_SCHEDULER=127.0.0.1:1: cannot reach"
    )
    assert "Traceback" not in r.stderr
    # 2 s cluster timeout + interpreter start-up and imports (slow on 2 shared cores)
    assert dt < 2 + 25, dt
    assert not (tmp_path / "x-image.fits").exists()


def test_missing_scheduler_file_is_one_line_error(tmp_path):
    env = dict(_env(tmp_path), ARL_DASK_SCHEDULER_FILE=str(tmp_path / "nope.json"))
    r = run_pipeline(tmp_path, "x", ["--cluster-timeout", "5", "--no-tls", *SMALL], env, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "ARL_DASK_SCHEDULER_FILE=" in r.stderr and "no such scheduler file" in r.stderr
    assert "Traceback" not in r.stderr
