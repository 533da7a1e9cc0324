"""Soak: image a store larger than the workers' total memory limit with ``--stream``.

Simulates a LOW-core observation (default ~1 GB of visibilities on disk), then runs the
continuum pipeline on a local cluster of 2 workers, each with a memory limit well below
half the store, and samples every worker process's resident memory every 0.2 s.
Prints the store size, the limits, the peak RSS of each worker, and the wall time.

    PYTHONPATH=. .venv/bin/python benchmarks/soak.py [--ntimes 192] [--memory-limit 350MB] [--no-stream]

``--no-stream`` runs the default (partitions resident on the workers) mode on the same store,
to show what happens without streaming when the store does not fit (``--timeout`` bounds it).

Fault mode (``--faults N``, N >= 1): a long ``--stream`` run (``--nmiter`` major cycles) during
which a worker process is ``SIGKILL``ed N times, spread over the run, each time in the
gridding that follows a major cycle; the local cluster's nanny starts a replacement, and the
script waits for it before the next kill. The same run undisturbed comes first; the script
compares the two runs' model, residual and restored images (largest difference over the
peak, must be <= ``--tolerance``), checks that ``--memory-check refuse`` refuses the resident
mode for this store and limit, and records the peak RSS of every worker process (psutil, every
0.2 s, killed ones included) and the summary's ``peak_rss_bytes``. Exit 0 when the images
agree and every kill was followed by a replacement worker, 1 otherwise. ``--quick`` is a
small version (one kill, a few cycles, under a minute) that
``tests/cluster/test_soak_quick.py`` runs; ``--json FILE`` writes the figures.

    PYTHONPATH=. .venv/bin/python benchmarks/soak.py --faults 2 --ntimes 96 --memory-limit 300MB
    PYTHONPATH=. .venv/bin/python benchmarks/soak.py --quick --work /tmp/soak-quick
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from simstore import ensure_simulated_store  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
CYCLE_LINE = re.compile(r"major cycle (\d+)/(\d+)")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def worker_processes(parent: psutil.Process) -> list[psutil.Process]:
    """The local cluster's worker processes: the pipeline's multiprocessing children."""
    out = []
    for c in parent.children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(c.cmdline()):
                out.append(c)
        except psutil.Error:
            continue
    return out


@dataclass
class Run:
    """One pipeline run under observation."""

    name: str
    rc: int | str = ""
    wall_s: float = 0.0
    peaks: dict[int, int] = field(default_factory=dict)  # worker pid -> peak RSS
    driver_peak: int = 0
    spill_peak: int = 0
    kills: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    stderr_tail: str = ""


def run_observed(cmd: list[str], env: dict, work: Path, name: str, timeout: float,
                 kill_after: list[int] = (), kill_delay: float = 0.5) -> Run:
    """Run ``cmd`` (the pipeline, ``--name work/name``), sample its workers' RSS every 0.2 s, and
    SIGKILL one worker process after each major cycle in ``kill_after`` (+ ``kill_delay`` s),
    waiting for the nanny's replacement before the next kill."""
    run = Run(name)
    log = work / f"{name}.log"
    scratch = Path(env["ARL_SCRATCH"])
    t0 = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)  # fmt: skip
    parent = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        n = 0
        while not done.is_set():
            n += 1
            if n % 5 == 0:  # once a second: bytes Dask has spilled to the scratch directory
                try:
                    run.spill_peak = max(run.spill_peak, du(scratch))
                except OSError:
                    pass
            try:
                run.driver_peak = max(run.driver_peak, parent.memory_info().rss)
                for c in worker_processes(parent):
                    run.peaks[c.pid] = max(run.peaks.get(c.pid, 0), c.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.2)

    def inject() -> None:
        pending = sorted(kill_after)
        pos = 0
        while pending and not done.is_set():
            time.sleep(0.1)
            try:
                with open(log) as f:
                    f.seek(pos)
                    text = f.read()
                    pos = f.tell()
            except OSError:
                continue
            cycles = [int(m.group(1)) for m in CYCLE_LINE.finditer(text)]
            if not cycles or max(cycles) < pending[0]:
                continue
            cycle = max(cycles)
            while pending and pending[0] <= cycle:
                pending.pop(0)
            time.sleep(kill_delay)  # into the next cycle's gridding
            try:
                workers = worker_processes(parent)
                # the busiest worker (largest CPU time): the one most likely gridding now
                victim = max(workers, key=lambda w: sum(w.cpu_times()[:2]))
                before = {w.pid for w in workers}
                victim.send_signal(signal.SIGKILL)
            except (psutil.Error, ValueError):
                continue
            t_kill = time.perf_counter()
            kill = {"after_cycle": cycle, "pid": victim.pid, "t_s": round(t_kill - t0, 1),
                    "replacement_pid": None, "replaced_after_s": None}  # fmt: skip
            run.kills.append(kill)
            while not done.is_set():  # the nanny's replacement: a worker pid not seen before
                time.sleep(0.1)
                try:
                    new = [w.pid for w in worker_processes(parent) if w.pid not in before]
                except psutil.Error:
                    new = []
                if new:
                    kill["replacement_pid"] = new[0]
                    kill["replaced_after_s"] = round(time.perf_counter() - t_kill, 1)
                    break

    threads = [threading.Thread(target=sample, daemon=True), threading.Thread(target=inject, daemon=True)]
    for t in threads:
        t.start()
    try:
        run.rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        run.rc = f"killed after {timeout:.0f} s"
    done.set()
    for t in threads:
        t.join()
    run.wall_s = time.perf_counter() - t0
    sfile = work / f"{name}-summary.json"
    if run.rc == 0 and sfile.exists():
        run.summary = json.loads(sfile.read_text())
    run.stderr_tail = log.read_text()[-3000:]
    return run


