"""``--dask-report``: Dask's performance report of the whole run as PREFIX-dask-report.html."""

from __future__ import annotations

import pytest
from helpers import run_pipeline

from arl_mpi.pipeline.outputs import dask_report, dask_report_path


def _leftovers(directory) -> list[str]:
    """Temporary names of atomic writes left behind."""
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name]


def test_dask_report_of_a_continuum_run(tmp_path, env_cli):
    from arl_mpi.simulation.builtin import SimulationSettings
    from arl_mpi.simulation.writer import write_simulated_store

    store = tmp_path / "tiny.store"
    write_simulated_store(store, SimulationSettings(rmax_m=200, ntimes=8, nchan=2, nsources=3), 2, 1)
    r = run_pipeline(tmp_path, "rep", ["--vis", store, "--size", "128", "128", "--scale", "120asec", "--niter", "50",
                                       "--mgain", "0.8", "--workers", "1", "--threads-per-worker", "1",
                                       "--no-dashboard", "--no-png", "--no-checkpoint", "--dask-report"],
                     env_cli, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    path = tmp_path / "rep-dask-report.html"
    # the summary points to the report, which is a complete HTML page
    assert r.summary["dask_report"] == str(path)
    html = path.read_text()
    assert html.lstrip().startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<title>Dask Performance Report</title>" in html
    # it covers the whole run: loading the shards, the PSF, the dirty and residual images
    for task in ("load_shard", "counts_shard", "psf_shard", "invert_shard"):
        assert f'"{task}' in html, task
    # self-contained (BokehJS inlined): it opens on a machine without network access
    assert "cdn.bokeh.org" not in html
    assert _leftovers(tmp_path) == []


def test_dask_report_off_or_failed_run_writes_nothing(tmp_path):
    from distributed import Client, LocalCluster

    prefix = str(tmp_path / "x")
    with dask_report(prefix, False) as rep:
        pass
    assert rep["path"] is None and not dask_report_path(prefix).exists()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                      local_directory=str(tmp_path / "scratch")) as cluster, Client(cluster) as client:
        with pytest.raises(RuntimeError, match="pipeline failed"), dask_report(prefix, True) as rep:
            client.submit(sum, [1, 2], key="partial-sum").result()
            raise RuntimeError("pipeline failed")
        assert rep["path"] is None and not dask_report_path(prefix).exists()
        with dask_report(prefix, True) as rep:
            assert client.submit(sum, [1, 2], key="whole-sum").result() == 3
    assert rep["path"] == str(dask_report_path(prefix))
    assert '"whole-sum' in dask_report_path(prefix).read_text()
    assert _leftovers(tmp_path) == []
