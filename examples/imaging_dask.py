"""General imaging with Dask (the seed's imaging-dask notebook, as a script).

Builds Dask graphs over the shards (one per worker) of a simulated LOW-core observation — load, weight
density, PSF, dirty image — and computes them on a local Dask cluster (or on
``$ARL_DASK_SCHEDULER``). The graphs are plain ``dask.delayed`` objects: ``.compute()``
them, hand them to any client, or persist the loaded partitions and reuse them.

    python examples/imaging_dask.py                 # laptop size (4 cores, 16 GB)
    python examples/imaging_dask.py --scale 4       # 4x the data and 2x the image
    python examples/imaging_dask.py --smallest      # what the test suite runs
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from arl_mpi import graphs
from arl_mpi.cluster.runtime import run_with_client
from arl_mpi.cluster.settings import ClusterSettings
from arl_mpi.graphs import GridSpec, Weighting
from arl_mpi.imaging.beam import fit_beam
from arl_mpi.io.fits import write_fits, write_png
from arl_mpi.io.store import open_store
from arl_mpi.pipeline.outputs import make_image
from arl_mpi.simulate import simulate_store
from arl_mpi.simulation.builtin import SimulationSettings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/examples/imaging-dask")
    p.add_argument("--scale", type=int, default=1, help="multiply the data volume by this (image side by sqrt)")
    p.add_argument("--smallest", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sim = SimulationSettings(ntimes=4 if args.smallest else 16 * args.scale, rmax_m=300 if args.smallest else 600)
    npix = 128 if args.smallest else int(256 * np.sqrt(args.scale) // 2 * 2)
    store = out / "obs.store"
    if not (store / "index.h5").exists():
        simulate_store(store, sim, ntime_parts=2 if args.smallest else 4, nfreq_parts=1)
    index = open_store(store)

    def job(client) -> int:
        print(f"Dask dashboard: {client.dashboard_link}")
        grid = GridSpec(npix_x=npix, npix_y=npix, cell=np.deg2rad(60 / 3600) * 256 / npix,
                        nchan_total=int(index.meta.frequency.size))
        nworkers = len(client.scheduler_info()["workers"])
        sizes = [p.nsamples for p in index.partitions]
        shards = graphs.shard_layout(sizes, nworkers, graphs.chunk_samples_for(grid))  # one per worker
        data = graphs.load_graph(str(store), shards)                         # delayed, nothing runs yet
        data = graphs.persist_on_workers(client, data)                       # resident on the workers
        density = client.compute(graphs.weight_density_graph(data, grid)).result()  # tree-summed uv density
        weighting = graphs.constant(Weighting("uniform", 0.0, None, density))
        uniform = graphs.reweight_graph(data, grid, weighting)
        psf = graphs.normalise(client.compute(graphs.psf_graph(uniform, grid)).result())
        dirty = graphs.normalise(client.compute(graphs.invert_graph(uniform, grid)).result())
        beam = fit_beam(psf[0], grid.cell)
        freqs = np.array([index.meta.frequency.mean()])
        img = make_image(index, dirty, grid.cell, freqs, "JY/BEAM", beam)
        write_fits(out / "dirty.fits", img)
        write_png(out / "dirty.png", img, title="uniform-weighted dirty image")
        print(f"dirty image peak {dirty.max():.3f} Jy/beam; beam {np.rad2deg(beam[0]) * 3600:.0f} arcsec; "
              f"written to {out}/dirty.fits")
        return 0

    run_with_client(job, ClusterSettings(workers=2, tls=False, dashboard_address="127.0.0.1:0"))


if __name__ == "__main__":
    main()
