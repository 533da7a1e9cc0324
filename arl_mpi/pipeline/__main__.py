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


def run(s: Settings, client) -> int:
    """Driver side: prepare the store, run the chosen pipeline, write the summary."""
    import warnings

    from arl_mpi.pipeline.outputs import write_summary
    from arl_mpi.pipeline.prepare import ensure_store

    # The model (and the PSF of sub-image tasks) enter the graphs as constants on purpose: a
    # lost worker then costs nothing (the scheduler re-sends them); not Dask's "large graph" case.
    warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
    Path(s.name).parent.mkdir(parents=True, exist_ok=True)
    store = ensure_store(client, s)
    if s.pipeline == "continuum":
        from arl_mpi.pipeline.continuum import run_continuum

        summary = run_continuum(client, s, store)
    elif s.pipeline == "ical":
        from arl_mpi.pipeline.ical import run_ical

        summary = run_ical(client, s, store)
    else:
        from arl_mpi.pipeline.spectral import run_spectral

        summary = run_spectral(client, s, store)
    from arl_mpi.pipeline.common import peak_memory

    summary["peak_rss_bytes"] = peak_memory(client)
    path = write_summary(s.name, summary)
    log.info("done in %.1f s: %s", summary.get("timings_s", {}).get("total_s", 0.0), path)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        s = settings_from_args(argv)
    except ConfigExit as e:
        return e.code
    rank, _ = mpi_rank_size()
    setup_logging(s.log_level, rank, cluster_roles=True)
    from arl_mpi.pipeline.common import check_memory

    check_memory(s)  # every rank, before any cluster starts
    from arl_mpi.cluster.runtime import run_with_client

    return run_with_client(lambda client: run(s, client), cluster_settings(s))


def entry() -> None:
    """Console-script entry point; every rank exits with the driver's status."""
    sys.exit(run_cli(main, prog="arl_mpi.pipeline"))


if __name__ == "__main__":
    entry()
