"""The soak benchmark's fault mode, small: ``benchmarks/soak.py --quick``.

The script simulates a small store, images it twice with ``--stream`` on a local cluster of
2 workers (6 major cycles), the second time ``SIGKILL``ing the busiest worker process in the
gridding after major cycle 3, and compares the two runs. The test checks the script's own
verdict and, independently, the images it wrote: equal to 1e-6 of the peak; that exactly one
worker was killed and the nanny's replacement was seen; and that a peak RSS was recorded for
every worker process of both runs (the killed one, its replacement and the survivors).
The full soak (30+ cycles, a store larger than the workers' memory, two kills) and its figures
are in docs/performance-soak.md.
"""

from __future__ import annotations

import json

import numpy as np
from astropy.io import fits
from helpers import PYTHON, REPO, cli_env, run_or_dump


def test_soak_quick_kill_and_restart_gives_undisturbed_images(tmp_path):
    out = tmp_path / "soak.json"
    r = run_or_dump([PYTHON, str(REPO / "benchmarks" / "soak.py"), "--quick", "--work", str(tmp_path),
                     "--json", str(out)], timeout=180, env=cli_env(tmp_path), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "soak under faults: PASSED" in r.stdout, r.stdout[-3000:]
    res = json.loads(out.read_text())
    assert res["ref"]["rc"] == 0 and res["fault"]["rc"] == 0, res
    assert res["ref"]["major_cycles"] == res["fault"]["major_cycles"] == 6, res
    kills = res["fault"]["kills"]
    assert len(kills) == 1 and kills[0]["replacement_pid"], kills
    assert kills[0]["after_cycle"] < res["nmiter"], kills  # the kill landed before the run ended
    for run, nproc in (("ref", 2), ("fault", 3)):  # the faulted run: 2 originals + the replacement
        peaks = res[run]["worker_peak_rss_bytes"]
        assert len(peaks) >= nproc, (run, peaks)
        assert all(50 * 2**20 < v < 4 * 2**30 for v in peaks.values()), (run, peaks)
    assert str(kills[0]["pid"]) in res["fault"]["worker_peak_rss_bytes"]
    assert str(kills[0]["replacement_pid"]) in res["fault"]["worker_peak_rss_bytes"]
    for kind in ("model", "residual", "image"):
        a = fits.getdata(tmp_path / f"ref-{kind}.fits").astype(np.float64)
        b = fits.getdata(tmp_path / f"fault-{kind}.fits").astype(np.float64)
        peak = float(np.abs(a).max())
        assert peak > 0, kind
        assert float(np.abs(a - b).max()) <= 1e-6 * peak, kind
        assert res["max_rel_diff"][kind] <= 1e-6, res["max_rel_diff"]
