"""The site's MPI: mpi4py built against Debian's Open MPI, the pipeline launched by its ``mpirun``.

What an HPC user does instead of ``make install`` (README, "The site's MPI"): a venv without
the ``mpich`` wheel, ``MPICC=mpicc pip install --no-binary=mpi4py mpi4py``, and the site's own
launcher. Here the venv (cached under ``~/.cache/arl_mpi/site-mpi/``, keyed by the Python,
the Open MPI version and the mpi4py requirement; built once, ~1-2 min, with ``-O0`` to keep
the compile short) holds only that mpi4py: a ``.pth`` line adds this checkout's ``.venv``
site-packages *after* its own, so every other dependency comes from there while ``import
mpi4py`` finds the Open MPI build first. Then, with ``/usr/bin/mpirun`` (Open MPI's, not the
wheel's):

* a run on a small simulated store completes and its images equal those of the same run on a
  local cluster (no MPI) to 1e-6 of the peak;
* a run with a missing store ends on every rank with one ``error:`` line and exit 2.

Skipped, saying why, where Open MPI (``openmpi-bin libopenmpi-dev``, installed by ``.ci/run``)
is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from helpers import PYTHON, REPO, SMALL, cli_env, run_or_dump, simulate_store

pytestmark = [pytest.mark.mpi]

MPIRUN = "/usr/bin/mpirun"
MPICC = "/usr/bin/mpicc"
MPI4PY = "mpi4py>=4.0"
KINDS = ("dirty", "psf", "model", "residual", "image")
RTOL = 1e-6  # of the reference image's peak
MPIRUN_ARGS = ["--allow-run-as-root", "--oversubscribe", "-n", "4",
               # no CMA single-copy in containers; only shared memory and loopback TCP
               "--mca", "btl_vader_single_copy_mechanism", "none", "--mca", "btl", "self,vader,tcp"]  # fmt: skip


def _open_mpi_version() -> str | None:
    """``mpicc --showme:version`` of Debian's Open MPI, or None when it is not installed."""
    if not (Path(MPIRUN).exists() and Path(MPICC).exists()):
        return None
    r = subprocess.run([MPICC, "--showme:version"], capture_output=True, text=True, timeout=30)
    text = (r.stdout + r.stderr).strip()
    return text if r.returncode == 0 and "Open MPI" in text else None


