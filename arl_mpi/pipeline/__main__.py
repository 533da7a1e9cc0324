"""``python -m arl_mpi.pipeline``: the command users run under ``srun``/``mpiexec`` or alone.

Every rank parses the settings first (so a bad flag fails everywhere at once, before any
cluster starts); then :func:`arl_mpi.cluster.runtime.run_with_client` makes rank 0 the
scheduler, ranks 2+ workers, and runs the pipeline on rank 1 (the driver).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

from arl_mpi.cli import run_cli, setup_logging
from arl_mpi.cluster.settings import ClusterSettings
from arl_mpi.mpienv import mpi_rank_size
from arl_mpi.pipeline.settings import ConfigExit, Settings, settings_from_args

log = logging.getLogger("arl_mpi.pipeline")


def cluster_settings(s: Settings) -> ClusterSettings:
    """The cluster part of the pipeline settings (Settings inherits these fields)."""
    return ClusterSettings(
        **{f.name: getattr(s, f.name) for f in dataclasses.fields(ClusterSettings)}
    )


def resolve_gridder_threads(s: Settings, client) -> Settings:
    """``--gridder-threads 0`` made the workers' own threads: each worker grids
    its shard in one task at a time, so one ducc0 call should use every thread the worker has
    (``--threads-per-worker``). Not for ``--predict``, whose tasks (one per partition) already
    run side by side on a worker's threads."""
    if s.gridder_threads or s.predict:
        return s
    nthreads = [int(w.get("nthreads") or 1) for w in client.scheduler_info()["workers"].values()]
    n = max(1, min(nthreads, default=1))
    log.info("gridding with %d ducc0 thread(s) per task (the workers' threads; --gridder-threads)", n)
    return dataclasses.replace(s, gridder_threads=n)


def run(s: Settings, client) -> int:
    """Driver side: prepare the store, run the chosen pipeline, write the summary."""
    import warnings

    from arl_mpi.pipeline.outputs import dask_report, write_summary
    from arl_mpi.pipeline.prepare import ensure_store

    # The model (and the PSF of sub-image tasks) enter the graphs as constants on purpose: a
    # lost worker then costs nothing (the scheduler re-sends them); not Dask's "large graph" case.
    warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
    Path(s.name).parent.mkdir(parents=True, exist_ok=True)
    s = resolve_gridder_threads(s, client)
    if s.resume:  # a missing checkpoint or other settings: refused before anything is written
        from arl_mpi.pipeline.checkpoint import check_resume

        check_resume(s.pipeline, s.name, s.image_settings())
    with dask_report(s.name, s.dask_report) as report:  # --dask-report: the whole run
        store = ensure_store(client, s)
        if s.apply_primary_beam:  # an unknown telescope or a missing --mwa-path fails before any imaging
            from arl_mpi.io.store import open_store
            from arl_mpi.pipeline.primary_beam_outputs import check_primary_beam

            check_primary_beam(open_store(store), s.as_dict())
        summary = _run_pipeline(s, client, store)
    if s.dask_report:
        summary["dask_report"] = report["path"]
    from arl_mpi.pipeline.common import peak_memory

    summary["peak_rss_bytes"] = peak_memory(client)
    path = write_summary(s.name, summary)
    log.info("done in %.1f s: %s", summary.get("timings_s", {}).get("total_s", 0.0), path)
    return 0


def _run_pipeline(s: Settings, client, store) -> dict:
    """The summary of the pipeline ``s.pipeline`` run on ``store``."""
    if s.predict:  # WSClean's -predict: no imaging
        from arl_mpi.pipeline.predict import run_predict

        return run_predict(client, s, store)
    summary = _run_imaging(s, client, store)
    if s.save_source_list:  # WSClean's -save-source-list: the components of PREFIX[-POL]-model.fits
        from arl_mpi.io.sourcelist import save_source_list

        pols = summary.get("polarisations", [])
        for prefix in [f"{s.name}-{p}" for p in pols] if len(pols) > 1 else [s.name]:
            summary.setdefault("files", []).append(str(save_source_list(prefix, s.fit_spectral_pol)))
    return summary


def _run_imaging(s: Settings, client, store) -> dict:
    if s.pol:  # WSClean's -pol: every product in one run
        from arl_mpi.pipeline.polarisation import run_polarisations

        return run_polarisations(client, s, store)
    if s.pipeline == "continuum":
        from arl_mpi.pipeline.continuum import run_continuum

        return run_continuum(client, s, store)
    if s.pipeline == "ical":
        from arl_mpi.pipeline.ical import run_ical

        return run_ical(client, s, store)
    from arl_mpi.pipeline.spectral import run_spectral

    return run_spectral(client, s, store)


def main(argv: list[str] | None = None) -> int:
    try:
        s = settings_from_args(argv)
    except ConfigExit as e:
        return e.code
    rank, _ = mpi_rank_size()
    setup_logging(s.log_level, rank, cluster_roles=True)
    from arl_mpi.pipeline.common import check_memory

    check_memory(s)  # every rank, before any cluster starts
    if s.fits_mask:
        from arl_mpi.pipeline.minor import check_masks

        check_masks(s)  # a missing mask or one of another shape fails here, before any output
    if s.predict:
        from arl_mpi.pipeline.predict import precheck

        precheck(s)  # the model image: a bad one fails here, on every rank
    if s.pol and s.vis and (Path(s.vis) / "index.h5").is_file():
        from arl_mpi.io.store import open_store
        from arl_mpi.pipeline.polarisation import check_products, parse_pol

        # products the store cannot form fail here (an MS/UVFITS: once it is ingested)
        check_products(parse_pol(s.pol), list(open_store(s.vis).meta.polarisations), s.vis)
    from arl_mpi.cluster.runtime import run_with_client

    return run_with_client(lambda client: run(s, client), cluster_settings(s))


def entry() -> None:
    """Console-script entry point; every rank exits with the driver's status."""
    sys.exit(run_cli(main, prog="arl_mpi.pipeline"))


if __name__ == "__main__":
    entry()
