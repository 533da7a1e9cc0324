"""Scale-out behaviour of the continuum pipeline, end to end on a local cluster:
one shard per worker (tasks per cycle follow the workers, not the partitions), the same
images as one task per partition, memory admission (switch to streaming, or refuse)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from helpers import cli_env, run_pipeline, simulate_store

FLAGS = ["--size", "128", "128", "--scale", "120asec", "--niter", "200", "--mgain", "0.8", "--no-dashboard",
         "--no-png", "--no-tls", "--workers", "2", "--threads-per-worker", "1"]


@pytest.fixture(scope="module")
def store8(tmp_path_factory):
    """The built-in observation as 8 time partitions."""
    flags = ["--time-partitions", "8", "--sim-ntimes", "16"]
    return simulate_store(tmp_path_factory.mktemp("sim8") / "obs.store", flags)


@pytest.fixture(scope="module")
def w2(tmp_path_factory, store8):
    """The plain run on ``store8`` (FLAGS: 2 workers, resident shards), ``w2-*`` in the returned
    directory: the reference of the worker-count and of the memory-admission comparisons."""
    d = tmp_path_factory.mktemp("w2")
    r = run_pipeline(d, "w2", [*FLAGS, "--vis", str(store8)], cli_env(d))
    assert r.returncode == 0, r.stderr[-3000:]
    return d


def _plane(path: Path) -> np.ndarray:
    return fits.getdata(path)[0, 0].astype(np.float64)


def _workers(flags: list[str], n: int) -> list[str]:
    out = list(flags)
    out[out.index("--workers") + 1] = str(n)
    return out


def test_worker_shards_independent_of_workers_and_match_partition_tasks(tmp_path, store8, env_cli, w2):
    """One gridding task per worker over its chunks: the same images (to 1e-6 of each image's
    own peak) with 1, 2 and 3 workers, since the chunk plan does not depend on the workers; and
    the images of one task per partition (other ducc0 calls) to 1e-6 of the dirty peak."""
    runs = {"w2": json.loads((w2 / "w2-summary.json").read_text())}
    for name, extra, nw in (("w1", [], 1), ("w3", [], 3), ("p", ["--shards", "partition"], 2)):
        r = run_pipeline(tmp_path, name, [*_workers(FLAGS, nw), "--vis", str(store8), *extra], env_cli)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = json.loads((tmp_path / f"{name}-summary.json").read_text())
    s1, s2 = runs["w2"], runs["p"]
    assert s1["partitions"] == s2["partitions"] == 8
    assert s1["per_cycle"]["chunks"] >= 3 and [runs[k]["shards"] for k in ("w1", "w2", "w3")] == [1, 2, 3]
    assert s1["per_cycle"]["gridding_tasks"] == 2 and s2["per_cycle"]["gridding_tasks"] == 8
    # every cycle's gridding ran where the shards sit: one task on each worker (no shard moved)
    assert s1["cycles"] and all(c["gridding_tasks_per_worker"] == [1, 1] for c in s1["cycles"]), s1["cycles"]
    image_bytes = 128 * 128 * 8
    assert s1["per_cycle"]["partial_image_bytes_up"] == 2 * image_bytes
    assert s2["per_cycle"]["partial_image_bytes_up"] == 8 * image_bytes
    assert s1["memory"]["mode"] == "resident" and not s1["memory"]["switched_to_stream"]
    dirty_peak = np.abs(_plane(w2 / "w2-dirty.fits")).max()
    for kind in ("dirty", "model", "residual", "image"):
        a = _plane(w2 / f"w2-{kind}.fits")
        for other in ("w1", "w3"):
            d = np.abs(_plane(tmp_path / f"{other}-{kind}.fits") - a).max()
            assert d <= 1e-6 * np.abs(a).max(), (kind, other, d / np.abs(a).max())
        d = np.abs(_plane(tmp_path / f"p-{kind}.fits") - a).max()
        assert d <= 1e-6 * dirty_peak, (kind, "partition", d / dirty_peak)


def test_memory_admission_streams_or_refuses(tmp_path, store8, env_cli, w2):
    """A memory limit the resident shards would not fit: auto switches to streaming (same
    images, said in the log and the summary); --memory-check refuse ends in one line, exit 2.
    The reference (no memory limit) is the module's plain ``w2`` run."""
    s0 = json.loads((w2 / "w2-summary.json").read_text())
    m = s0["memory"]
    process, resident, stream = m["worker_process_bytes"], m["worker_resident_estimate_bytes"], \
        m["worker_stream_estimate_bytes"]
    assert 0 < stream < resident and process > 0
    # a limit whose target fraction (60%) leaves less than the resident shard beside the
    # process, but whose pause fraction (80%) leaves room for a streamed batch
    lo, hi = (process + 1.5 * stream) / 0.8, (process + resident) / 0.6
    assert lo < hi
    limit = ["--memory-limit", f"{int((lo + hi) / 2 / 2**20)}MiB", "--cluster-timeout", "60"]
    r1 = run_pipeline(tmp_path, "auto", [*FLAGS, "--vis", str(store8), *limit], env_cli)
    s1 = r1.summary
    assert r1.returncode == 0, r1.stderr[-3000:]
    assert s1["memory"]["switched_to_stream"] and s1["memory"]["mode"] == "stream"
    assert s1["memory"]["worker_budget_bytes"] < resident
    assert "streaming the shards from the store instead" in r1.stderr
    for kind in ("model", "image"):
        a, b = _plane(w2 / f"w2-{kind}.fits"), _plane(tmp_path / f"auto-{kind}.fits")
        assert np.abs(a - b).max() <= 1e-6 * np.abs(a).max(), kind
    r2 = run_pipeline(tmp_path, "refuse", [*FLAGS, "--vis", str(store8), *limit, "--memory-check", "refuse"], env_cli)
    s2 = r2.summary
    assert r2.returncode == 2 and s2 is None
    err = [ln for ln in r2.stderr.strip().splitlines() if "error" in ln]
    assert len(err) == 1 and "memory-check:" in err[0] and "--memory-limit" in err[0] and "MiB" in err[0], r2.stderr
    assert not list(tmp_path.glob("refuse-*.fits"))