def _build_venv(target: Path) -> None:
    """A venv at ``target`` whose own site-packages holds mpi4py built against Open MPI (made
    in a temporary directory beside it and renamed, so a half-built one is never used)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=target.parent))
    try:
        subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True, timeout=120)
        vpy = tmp / "venv" / "bin" / "python"
        env = dict(os.environ, MPICC=MPICC, CFLAGS="-O0 -g0")
        r = subprocess.run([PYTHON, "-m", "pip", "--python", str(vpy), "install", "--quiet", "--no-cache-dir",
                            "--no-binary=mpi4py", MPI4PY], env=env, capture_output=True, text=True,
                           timeout=900)  # fmt: skip
        if r.returncode != 0:
            pytest.fail(f"building mpi4py against Open MPI failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        site = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True, timeout=60).stdout.strip()  # fmt: skip
        main_site = sysconfig.get_paths()["purelib"]  # this checkout's .venv: everything but mpi4py
        (Path(site) / "zz_arl_main_venv.pth").write_text(f"import site; site.addsitedir({main_site!r})\n")
        try:
            os.rename(tmp / "venv", target)
        except OSError:  # another session built it meanwhile
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def site_python() -> str:
    """The interpreter of the cached Open-MPI venv (built on first use)."""
    version = _open_mpi_version()
    if version is None:
        pytest.skip(f"Open MPI not installed ({MPIRUN}, {MPICC}; Debian: apt-get install openmpi-bin "
                    "libopenmpi-dev)")
    key = hashlib.sha256(f"{sys.version}|{sys.prefix}|{version}|{MPI4PY}".encode()).hexdigest()[:16]
    target = Path.home() / ".cache" / "arl_mpi" / "site-mpi" / key / "venv"
    vpy = target / "bin" / "python"
    if not vpy.exists():
        _build_venv(target)
    return str(vpy)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    return simulate_store(tmp_path_factory.mktemp("sitempi") / "obs.store", ["--time-partitions", "2"])


def test_mpi4py_is_the_open_mpi_build(site_python, tmp_path):
    """The venv's mpi4py is the Open MPI build (the check the README gives users), under
    Open MPI's mpirun every rank sees a world of 4, and the wheel's mpiexec is not used."""
    code = ("import json, mpi4py; from mpi4py import MPI; c = MPI.COMM_WORLD; "
            "rows = c.gather([c.Get_rank(), c.Get_size(), mpi4py.__file__, MPI.Get_library_version()]); "
            "print(json.dumps(rows)) if c.Get_rank() == 0 else None")
    r = run_or_dump([MPIRUN, *MPIRUN_ARGS, site_python, "-c", code], timeout=120, env=cli_env(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout.strip().splitlines()[-1])
    assert [row[:2] for row in rows] == [[i, 4] for i in range(4)], r.stdout
    for row in rows:
        assert row[2].startswith(str(Path(site_python).parent.parent)), row  # not this checkout's .venv
        assert row[3].startswith("Open MPI v"), row


def test_pipeline_under_site_mpirun(site_python, small_store, tmp_path):
    """The pipeline under Open MPI's mpirun gives the images of a local-cluster run; a missing
    store ends every rank with one line and exit 2."""
    env = cli_env(tmp_path)
    flags = [*SMALL, "--vis", str(small_store), "--interface", "lo"]
    ref = run_or_dump([PYTHON, "-m", "arl_mpi.pipeline", "--name", str(tmp_path / "ref"), *flags, "--workers", "2"],
                      timeout=300, env=env, cwd=tmp_path)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-4000:]
    r = run_or_dump([MPIRUN, *MPIRUN_ARGS, site_python, "-m", "arl_mpi.pipeline", "--name", str(tmp_path / "site"),
                     *flags], timeout=300, env=env, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-6000:]
    assert "MPI cluster up: scheduler on rank 0" in r.stderr and "2 workers (ranks 2-3)" in r.stderr, r.stderr[-4000:]
    for kind in KINDS:
        a = fits.getdata(tmp_path / f"ref-{kind}.fits").astype(np.float64)
        b = fits.getdata(tmp_path / f"site-{kind}.fits").astype(np.float64)
        assert a.shape == b.shape, kind
        peak = float(np.max(np.abs(a)))
        assert peak > 0, kind
        assert float(np.max(np.abs(a - b))) <= RTOL * peak, kind

    # ---- a failing run: every rank ends, one line, exit 2 -----------------------------------
    missing = tmp_path / "nope.store"
    f = run_or_dump([MPIRUN, *MPIRUN_ARGS, site_python, "-m", "arl_mpi.pipeline", "--name", str(tmp_path / "fail"),
                     *SMALL, "--vis", str(missing)], timeout=120, env=env, cwd=tmp_path)  # fmt: skip
    out = f.stdout + f.stderr
    errors = [ln for ln in out.splitlines() if "arl_mpi.pipeline: error:" in ln]
    assert len(errors) == 1 and str(missing) in errors[0] and "no such visibility store" in errors[0], out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert f.returncode == 2, (f.returncode, out[-4000:])
    assert not list(tmp_path.glob("fail-*.fits"))


def test_mpich_wheel_is_an_extra(monkeypatch):
    """``pip install -e .`` must not bring the ``mpich`` wheel (its mpiexec would shadow the
    site's); ``make install`` asks for the ``[mpich]`` extra unless ``MPI=site``."""
    import runpy

    import setuptools

    seen = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: seen.update(kw))
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / "setup.py"))
    names = [req.split(">")[0].split("=")[0].split(";")[0].strip().lower() for req in seen["install_requires"]]
    assert "mpich" not in names and "mpi4py" in names, names
    assert [r for r in seen["extras_require"]["mpich"] if r.startswith("mpich")], seen["extras_require"]
    for mpi, wheel in (("mpich", True), ("site", False)):
        r = subprocess.run(["make", "-n", "install", f"MPI={mpi}", "VENV=/nonexistent-venv"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        editable = [ln for ln in r.stdout.splitlines() if " -e " in ln]
        assert len(editable) == 1 and (",mpich]" in editable[0]) is wheel, (mpi, r.stdout)
        assert ("--no-binary=mpi4py" in r.stdout) is not wheel, (mpi, r.stdout)
