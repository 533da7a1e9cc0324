"""Progress lines of a simulation: a line per interval with the time left, none at WARNING."""

from __future__ import annotations

import logging
import re
import subprocess

from helpers import PYTHON, REPO

from arl_mpi.simulation.builtin import SimulationSettings
from arl_mpi.simulation.writer import write_simulated_store

TINY = SimulationSettings(rmax_m=100, ntimes=4, nchan=1, nsources=1)
LINE = re.compile(r"simulation of .*: (\d+)% \((\d)/4 partitions\) after \d+ s, about .+ left")


def _progress(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("simulation of")]


def test_progress_lines_each_interval(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="arl_mpi.simulation.writer"):
        write_simulated_store(tmp_path / "a.store", TINY, 4, 1, progress_interval_s=0)
    lines = _progress(caplog)
    # interval 0: one line per partition (25, 50, 75, 100 %) and the closing "done" line
    counts = [LINE.fullmatch(line) for line in lines[:-1]]
    assert all(counts), lines
    assert [(int(m.group(1)), int(m.group(2))) for m in counts] == [(25, 1), (50, 2), (75, 3), (100, 4)]
    assert re.fullmatch(r"simulation of .*a\.store: done \(4 partitions\) in \d+ s", lines[-1]), lines[-1]


def test_progress_rate_limited_and_silent_at_warning(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="arl_mpi.simulation.writer"):
        write_simulated_store(tmp_path / "b.store", TINY, 4, 1, progress_interval_s=3600)
    assert _progress(caplog) == []  # a step shorter than the interval logs nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="arl_mpi.simulation.writer"):
        write_simulated_store(tmp_path / "c.store", TINY, 4, 1, progress_interval_s=0)
    assert _progress(caplog) == []


def test_simulate_cli_silent_at_warning(tmp_path, env_cli):
    """``python -m arl_mpi.simulate --log-level WARNING`` with the interval set to 0 (a line per
    partition at INFO, as above) logs no progress line."""
    code = ("import sys, arl_mpi.simulation.writer as w; w.PROGRESS_INTERVAL_S = 0; "
            "from arl_mpi.simulate import main; sys.exit(main(sys.argv[1:]))")
    store = tmp_path / "w.store"
    args = ["--time-partitions", "2", "--sim-rmax-m", "100", "--sim-ntimes", "2", "--sim-nchan", "1"]
    r = subprocess.run([PYTHON, "-c", code, str(store), *args, "--log-level", "WARNING"],
                       capture_output=True, text=True, env=env_cli, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (store / "index.h5").is_file()
    assert "simulation of" not in r.stderr, r.stderr


def test_progress_of_a_pool_follows_partitions_a_gathered_map_only_closes(tmp_path, caplog):
    """A process pool reports each partition as it is written; a map that hands back all the
    partitions at once (the pipeline's Dask workers) gets the closing line only (a percentage
    then would be made up)."""
    with caplog.at_level(logging.INFO, logger="arl_mpi.simulation.writer"):
        write_simulated_store(tmp_path / "p.store", TINY, 4, 1, processes=2, progress_interval_s=0)
    lines = _progress(caplog)
    assert len(lines) == 5 and all(LINE.fullmatch(line) for line in lines[:-1]), lines
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="arl_mpi.simulation.writer"):
        write_simulated_store(tmp_path / "m.store", TINY, 4, 1, progress_interval_s=0,
                              map_partitions=lambda write, pids: [write(pid) for pid in pids])
    lines = _progress(caplog)
    assert len(lines) == 1 and re.fullmatch(r"simulation of .*m\.store: done \(4 partitions\) in \d+ s", lines[0])
