"""Gain application, inversion and nearest-cell interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from arl_mpi.calibration import (
    GainTable,
    apply_gains,
    corrupt_visibilities,
    interpolate_gains,
    invert_gaintable,
    nearest_solution_indices,
)
from arl_mpi.simulation.corruption import simulate_gains
from arl_mpi.testing.synthetic_calibration import make_observation


def _table(times, interval, freqs, nant=3, receptors=("X", "Y"), seed=0):
    return simulate_gains(
        nant, times, freqs, receptors=list(receptors), interval=interval, seed=seed,
        smooth_time_s=50.0, delay_rms_ns=2.0,
    )  # fmt: skip


def test_nearest_solution_indices_respects_intervals():
    gt = _table([15.0, 45.0, 65.0], np.array([30.0, 30.0, 10.0]), [1e8, 1.1e8, 1.2e8])
    t = np.array([-100.0, 0.0, 29.999, 30.0, 59.9, 60.0, 69.9, 1e6])
    tidx, fidx = nearest_solution_indices(gt, t, np.array([0.9e8, 1.04e8, 1.06e8, 5e8]))
    np.testing.assert_array_equal(tidx, [0, 0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(fidx, [0, 0, 1, 2])
    g, f = interpolate_gains(gt, t, np.array([1e8, 1.2e8]))
    assert g.shape == (8, 3, 2, 2) and f.shape == g.shape
    np.testing.assert_array_equal(g[3], gt.gain[1][:, [0, 2]])


def test_apply_matches_measurement_equation_per_polarisation():
    labels = ["XX", "XY", "YX", "YY"]
    obs = make_observation(5, 3, 4, pol_labels=labels, seed=3)
    rng = np.random.default_rng(0)
    vis = rng.normal(size=obs.model.shape) + 1j * rng.normal(size=obs.model.shape)
    times = np.unique(obs.time)
    gt = _table(times, 10.0, obs.freq, nant=5)
    out, fl = apply_gains(obs.time, obs.antenna1, obs.antenna2, vis, obs.freq, labels, gt)
    assert not fl.any()
    r = 7
    k = int(np.searchsorted(times, obs.time[r]))
    i, j = obs.antenna1[r], obs.antenna2[r]
    for p, (a, b) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        expect = gt.gain[k, i, :, a] * vis[r, :, p] * np.conj(gt.gain[k, j, :, b])
        np.testing.assert_allclose(out[r, :, p], expect, rtol=1e-13)
    # inverse undoes forward; invert_gaintable is equivalent to inverse=True
    back, _ = apply_gains(
        obs.time, obs.antenna1, obs.antenna2, out, obs.freq, labels, gt, inverse=True
    )
    np.testing.assert_allclose(back, vis, rtol=1e-12, atol=1e-12)
    back2, _ = corrupt_visibilities(
        obs.time, obs.antenna1, obs.antenna2, out, obs.freq, labels, invert_gaintable(gt)
    )
    np.testing.assert_allclose(back2, vis, rtol=1e-12, atol=1e-12)


def test_scalar_table_applies_to_all_products_and_dtype_is_kept():
    obs = make_observation(4, 2, 2, pol_labels=("I",), seed=1, dtype=np.complex64)
    gt = _table(np.unique(obs.time), 10.0, obs.freq, nant=4, receptors=["I"])
    out, _ = apply_gains(obs.time, obs.antenna1, obs.antenna2, obs.model, obs.freq, ["I"], gt)
    assert out.dtype == np.complex64
    with pytest.raises(ValueError, match="cannot be corrected"):
        apply_gains(
            obs.time, obs.antenna1, obs.antenna2, obs.model, obs.freq, ["I"],
            _table(np.unique(obs.time), 10.0, obs.freq, nant=4),
        )  # fmt: skip


def test_flagged_solutions_flag_visibilities():
    labels = ["XX", "YY"]
    obs = make_observation(4, 2, 3, pol_labels=labels, seed=2)
    gt = _table(np.unique(obs.time), 10.0, obs.freq, nant=4)
    gt.flags[0, 2, :, 1] = True  # antenna 2, receptor Y, first time
    gt.gain[0, 2, :, 1] = 0.0
    in_flags = np.zeros(obs.model.shape, bool)
    in_flags[0, 0, 0] = True
    out, fl = apply_gains(
        obs.time, obs.antenna1, obs.antenna2, obs.model, obs.freq, labels, gt,
        inverse=True, flags=in_flags,
    )  # fmt: skip
    first = obs.time == obs.time.min()
    has2 = (obs.antenna1 == 2) | (obs.antenna2 == 2)
    expect = np.zeros_like(fl)
    expect[first & has2, :, 1] = True
    expect[0, 0, 0] = True
    np.testing.assert_array_equal(fl, expect)
    assert np.all(np.isfinite(out))
    # flagged samples are left unchanged
    np.testing.assert_array_equal(out[first & has2, :, 1], obs.model[first & has2, :, 1])


def test_invert_gaintable_flags_zero_gains():
    gt = _table([0.0], 10.0, [1e8], nant=2)
    gt.gain[0, 1, 0, 0] = 0.0
    inv = invert_gaintable(gt)
    assert inv.flags[0, 1, 0, 0] and inv.weight[0, 1, 0, 0] == 0
    np.testing.assert_allclose(inv.gain[0, 0] * gt.gain[0, 0], 1.0)
    assert isinstance(inv, GainTable)
