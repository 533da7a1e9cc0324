"""The run's scratch directory: a per-run private one removed at the end, or the user's, kept."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

import pytest

from arl_mpi.cluster.scratch import RUN_PREFIX, named_scratch, run_scratch
from arl_mpi.cluster.settings import ClusterSettings

SCRATCH_ENV = ("ARL_SCRATCH", "SLURM_TMPDIR", "TMPDIR", "ARL_DASK_SCHEDULER",
               "ARL_DASK_SCHEDULER_FILE")  # fmt: skip


@pytest.fixture
def no_scratch_env(monkeypatch, tmp_path) -> Path:
    """No scratch named anywhere, cwd in tmp_path, and the system temp dir a fresh directory
    (returned) so that what is created and left there can be seen."""
    for k in SCRATCH_ENV:
        monkeypatch.delenv(k, raising=False)
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return systmp


def test_named_scratch_order(monkeypatch, tmp_path, no_scratch_env):
    assert named_scratch(ClusterSettings()) is None
    monkeypatch.setenv("TMPDIR", str(tmp_path / "t"))
    assert named_scratch(ClusterSettings()) == str(tmp_path / "t" / "arl-scratch")
    monkeypatch.setenv("SLURM_TMPDIR", str(tmp_path / "s"))
    assert named_scratch(ClusterSettings()) == str(tmp_path / "s" / "arl-scratch")
    monkeypatch.setenv("ARL_SCRATCH", str(tmp_path / "a"))
    assert named_scratch(ClusterSettings()) == str(tmp_path / "a")
    assert named_scratch(ClusterSettings(scratch=str(tmp_path / "flag"))) == str(tmp_path / "flag")
    assert (tmp_path / "flag").is_dir()


def test_per_run_scratch_private_and_removed(no_scratch_env):
    with pytest.raises(RuntimeError), run_scratch(ClusterSettings()) as d:
        p = Path(d)
        assert p.parent == no_scratch_env and p.name.startswith(RUN_PREFIX)
        assert stat.S_IMODE(p.stat().st_mode) == 0o700
        (p / "spill").mkdir()
        (p / "spill" / "x.bin").write_bytes(b"0" * 100)
        raise RuntimeError("the job failed")
    assert not p.exists()  # removed on an error too
    assert list(no_scratch_env.iterdir()) == []


def test_named_scratch_never_removed(tmp_path, no_scratch_env):
    mine = tmp_path / "mine"
    with run_scratch(ClusterSettings(scratch=str(mine))) as d:
        assert d == str(mine)
        (mine / "keep.txt").write_text("x")
    assert (mine / "keep.txt").is_file()


def test_local_run_leaves_no_scratch_behind(no_scratch_env):
    """A whole local-cluster run (1 worker, no TLS): the workers' directories are in the
    per-run scratch directory while it runs, and nothing is left in cwd or the temp dir."""
    from arl_mpi.cluster.runtime import run_with_client

    seen: dict[str, object] = {}

    def job(client) -> int:
        import dask

        seen["temp"] = dask.config.get("temporary-directory")
        seen["workers"] = list(client.run(lambda dask_worker: dask_worker.local_directory).values())
        seen["result"] = client.submit(sum, [1, 2], pure=False).result()
        return 0

    settings = ClusterSettings(workers=1, threads_per_worker=1, tls=False, dashboard=False,
                               cluster_timeout=60)  # fmt: skip
    assert run_with_client(job, settings) == 0
    assert seen["result"] == 3
    temp = Path(seen["temp"])
    assert temp.parent == no_scratch_env and temp.name.startswith(RUN_PREFIX), temp
    assert seen["workers"] and all(Path(w).is_relative_to(temp) for w in seen["workers"]), seen
    assert not temp.exists()
    import dask

    assert dask.config.get("temporary-directory") != str(temp)  # restored after the run
    assert list(no_scratch_env.iterdir()) == []
    assert list(Path.cwd().iterdir()) == []  # no ./arl-scratch, no dask-scratch-space
