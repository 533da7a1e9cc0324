"""Fixtures and pytest hooks shared by every test; helpers are in ``tests/helpers.py``."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from helpers import cli_env


@pytest.fixture
def env_cli(tmp_path) -> dict:
    """Environment for subprocesses: the repo on PYTHONPATH, quiet Dask, scratch under tmp
    (``ARL_SCRATCH``: a run the test SIGKILLs cannot remove a per-run directory, which would
    then be left in the system temp directory)."""
    return cli_env(tmp_path)


_SESSION_START = time.time()


def _mapped_anywhere(path: str) -> bool:
    """Whether any process has ``path`` mapped (read from /proc/*/maps)."""
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            if path in maps.read_text():
                return True
        except OSError:
            continue
    return False


def pytest_sessionfinish(session, exitstatus):
    """Remove the MPICH shared-memory segments that MPI jobs killed by the tests left in
    /dev/shm (4 MiB each): only those created during this session and mapped by no process."""
    for f in Path("/dev/shm").glob("mpich_*"):
        with contextlib.suppress(OSError):
            if f.stat().st_mtime >= _SESSION_START and not _mapped_anywhere(str(f)):
                f.unlink()
