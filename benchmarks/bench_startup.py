"""Start-up of ``mpiexec -n 4 python -m arl_mpi.pipeline``: from process start to the first gridding task.

Runs the pipeline on a small simulated store (niter 0, 64² image) under ``mpiexec -n 4`` with
this file as the program: each step of the start-up on the driver (rank 1) is timed from its
process start (imports, dask-mpi ``initialize`` — which returns once rank 0's scheduler is up —,
``Client()``, waiting for the workers, plugins, the store check, the first gridding task), with
the dashboard on and off.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_startup.py [--out output/bench-startup]
"""

from __future__ import annotations

import time

T0 = time.time()  # before any import of the child's program

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def child(argv: list[str]) -> None:
    """The instrumented pipeline (one MPI rank); rank 1 writes its time stamps to ``$ARL_STARTUP_JSON``."""
    import dask_mpi
    import distributed
    from mpi4py import MPI

    import arl_mpi.cluster.runtime as rt
    import arl_mpi.pipeline.__main__ as pm
    import arl_mpi.pipeline.continuum as pc
    import arl_mpi.pipeline.prepare as pp

    stamps = [("imports done", time.time())]

    def wrap(obj, name: str, label: str) -> None:
        f = getattr(obj, name)

        def timed(*a, **k):
            r = f(*a, **k)
            stamps.append((label, time.time()))
            return r

        setattr(obj, name, timed)

    wrap(dask_mpi, "initialize", "dask-mpi initialize returned")
    wrap(distributed.Client, "wait_for_workers", "workers registered")
    wrap(rt, "register_plugins", "plugins registered")
    wrap(pp, "ensure_store", "store checked")
    f = pc.load_and_weight

    def first_task(*a, **k):
        stamps.append(("first gridding task submitted", time.time()))
        return f(*a, **k)

    pc.load_and_weight = first_task
    orig = distributed.Client.__init__

    def client_init(self, *a, **k):
        orig(self, *a, **k)
        stamps.append(("Client() connected", time.time()))

    distributed.Client.__init__ = client_init
    try:
        pm.main(argv)
    finally:
        if MPI.COMM_WORLD.Get_rank() == 1:
            Path(os.environ["ARL_STARTUP_JSON"]).write_text(json.dumps([(n, t - T0) for n, t in stamps]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/bench-startup")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from simstore import ensure_simulated_store

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    store = out / "small.store"
    ensure_simulated_store(store, 2, 4, 2, quiet=True)
    mpiexec = str(Path(sys.executable).with_name("mpiexec"))
    result = {}
    for label, flags in (("dashboard on", []), ("--no-dashboard", ["--no-dashboard"])):
        for k in range(args.repeat):
            js = out / f"stamps-{len(result)}-{k}.json"
            env = dict(os.environ, PYTHONPATH=str(REPO), ARL_STARTUP_JSON=str(js))
            subprocess.run([mpiexec, "-n", "4", sys.executable, __file__, "--child", "--vis", str(store),
                            "--name", str(out / "run"), "--size", "64", "64", "--scale", "60asec", "--niter", "0",
                            "--time-partitions", "2", "--no-png", "--no-checkpoint", "--log-level", "WARNING",
                            *flags], env=env, check=True, capture_output=True)  # fmt: skip
            st = dict(json.loads(js.read_text()))
            js.unlink()
            st["beyond imports, to the first gridding task"] = (
                st["first gridding task submitted"] - st["imports done"]
            )
            result.setdefault(label, []).append({k2: round(v, 2) for k2, v in st.items()})
            print(label, json.dumps(result[label][-1]), flush=True)
    result["load average"] = os.getloadavg()
    (out / "bench-startup.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        main()
