"""Make sure there is a store to image: the given one, or the built-in simulated observation.

Without ``--vis`` the built-in LOW-core observation is simulated by the workers (each
writes its own partitions; the driver writes the index) into ``PREFIX-sim.store``. A store
already there from an earlier run with the same recipe is reused.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from dask import delayed

from arl_mpi.errors import StoreError
from arl_mpi.io.store import open_store
from arl_mpi.pipeline.settings import Settings
from arl_mpi.simulation.builtin import SimulationSettings
from arl_mpi.simulation.writer import write_simulated_store

log = logging.getLogger("arl_mpi.pipeline")


def builtin_simulation(pipeline: str) -> SimulationSettings:
    """The built-in observation for each pipeline.

    continuum: 8 point sources, 4 channels; spectral: 16 channels and a Gaussian line source
    of 1 Jy peak; ical: the continuum sky corrupted by antenna gains (phase screens of tens of
    degrees and 5% amplitude drifts).
    """
    if pipeline == "spectral":
        return SimulationSettings(nchan=16, nsources=3, line_peak_jy=1.0, line_centre_hz=110e6, line_fwhm_hz=3e6)
    if pipeline == "ical":
        return SimulationSettings(extra={"gains": {"phase_rms_deg": 30.0, "amp_rms": 0.05, "seed": 7}})
    return SimulationSettings()


def ensure_store(client, s: Settings) -> str:
    """Path of the store to image (simulating the built-in observation when needed)."""
    if s.vis:
        from arl_mpi.graphs.ingest_graph import ingest_on_workers
        from arl_mpi.io.ingest import ensure_store_from_input

        # MS/UVFITS: ingested once, each partition read and written by a worker
        store = ensure_store_from_input(s.vis, s.time_partitions, s.freq_partitions,
                                        map_partitions=ingest_on_workers(client))
        open_store(store)  # fail early with a one-line error
        return store
    sim_settings = builtin_simulation(s.pipeline)
    path = Path(f"{s.name}-sim.store")
    if (path / "index.h5").exists():
        try:
            idx = open_store(path)
            same = idx.meta.provenance.get("settings") == dataclasses.asdict(sim_settings)
            same = same and len(idx.partitions) == s.time_partitions * s.freq_partitions
        except StoreError:
            same = False
        if same:
            log.info("reusing simulated observation %s", path)
            return str(path)
        raise StoreError(f"{path}: exists but holds a different observation; remove it or pass --vis")
    log.info("simulating the built-in observation into %s (%d x %d partitions, written by the workers)",
             path, s.time_partitions, s.freq_partitions)

    def on_workers(write, pids):
        # yields each partition's info in pid order as the workers finish them, so the simulation's
        # progress lines follow the work (a gathered list would give only the closing line)
        futures = client.compute([delayed(write, pure=False)(pid) for pid in pids])
        for future in futures:
            yield future.result()

    write_simulated_store(path, sim_settings, s.time_partitions, s.freq_partitions, map_partitions=on_workers)
    return str(path)
