"""Simulated corruptions and gain plots."""

from __future__ import annotations

import numpy as np

from arl_mpi.calibration import solve_gains
from arl_mpi.calibration.plots import plot_gains
from arl_mpi.simulation.corruption import add_thermal_noise, simulate_gains
from arl_mpi.testing.synthetic_calibration import make_observation


def test_simulate_gains_reproducible_and_smooth():
    times = 5e9 + 60.0 * np.arange(200)
    freqs = 1e8 + 1e6 * np.arange(8)
    gt = simulate_gains(64, times, freqs, phase_rms_deg=30, amp_rms=0.1, seed=42)
    again = simulate_gains(64, times, freqs, phase_rms_deg=30, amp_rms=0.1, seed=42)
    other = simulate_gains(64, times, freqs, phase_rms_deg=30, amp_rms=0.1, seed=43)
    assert gt.gain.shape == (200, 64, 8, 2)
    assert gt.gain.tobytes() == again.gain.tobytes()
    assert not np.allclose(gt.gain, other.gain)
    phase_rms = np.degrees(np.std(np.angle(gt.gain[:, :, 0])))
    amp_rms = np.std(np.abs(gt.gain))
    assert 20 < phase_rms < 40  # ensemble rms 30 deg within sampling scatter
    assert 0.07 < amp_rms < 0.13
    # smooth: 60 s steps against >= 3600 s periods -> step << rms
    step = np.degrees(np.abs(np.angle(gt.gain[1:, :, 0] / gt.gain[:-1, :, 0])))
    assert step.max() < 10
    np.testing.assert_allclose(gt.interval, 60.0)


def test_add_thermal_noise_statistics():
    vis = np.zeros((200_000,), np.complex64)
    noisy = add_thermal_noise(vis, 2.0, seed=1)
    assert noisy.dtype == np.complex64
    np.testing.assert_allclose(noisy.real.std(), 2.0, rtol=0.01)
    np.testing.assert_allclose(noisy.imag.std(), 2.0, rtol=0.01)
    assert np.array_equal(noisy, add_thermal_noise(vis, 2.0, seed=1))


def test_plot_gains_writes_png(tmp_path):
    obs = make_observation(6, 6, 1, seed=2)
    gt = solve_gains(
        obs.time, obs.antenna1, obs.antenna2, obs.model, obs.model, obs.weight, obs.flags,
        obs.freq, 6, solint=10.0, pol_mode="diagonal",
    )  # fmt: skip
    gt.flags[0, 1] = True
    out = plot_gains(gt, tmp_path / "gains.png", title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["gains.png"]