def compare_images(work: Path, a: str, b: str) -> dict[str, float]:
    """max |a - b| / max |a| for the model, residual and restored image of runs ``a`` and ``b``."""
    import numpy as np
    from astropy.io import fits

    out = {}
    for kind in ("model", "residual", "image"):
        x = fits.getdata(work / f"{a}-{kind}.fits").astype(float)
        y = fits.getdata(work / f"{b}-{kind}.fits").astype(float)
        out[kind] = float(np.abs(x - y).max() / np.abs(x).max())
    return out


def pipeline_cmd(args: argparse.Namespace, work: Path, store: Path, name: str, stream: bool,
                 extra: list[str] = ()) -> list[str]:  # fmt: skip
    cmd = [sys.executable, "-m", "arl_mpi.pipeline", "--vis", str(store), "--name", str(work / name),
           "--workers", "2", "--threads-per-worker", "1", "--memory-limit", args.memory_limit,
           "--size", str(args.size), str(args.size), "--scale", args.scale, "--niter", str(args.niter),
           "--mgain", str(args.mgain), "--no-png", "--no-dashboard", "--log-level", args.log_level,
           *extra]  # fmt: skip
    if stream:
        cmd.append("--stream")
    return cmd


def mib(n: int) -> str:
    return f"{n / 2**20:.0f}"


def print_run(run: Run, stream: bool, args: argparse.Namespace, size: int) -> None:
    cycles = run.summary.get("cycles", [])
    print(
        f"[{run.name}] exit {run.rc}; store {mib(size)} MiB on disk "
        f"({run.summary.get('visibilities', {}).get('samples', 0) / 1e6:.1f} M Stokes-I samples); "
        f"{'--stream' if stream else 'resident (no --stream)'}; "
        f"2 workers x memory limit {args.memory_limit}; wall {run.wall_s:.0f} s; "
        f"worker processes seen {len(run.peaks)} (restarts {max(0, len(run.peaks) - 2)}); "
        f"major cycles {len(cycles)}; peak scratch (spill) {mib(run.spill_peak)} MiB; "
        f"driver (scheduler + driver) peak RSS {mib(run.driver_peak)} MiB"
    )
    killed = {k["pid"]: k for k in run.kills}
    for pid, rss in sorted(run.peaks.items(), key=lambda kv: -kv[1]):
        k = killed.get(pid)
        note = f" (SIGKILLed after major cycle {k['after_cycle']})" if k else ""
        print(f"  worker process {pid}: peak RSS {mib(rss)} MiB{note}")
    for k in run.kills:
        print(f"  kill at {k['t_s']} s after major cycle {k['after_cycle']}: pid {k['pid']}, "
              f"replacement pid {k['replacement_pid']} after {k['replaced_after_s']} s")  # fmt: skip
    if run.rc != 0:
        print(run.stderr_tail, file=sys.stderr)


