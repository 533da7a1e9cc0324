"""Shared by the benchmarks: simulate the LOW-core observation into a store, once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def ensure_simulated_store(
    store: Path,
    partitions: int,
    ntimes: int,
    nchan: int,
    rmax_m: float = 1000.0,
    processes: int = 2,
    env: dict | None = None,
    quiet: bool = False,
) -> list[str]:
    """Run ``python -m arl_mpi.simulate`` for ``store`` unless it is already finished
    (``index.h5`` present); returns the command (for the benchmark's report)."""
    cmd = [sys.executable, "-m", "arl_mpi.simulate", str(store), "--time-partitions", str(partitions),
           "--sim-ntimes", str(ntimes), "--sim-nchan", str(nchan), "--sim-rmax-m", str(rmax_m),
           "--processes", str(processes)]  # fmt: skip
    if quiet:
        cmd += ["--log-level", "WARNING"]
    if not (Path(store) / "index.h5").exists():
        subprocess.run(cmd, check=True, env=env or dict(os.environ, PYTHONPATH=str(REPO)))
    return cmd


def ensure_mwa_rotated_ms(
    ms: Path,
    ntimes: int = 140,
    dt_s: float = 8.0,
    nsources: int = 6,
    fov_deg: float = 10.0,
    flux_range: tuple[float, float] = (0.5, 5.0),
    noise_jy: float = 2.0,
    seed: int = 2024,
    time_partitions: int = 8,
) -> dict:
    """The benchmark observation of issue 13 as a MeasurementSet ``ms`` (made once).

    Real MWA geometry: the antenna positions, baselines (the snapshot's cross-correlation
    rows), phase centre, channels and start time of the MWA snapshot MS shipped in
    pyuvdata 2.4.5, rotated with the Earth over ``ntimes`` x ``dt_s`` seconds; ``nsources``
    flat-spectrum point sources in a ``fov_deg`` square plus Gaussian noise of ``noise_jy``
    per real/imaginary part; correlations XX, YY. Simulated into a store beside ``ms``
    (by time blocks, so memory stays at one block), exported with
    :func:`arl_mpi.io.ms.write_ms`. Returns the recipe and the injected components (also
    written to ``ms``'s sibling ``*.sky.json``), which the comparison checks fluxes against.
    """
    import json

    import numpy as np

    sys.path.insert(0, str(REPO))
    from arl_mpi.io.ms import MSReader, write_ms
    from arl_mpi.io.store import StoreMeta, create_store, finalize_store, open_store, write_partition
    from arl_mpi.models import Visibility
    from arl_mpi.simulation.builtin import component_record, partition_seed
    from arl_mpi.simulation.observation import add_components, add_noise, antenna_uvw, random_components
    from arl_mpi.testing import realdata

    ms = Path(ms)
    sky_file = ms.with_name(ms.name + ".sky.json")
    if (ms / "table.dat").exists() and sky_file.exists():
        return json.loads(sky_file.read_text())
    src = MSReader(realdata.fetch_pyuvdata_file(realdata.MWA_MS))
    cfg, pc = src.configuration(), src.phase_centre()
    a1 = np.asarray(src.main.getcol("ANTENNA1"), np.int32)[src.rows]
    a2 = np.asarray(src.main.getcol("ANTENNA2"), np.int32)[src.rows]
    cross = a1 != a2
    a1, a2 = a1[cross], a2[cross]
    freq, cw = src.frequency, src.channel_width
    times = float(src.times[0]) + (np.arange(ntimes) - (ntimes - 1) / 2) * dt_s
    src.close()
    pols = ["XX", "YY"]
    comps = random_components(pc, np.deg2rad(fov_deg), nsources, flux_range=flux_range,
                              ref_freq=float(freq.mean()), seed=seed, spectral_index_range=(0.0, 0.0))
    recipe = {"source": realdata.MWA_MS, "ntimes": ntimes, "dt_s": dt_s, "nbaselines": int(a1.size),
              "nchan": int(freq.size), "polarisations": pols, "noise_jy": noise_jy, "seed": seed,
              "components": [component_record(c) for c in comps]}
    store = ms.with_name(ms.name + ".sim.store")
    if not (store / "index.h5").exists():
        import shutil

        shutil.rmtree(store, ignore_errors=True)
        create_store(store)
        infos = []
        for tb, tt in enumerate(np.array_split(times, time_partitions)):
            auvw = antenna_uvw(cfg.xyz, tt, pc)
            nb, nrow = a1.size, tt.size * a1.size
            shape = (nrow, freq.size, len(pols))
            vis = Visibility(
                time=np.repeat(tt, nb), uvw=(auvw[:, a2, :] - auvw[:, a1, :]).reshape(-1, 3),
                antenna1=np.tile(a1, tt.size), antenna2=np.tile(a2, tt.size),
                vis=np.zeros(shape, np.complex64), weight=np.ones(shape, np.float32),
                flags=np.zeros(shape, bool), frequency=freq, channel_width=cw, polarisations=pols,
                phase_centre=pc, integration_time=np.full(nrow, dt_s),
            )  # fmt: skip
            add_components(vis, comps)
            add_noise(vis, noise_jy, partition_seed(seed, tb, 0))
            infos.append(write_partition(store, vis, pid=tb, time_block=tb, freq_block=0, chan_start=0))
        meta = StoreMeta(phase_centre=pc, frequency=freq, channel_width=cw, polarisations=pols,
                         configuration=cfg, telescope="MWA", provenance={"simulated": True, **recipe})
        finalize_store(store, meta, infos)
    if not (ms / "table.dat").exists():
        write_ms(open_store(store), ms, telescope="MWA")
    sky_file.write_text(json.dumps(recipe, indent=1))
    return recipe
