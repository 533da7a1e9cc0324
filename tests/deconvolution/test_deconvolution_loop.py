"""Pure per-cycle decision functions of the major/minor loop."""

import numpy as np
import pytest

from arl_mpi.deconvolution import CleanSettings, minor_cycle_step, stop_rule


def _psf(n):
    y, x = np.mgrid[0:n, 0:n] - n // 2
    return np.exp(-(x**2 + y**2) / 6.0)


def test_stop_rule_reasons():
    s = CleanSettings(niter=100, threshold=0.01, auto_threshold=3.0, nmiter=5)
    assert stop_rule(1.0, 0.01, 0, 0, s) == (False, "")
    assert stop_rule(1.0, 0.01, 100, 1, s) == (True, "niter")
    assert stop_rule(0.009, 0.001, 10, 1, s) == (True, "threshold")
    assert stop_rule(0.05, 0.02, 10, 1, s) == (True, "auto_threshold")
    assert stop_rule(1.0, 0.01, 10, 5, s) == (True, "nmiter")
    assert stop_rule(1.0, 0.01, 10, 2, s, last_minor_niter=0) == (True, "no_progress")


def test_minor_cycle_step_budget_and_purity():
    n = 64
    dirty = np.zeros((n, n))
    dirty[30:35, 30:35] = _psf(5)  # a point-ish source
    dirty[32, 32] = 1.0
    model = np.zeros((n, n))
    before = dirty.copy()
    s = CleanSettings(niter=50, gain=0.1, mgain=None)
    upd, info = minor_cycle_step(dirty, _psf(n), model, s, niter_done=45)
    assert info["niter"] == 5 and info["stop_reason"] == "niter"  # remaining budget only
    np.testing.assert_array_equal(dirty, before)  # inputs untouched
    assert np.all(model == 0)
    assert upd[32, 32] == pytest.approx(1 - 0.9**5, rel=1e-6)
    s_ms = CleanSettings(algorithm="multiscale", niter=20, mgain=0.5, scales_px=[0, 4])
    upd2, info2 = minor_cycle_step(dirty, _psf(n), model, s_ms)
    assert info2["stop_reason"] in ("mgain", "niter") and upd2.sum() > 0
    with pytest.raises(ValueError):
        minor_cycle_step(dirty, _psf(n), model, CleanSettings(algorithm="clark"))
