"""End-to-end continuum pipeline: under mpiexec, on a local cluster, on an external scheduler.

The built-in simulated observation carries its true sky in the store's provenance, so the
recovered model is checked against the injected sources (positions and fluxes), and the
runs with different numbers of workers / runtimes are checked to agree to 1e-6 of the peak.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from helpers import PYTHON, cli_env, run_pipeline, simulate_store

from arl_mpi.io.store import open_store

ARGS = ["--size", "256", "256", "--scale", "60asec", "--niter", "1000", "--mgain", "0.8", "--auto-threshold", "3",
        "--no-dashboard", "--no-png", "--weight", "briggs", "0"]


@pytest.fixture(scope="module")
def sim_store(tmp_path_factory):
    """The built-in observation, simulated once with 4 time partitions."""
    return simulate_store(tmp_path_factory.mktemp("sim") / "obs.store", ["--time-partitions", "4"])


@pytest.fixture(scope="module")
def mpi_w2(tmp_path_factory, sim_store):
    """``mpiexec -n 4`` (2 workers) on ``sim_store``: ``w2-*`` in the returned directory, and
    the finished run. Checked against the injected sources, and one of the runtimes that must
    agree to 1e-6."""
    d = tmp_path_factory.mktemp("mpi-w2")
    r = run_pipeline(d, "w2", [*ARGS, "--vis", str(sim_store)], cli_env(d), mpi_ranks=4)
    assert r.returncode == 0, r.stderr[-3000:]
    return d, r


@pytest.fixture(scope="module")
def on_scheduler_file(tmp_path_factory, sim_store):
    """An external cluster (``dask scheduler --scheduler-file`` + ``dask worker --nworkers 2``)
    reached through ``ARL_DASK_SCHEDULER_FILE``: the run ``file`` and the same run with
    ``--stream``, ``file-*`` / ``stream-*`` in the returned directory. The daemons are stopped
    before the fixture returns. Returns (directory, file run, stream run)."""
    d = tmp_path_factory.mktemp("sched-file")
    env_cli = cli_env(d)
    sfile = d / "scheduler.json"
    procs = [subprocess.Popen([PYTHON, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sfile)],
                              env=env_cli, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        t_end = time.monotonic() + 60
        while not sfile.exists() and time.monotonic() < t_end:
            time.sleep(0.1)
        procs.append(subprocess.Popen([PYTHON, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sfile),
                                       "--nthreads", "1", "--nworkers", "2"], env=env_cli, cwd=d,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        env = dict(env_cli, ARL_DASK_SCHEDULER_FILE=str(sfile))
        r_file = run_pipeline(d, "file", [*ARGS, "--vis", str(sim_store), "--no-tls"], env)
        assert r_file.returncode == 0, r_file.stderr[-3000:]
        r_stream = run_pipeline(d, "stream", [*ARGS, "--vis", str(sim_store), "--no-tls", "--stream"], env)
        assert r_stream.returncode == 0, r_stream.stderr[-3000:]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    return d, r_file, r_stream


def true_sources(store: Path) -> list[tuple[float, float, float]]:
    """(ra_deg, dec_deg, mean flux over the band in Jy) of the injected sources."""
    idx = open_store(store)
    f = idx.meta.frequency
    return [(c["ra_deg"], c["dec_deg"], float(np.mean(c["flux_jy"] * (f / c["ref_freq_hz"]) ** c["spectral_index"])))
            for c in idx.meta.provenance["components"]]


def read_plane(path: Path) -> np.ndarray:
    return fits.getdata(path)[0, 0].astype(np.float64)


@pytest.mark.mpi
def test_mpiexec_pipeline_recovers_sources(sim_store, mpi_w2):
    d, r = mpi_w2
    for kind in ("dirty", "psf", "model", "residual", "image"):
        assert (d / f"w2-{kind}.fits").is_file()
    summary = json.loads((d / "w2-summary.json").read_text())
    assert summary["workers"] == 2 and summary["cycles"], summary
    hdr = fits.getheader(d / "w2-image.fits")
    assert hdr["CTYPE1"] == "RA---SIN" and hdr["CTYPE2"] == "DEC--SIN" and hdr["CTYPE3"] == "FREQ"
    assert hdr["BUNIT"] == "JY/BEAM" and hdr["BMAJ"] > 0
    model = read_plane(d / "w2-model.fits")
    wcs = WCS(fits.getheader(d / "w2-model.fits")).celestial
    src = true_sources(sim_store)
    pix = np.array([wcs.world_to_pixel_values(ra, dec) for ra, dec, _ in src])
    ys, xs = np.nonzero(model)
    # each clean component belongs to its nearest injected source; it must lie within 1.5 pixels
    dist = np.hypot(xs[:, None] - pix[None, :, 0], ys[:, None] - pix[None, :, 1])
    owner = np.argmin(dist, axis=1)
    for k, (ra, dec, flux) in enumerate(src):
        mine = owner == k
        got = model[ys[mine], xs[mine]].sum()
        # every injected source (>= 0.3 Jy; noise ~1 mJy/beam) is recovered within 3%
        assert got == pytest.approx(flux, rel=0.03), (ra, dec, flux, got)
        cy = np.sum(model[ys[mine], xs[mine]] * ys[mine]) / got
        cx = np.sum(model[ys[mine], xs[mine]] * xs[mine]) / got
        assert np.hypot(cx - pix[k, 0], cy - pix[k, 1]) < 0.5, (ra, dec, cx, cy, pix[k])
    assert model.sum() == pytest.approx(sum(s[2] for s in src), rel=0.02)
    # rank roles are visible in the log, and Dask's shutdown noise is not
    assert "[rank 1 driver]" in r.stderr and "CommClosedError" not in r.stderr


@pytest.mark.mpi
def test_same_images_any_runtime(tmp_path, sim_store, env_cli, mpi_w2, on_scheduler_file):
    """1 worker, 2 workers (both under mpiexec), a local cluster and an external scheduler
    (the module's scheduler-file cluster) agree to 1e-6 of the peak."""
    r = run_pipeline(tmp_path, "w1", [*ARGS, "--vis", str(sim_store)], env_cli, mpi_ranks=3)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_pipeline(tmp_path, "local", [*ARGS, "--vis", str(sim_store), "--workers", "2"], env_cli)
    assert r.returncode == 0, r.stderr[-3000:]
    others = {"w2": mpi_w2[0] / "w2", "local": tmp_path / "local", "ext": on_scheduler_file[0] / "file"}
    for kind in ("dirty", "model", "residual", "image"):
        ref = read_plane(tmp_path / f"w1-{kind}.fits")
        peak = np.abs(ref).max()
        for other, prefix in others.items():
            diff = np.abs(read_plane(Path(f"{prefix}-{kind}.fits")) - ref).max()
            assert diff <= 1e-6 * peak, (kind, other, diff / peak)


@pytest.mark.mpi
@pytest.mark.parametrize("case", ["missing", "corrupt"])
def test_failure_ends_every_rank_quickly(tmp_path, sim_store, env_cli, case):
    if case == "missing":
        vis, expect = tmp_path / "nope.store", "no such visibility store"
    else:
        import shutil

        vis = tmp_path / "bad.store"
        shutil.copytree(sim_store, vis)
        part = vis / "partitions" / "t0002-f0000.h5"
        part.chmod(0o644)
        raw = bytearray(part.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        part.write_bytes(bytes(raw))
        expect = "t0002-f0000"
    r = run_pipeline(tmp_path, "fail", [*ARGS, "--vis", str(vis)], env_cli, mpi_ranks=4, timeout=120)
    dt = r.seconds
    assert r.returncode != 0
    assert dt < 30, dt
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("arl_mpi.pipeline: error:")]
    assert len(errors) == 1 and expect in errors[0], r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "fail-image.fits").exists()


