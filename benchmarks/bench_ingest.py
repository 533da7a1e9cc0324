"""Ingest of a large MeasurementSet: on the driver alone against on 2 Dask workers, and under MPI.

Data: the benchmark observation of issue 13 (real MWA geometry rotated over 140 x 8 s,
10 M visibilities, made once by ``simstore.ensure_mwa_rotated_ms``), or ``--ms``.
Timed, in one run, each into a fresh store (the input's page cache is warmed first):

* ``old serial``: the driver-alone ingest as it was before (its MS reads re-created here: a
  TaQL sort of all rows, a row selection and whole-column reads per partition);
* ``serial``: ``ensure_store_from_input`` in this process, without workers (the new reader);
* ``dask-2``: the same with the partitions read and written by a LocalCluster of 2 worker
  processes x 1 thread;
* ``pipeline``: what ``mpiexec -n 4 python -m arl_mpi.pipeline --vis obs.ms`` does now (the
  driver plans, its 2 workers read and write), the time taken from its log;
* ``mpi-N``: ``mpiexec -n N python -m arl_mpi.ingest`` for each N in ``--ranks``.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_ingest.py [--out output/bench-ingest]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from simstore import ensure_mwa_rotated_ms  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PIPE = "pipeline mpiexec -n 4 (2 workers)"


def warm(path: Path) -> None:
    """Read every file of ``path`` once (so that all cases start from the page cache)."""
    for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def old_serial_ingest(src: Path, target: Path, ntime: int, nfreq: int) -> None:
    """The driver-alone MS ingest as it was before the parallel one (its reads re-created here):
    a TaQL sort of all rows, then per partition a row selection and whole-column reads."""
    import casacore.tables as tables
    import numpy as np

    from arl_mpi.io.ms import MSReader
    from arl_mpi.io.store import create_store, finalize_store, plan_partitions, write_partition
    from arl_mpi.models import Visibility

    r = MSReader(src, select_rows=False)
    main = tables.table(str(src), ack=False)
    sel = main.query(f"FIELD_ID==0 AND DATA_DESC_ID=={r.ddid}", sortlist="TIME,ANTENNA1,ANTENNA2",
                     columns="ROWID() AS ROW")  # fmt: skip
    rows = np.asarray(sel.getcol("ROW"), dtype=np.int64)
    times = np.asarray(main.getcol("TIME"), dtype=np.float64)[rows]
    tmp = target.with_name(target.name + ".old-tmp")
    create_store(tmp)
    infos = []
    for pid, (tb, fb, tt, cs) in enumerate(plan_partitions(times, r.frequency.size, ntime, nfreq)):
        idx = np.nonzero(np.isin(times, tt))[0]
        sub = main.selectrows(rows[idx].tolist())
        data = sub.getcol("DATA")
        flags = sub.getcol("FLAG") | sub.getcol("FLAG_ROW")[:, None, None]
        weight = np.broadcast_to(sub.getcol("WEIGHT")[:, None, :], data.shape)
        take = (slice(None), cs, r.pol_order)
        vis = np.ascontiguousarray(data[take], dtype=np.complex64)
        flags = np.ascontiguousarray(flags[take]) | ~np.isfinite(vis)
        weight = np.where(flags, 0.0, weight[take]).astype(np.float32)
        v = Visibility(time=times[idx], uvw=sub.getcol("UVW"), antenna1=sub.getcol("ANTENNA1"),
                       antenna2=sub.getcol("ANTENNA2"), vis=vis, weight=weight, flags=flags,
                       frequency=r.frequency[cs], channel_width=r.channel_width[cs], polarisations=r.polarisations,
                       phase_centre=r.phase_centre(), integration_time=sub.getcol("INTERVAL"))  # fmt: skip
        infos.append(write_partition(tmp, v, pid=pid, time_block=tb, freq_block=fb, chan_start=cs.start))
    finalize_store(tmp, r.meta(), infos)
    shutil.rmtree(tmp)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/bench-ingest")
    p.add_argument("--ms", default=None, help="input MS or UVFITS (default: the issue-13 MWA observation)")
    p.add_argument("--time-partitions", type=int, default=1, help="as compare_wsclean.py: 1 x 2")
    p.add_argument("--freq-partitions", type=int, default=2)
    p.add_argument("--ranks", type=int, nargs="*", default=[1, 2, 3])
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    from distributed import Client, LocalCluster

    from arl_mpi.graphs.ingest_graph import ingest_on_workers
    from arl_mpi.io.ingest import ensure_store_from_input
    from arl_mpi.io.store import open_store

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src = Path(args.ms).resolve() if args.ms else out / "data.ms"
    if not args.ms:
        ensure_mwa_rotated_ms(src)
    warm(src)
    target = src.with_name(src.name + ".arlstore")
    parts = (args.time_partitions, args.freq_partitions)
    times: dict[str, list[float]] = {}

    def case(name: str, fn) -> None:
        for _ in range(args.repeat):
            shutil.rmtree(target, ignore_errors=True)
            t0 = time.perf_counter()
            fn()
            times.setdefault(name, []).append(round(time.perf_counter() - t0, 2))
            print(f"{name}: {times[name][-1]:.2f} s", flush=True)

    if src.is_dir():  # an MS
        case("old serial (before: driver alone, re-created reads)", lambda: old_serial_ingest(src, target, *parts))
    case("serial", lambda: ensure_store_from_input(src, *parts))
    nvis = open_store(target).nvis
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:  # fmt: skip
        client.run(lambda: __import__("arl_mpi.io.ms"))  # imports, as a pipeline's workers have them
        case("dask-2", lambda: ensure_store_from_input(src, *parts, map_partitions=ingest_on_workers(client)))
    shutil.rmtree(target, ignore_errors=True)
    mpiexec = str(Path(sys.executable).with_name("mpiexec"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for _ in range(args.repeat):  # the pipeline's own ingest: mpiexec -n 4, 2 workers (time from its log)
        shutil.rmtree(target, ignore_errors=True)
        r = subprocess.run([mpiexec, "-n", "4", sys.executable, "-m", "arl_mpi.pipeline", "--vis", str(src),
                            "--name", str(out / "pipe"), "--size", "64", "64", "--scale", "60asec", "--niter", "0",
                            "--time-partitions", str(parts[0]), "--freq-partitions", str(parts[1]),
                            "--no-dashboard", "--no-png", "--no-checkpoint"],
                           env=env, capture_output=True, text=True, check=True)  # fmt: skip
        m = re.search(r"ingested \S+ in ([\d.]+) s", r.stderr)
        times.setdefault(PIPE, []).append(float(m.group(1)) if m else float("nan"))
        print(f"{PIPE}: {times[PIPE][-1]} s", flush=True)
    shutil.rmtree(target, ignore_errors=True)
    for n in args.ranks:
        store = out / f"mpi-{n}.store"

        def run_mpi(store=store, n=n) -> None:
            shutil.rmtree(store, ignore_errors=True)
            subprocess.run([mpiexec, "-n", str(n), sys.executable, "-m", "arl_mpi.ingest", str(src), str(store),
                            "--time-partitions", str(parts[0]), "--freq-partitions", str(parts[1]),
                            "--log-level", "WARNING"], check=True, env=env)  # fmt: skip

        case(f"mpi-{n} (incl. start-up)", run_mpi)
        shutil.rmtree(store, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    result = {"input": str(src), "nvis": nvis, "partitions": parts, "seconds": times, "best_s": best,
              "speed-up dask-2 vs serial": round(best["serial"] / best["dask-2"], 2),
              "speed-up pipeline vs old serial": round(best.get("old serial (before: driver alone, re-created reads)",
                                                                float("nan")) / best[PIPE], 2),
              "speed-up pipeline vs serial": round(best["serial"] / best[PIPE], 2),
              "load average": os.getloadavg()}  # fmt: skip
    (out / "bench-ingest.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
