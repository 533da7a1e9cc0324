"""The examples run, at their smallest size, and produce what they promise."""

from __future__ import annotations

import subprocess

import pytest
from helpers import PYTHON, REPO


@pytest.mark.parametrize("script,expect", [
    ("imaging_dask.py", "dirty image peak"),
    ("imaging_pipelines.py", "spectral: exit 0"),
    ("calibration_pipelines.py", "gain phase error vs injected"),
])
def test_example_smallest(tmp_path, env_cli, script, expect):
    r = subprocess.run([PYTHON, str(REPO / "examples" / script), "--smallest", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env_cli, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert expect in r.stdout and "dashboard" in (r.stdout + r.stderr).lower()
