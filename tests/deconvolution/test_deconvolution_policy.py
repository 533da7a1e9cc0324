"""Clean policy objects and the imaging/deconvolution layering."""

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import arl_mpi.imaging
from arl_mpi.deconvolution import CleanParams, CleanSettings, hogbom, multiscale
from arl_mpi.deconvolution.common import convolve_same
from arl_mpi.deconvolution.policy import as_params, masked_peak
from arl_mpi.errors import ConfigError

# every imaging module must be free of deconvolution imports (no shims left)
SHIMS: set[str] = set()


def test_imaging_does_not_import_deconvolution():
    root = pathlib.Path(arl_mpi.imaging.__file__).parent
    pat = re.compile(r"^\s*(from|import)\s+(arl_mpi\.deconvolution|\.\.deconvolution)", re.M)
    offenders = [
        p.name for p in root.glob("*.py") if p.name not in SHIMS and pat.search(p.read_text())
    ]
    assert offenders == []
    # the pure deconvolution package does not pull in imaging either
    code = "import sys, arl_mpi.deconvolution; print('arl_mpi.imaging' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_minor_params_from_settings():
    cs = CleanSettings(algorithm="multiscale", niter=100, gain=0.2, mgain=0.5, scales_px=[0, 3])
    p = cs.minor_params(niter_done=60)
    assert p.niter == 40 and p.gain == 0.2 and p.mgain == 0.5 and p.scales_px == (0.0, 3.0)
    assert cs.minor_params(500).niter == 0
    assert CleanSettings(algorithm="hogbom", scales_px=[0, 3]).minor_params().scales_px == (0.0,)
    with pytest.raises(ConfigError, match="unknown algorithm"):
        CleanSettings(algorithm="clark").minor_params()
    assert as_params(None).niter == CleanParams().niter == 1000
    assert as_params(cs).niter == 100
    with pytest.raises(ConfigError):
        as_params({"niter": 3})


@pytest.mark.parametrize(
    "kw", [dict(gain=0.0), dict(gain=1.5), dict(niter=-1), dict(mgain=0.0), dict(scales_px=())]
)
def test_clean_params_rejects_bad_values(kw):
    with pytest.raises(ConfigError):
        CleanParams(**kw)


def test_settings_object_drives_the_algorithms():
    n = 48
    y, x = np.mgrid[0:n, 0:n] - n // 2
    psf = np.exp(-(x**2 + y**2) / 6.0)
    sky = np.zeros((n, n))
    sky[10, 12], sky[30, 33] = 1.0, 0.5
    dirty = convolve_same(sky, psf)
    p = CleanParams(niter=7, gain=0.1)
    m, _, info = hogbom(dirty, psf, p)
    assert info["niter"] == info["kept"] == 7
    # the same object from CleanSettings (first cycle: whole budget)
    m2, _, _ = hogbom(dirty, psf, CleanSettings(niter=7, mgain=None))
    np.testing.assert_array_equal(m, m2)
    # keep: components outside are subtracted but not kept
    keep = np.zeros((n, n), dtype=bool)
    keep[20:, 20:] = True
    mk, rk, ik = hogbom(dirty, psf, p.replace(niter=200, threshold=1e-3), keep=keep)
    assert np.all(mk[~keep] == 0) and mk[30, 33] == pytest.approx(0.5, rel=0.01)
    assert ik["kept"] < ik["niter"] and masked_peak(rk) <= 1e-3
    mm, _, im = multiscale(
        dirty, psf, p.replace(niter=200, threshold=1e-3, scales_px=(0, 4)), keep=keep
    )
    assert np.all(mm[:14, :] == 0) and im["kept"] < im["niter"]