def fault_mode(args: argparse.Namespace, work: Path, store: Path, env: dict, size: int) -> int:
    """Undisturbed and faulted ``--stream`` runs, the resident refusal, the comparison."""
    from dask.utils import parse_bytes

    limit = parse_bytes(args.memory_limit)
    cycles = ["--auto-threshold", str(args.auto_threshold), "--nmiter", str(args.nmiter), "--no-checkpoint"]
    result: dict = {"store_bytes": size, "memory_limit_bytes": limit, "workers": 2,
                    "store_exceeds_total_limit": size > 2 * limit, "nmiter": args.nmiter}  # fmt: skip
    print(f"store {mib(size)} MiB on disk; 2 workers x {mib(limit)} MiB = {mib(2 * limit)} MiB "
          f"({'smaller' if size > 2 * limit else 'NOT smaller'} than the store)")  # fmt: skip
    if args.refusal_check:
        cmd = pipeline_cmd(args, work, store, "resident", False, [*cycles, "--memory-check", "refuse"])
        p = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=args.timeout)
        errs = [ln for ln in p.stderr.splitlines() if "error:" in ln]
        result["resident_refusal"] = {"rc": p.returncode, "line": errs[-1] if errs else ""}
        print(f"[resident, --memory-check refuse] exit {p.returncode}: {errs[-1] if errs else p.stderr[-500:]}")
    n = args.faults
    kill_after = [max(1, round(args.nmiter * (i + 1) / (n + 1))) for i in range(n)]
    runs: dict[str, Run] = {}

    def one(name: str, kills: list[int]) -> None:
        cmd = pipeline_cmd(args, work, store, name, True, cycles)
        runs[name] = run_observed(cmd, env, work, name, args.timeout, kills, args.kill_delay)

    if args.concurrent:  # both runs at once (the memory figures then overlap in time)
        ts = [threading.Thread(target=one, args=a) for a in (("ref", []), ("fault", kill_after))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    else:
        one("ref", [])
        one("fault", kill_after)
    for run in runs.values():
        print_run(run, True, args, size)
    ok = all(r.rc == 0 for r in runs.values())
    diff = compare_images(work, "ref", "fault") if ok else {}
    replaced = len(runs["fault"].kills) == n and all(k["replacement_pid"] for k in runs["fault"].kills)
    same_cycles = len(runs["ref"].summary.get("cycles", [])) == len(runs["fault"].summary.get("cycles", []))
    ok = ok and replaced and same_cycles and max(diff.values()) <= args.tolerance
    if diff:
        print("faulted vs undisturbed, max |difference| / peak: "
              + ", ".join(f"{k} {v:.2g}" for k, v in diff.items())
              + f" (tolerance {args.tolerance:g})")  # fmt: skip
    print(f"kills {len(runs['fault'].kills)} of {n} planned, each followed by a replacement worker: {replaced}")
    for name, r in runs.items():
        result[name] = {"rc": r.rc, "wall_s": round(r.wall_s, 1), "major_cycles": len(r.summary.get("cycles", [])),
                        "worker_peak_rss_bytes": {str(k): v for k, v in r.peaks.items()},
                        "driver_peak_rss_bytes": r.driver_peak, "spill_peak_bytes": r.spill_peak,
                        "summary_peak_rss_bytes": r.summary.get("peak_rss_bytes"),
                        "samples": r.summary.get("visibilities", {}).get("samples"),
                        "kills": r.kills}  # fmt: skip
    result["max_rel_diff"] = diff
    result["ok"] = ok
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print("soak under faults: " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--work", default="output/soak")
    p.add_argument("--ntimes", type=int, default=192)
    p.add_argument("--nchan", type=int, default=8)
    p.add_argument("--partitions", type=int, default=24)
    p.add_argument("--memory-limit", default="350MB")
    p.add_argument("--niter", type=int, default=300)
    p.add_argument("--mgain", type=float, default=0.5)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--scale", default="40asec")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument(
        "--no-stream",
        dest="stream",
        action="store_false",
        help="partitions resident (default mode)",
    )
    p.add_argument(
        "--timeout", type=float, default=900, help="kill the pipeline after this many seconds"
    )
    f = p.add_argument_group("fault mode")
    f.add_argument("--faults", type=int, default=0, help="worker kills in the faulted run (0: no fault mode)")
    f.add_argument("--nmiter", type=int, default=30, help="major cycles of the fault-mode runs")
    f.add_argument("--auto-threshold", type=float, default=0.1)
    f.add_argument("--kill-delay", type=float, default=0.5, help="s after a major cycle's log line")
    f.add_argument("--tolerance", type=float, default=1e-6, help="of the peak")
    f.add_argument("--no-refusal-check", dest="refusal_check", action="store_false")
    f.add_argument("--json", help="write the fault mode's figures to this file")
    f.add_argument("--concurrent", action="store_true", help="run the undisturbed and the faulted run at once")
    f.add_argument("--quick", action="store_true",
                   help="small fault-mode run: 4 partitions x 8 times x 1 channel, 128^2, 6 cycles, 1 kill")
    args = p.parse_args()
    if args.quick:
        args.ntimes, args.nchan, args.partitions, args.size, args.scale = 8, 1, 4, 128, "120asec"
        args.nmiter, args.niter, args.mgain, args.faults = 6, 100000, 0.2, max(args.faults, 1)
        args.memory_limit, args.refusal_check, args.timeout = "1GB", False, min(args.timeout, 120)
    elif args.faults:
        args.niter = max(args.niter, 1_000_000)  # cycles bound by --nmiter, not by niter
    if args.faults:
        args.log_level = "INFO"  # the major-cycle lines time the kills
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ARL_SCRATCH=str(work / "arl-scratch"))
    store = work / f"p{args.partitions}-t{args.ntimes}-c{args.nchan}.store"
    ensure_simulated_store(store, args.partitions, args.ntimes, args.nchan, env=env, quiet=True,
                           processes=1 if args.quick else 2)  # fmt: skip
    size = du(store)
    if args.faults:
        sys.exit(fault_mode(args, work, store, env, size))
    cmd = pipeline_cmd(args, work, store, "soak", args.stream, ["--no-checkpoint"])
    run = run_observed(cmd, env, work, "soak", args.timeout)
    (work / "soak-summary.json").unlink(missing_ok=True)
    print_run(run, args.stream, args, size)


if __name__ == "__main__":
    main()