def test_bad_flag_one_line_error(tmp_path, env_cli):
    r = run_pipeline(tmp_path, "x", [*ARGS, "--size", "101", "100"], env_cli)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("arl_mpi.pipeline: error: size: x size 101 must be even")
    r = run_pipeline(tmp_path, "x", [*ARGS, "--weight", "briggs", "3"], env_cli)
    assert r.returncode == 2 and "outside [-2, 2]" in r.stderr


def test_config_file_same_as_flags(tmp_path):
    from arl_mpi.pipeline.settings import settings_from_args

    cfg = tmp_path / "c.toml"
    cfg.write_text('size = [256, 128]\nscale = "30asec"\nweight = "briggs -0.5"\nniter = 50\nauto-threshold = 3\n')
    a = settings_from_args(["--config", str(cfg)])
    b = settings_from_args(["--size", "256", "128", "--scale", "30asec", "--weight", "briggs", "-0.5", "--niter", "50",
                            "--auto-threshold", "3"])
    assert a.image_settings() == b.image_settings()
    assert a.cell_rad == pytest.approx(np.deg2rad(30 / 3600))
    # flags override the file
    assert settings_from_args(["--config", str(cfg), "--niter", "7"]).niter == 7
    cfg.write_text("sise = [256, 256]\n")
    from arl_mpi.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown setting 'sise'"):
        settings_from_args(["--config", str(cfg)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))


def test_scheduler_file_and_stream_mode(on_scheduler_file):
    """ARL_DASK_SCHEDULER_FILE names an existing cluster; --stream gives the same images."""
    d, r_file, r_stream = on_scheduler_file
    assert "connected to external scheduler" in r_file.stderr
    assert "connected to external scheduler" in r_stream.stderr
    for kind in ("dirty", "image"):
        a, b = read_plane(d / f"file-{kind}.fits"), read_plane(d / f"stream-{kind}.fits")
        assert np.abs(a - b).max() <= 1e-6 * np.abs(a).max()