def test_parallel_deconvolution_on_workers_matches_driver(tmp_path, store8, env_cli):
    """--parallel-deconvolution 64 on a 128^2 image: four sub-images cleaned as tasks on the
    workers give the sources of the driver's minor cycle within 1% (restored peaks) and the
    same total model flux within 1%; the summary says where the minor cycle ran."""
    flags = ["--vis", str(store8), "--niter", "400", "--auto-threshold", "3"]
    r1 = run_pipeline(tmp_path, "drv", [*FLAGS, *flags], env_cli)
    s1 = r1.summary
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = run_pipeline(tmp_path, "par", [*FLAGS, *flags, "--parallel-deconvolution", "64"], env_cli)
    s2 = r2.summary
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert s1["minor_cycle"]["where"] == "driver" and s2["minor_cycle"]["where"] == "workers"
    boxes = s2["minor_cycle"]["subimages"]
    assert sorted(map(tuple, boxes)) == [(0, 64, 0, 64), (0, 64, 64, 128), (64, 128, 0, 64), (64, 128, 64, 128)]
    f1, f2 = s1["final"]["model_flux"], s2["final"]["model_flux"]
    assert abs(f2 - f1) <= 0.01 * abs(f1)
    img1, img2 = _plane(tmp_path / "drv-image.fits"), _plane(tmp_path / "par-image.fits")
    # the sources: local maxima of the driver's restored image above 10% of its peak
    from scipy.ndimage import maximum_filter

    peaks = np.argwhere((img1 == maximum_filter(img1, size=9)) & (img1 > 0.1 * img1.max()))
    assert len(peaks) >= 3
    for y, x in peaks:
        assert abs(img2[y, x] - img1[y, x]) <= 0.01 * img1[y, x], (y, x, img1[y, x], img2[y, x])


@pytest.mark.mpi
@pytest.mark.slow
def test_34_ranks_on_a_small_machine(tmp_path, store8, env_cli):
    """mpiexec -n 34 (32 workers, oversubscribed) starts, images and exits 0; every worker
    registered; the summary counts them; no rank outlives the job. It images the module's
    8-partition store (the built-in observation, simulated once for the module) rather than
    simulating it again on the 32 workers (the workers' simulation under mpiexec is covered by
    tests/cluster/test_security.py and the external-scheduler tests)."""
    flags = ["--vis", str(store8), "--size", "64", "64", "--scale", "240asec", "--niter", "20",
             "--no-dashboard", "--no-png", "--no-checkpoint", "--cluster-timeout", "240"]  # fmt: skip
    r = run_pipeline(tmp_path, "many", flags, env_cli, mpi_ranks=34, timeout=420)
    assert r.returncode == 0, r.stderr[-4000:]
    s = json.loads((tmp_path / "many-summary.json").read_text())
    assert s["workers"] == 32 and s["partitions"] == 8
    assert 1 <= s["shards"] <= 8 and s["total_iterations"] > 0
    assert (tmp_path / "many-image.fits").exists()
