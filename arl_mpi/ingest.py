"""``python -m arl_mpi.ingest INPUT STORE``: a MeasurementSet or UVFITS file into an HDF5 store.

    python -m arl_mpi.ingest obs.ms obs.store --time-partitions 8 [--freq-partitions 2]
        [--column DATA|CORRECTED_DATA|MODEL_DATA] [--field 0] [--spw 0]
    mpiexec -n 4 python -m arl_mpi.ingest obs.ms obs.store --time-partitions 8

Under MPI every rank reads the rows of its own partitions and writes them (partition
``pid % size == rank``); rank 0 writes the index. The input is opened read-only and is
never modified. One MS field and spectral window per run (``--field``, ``--spw``; run
once per spw); a UVFITS file's IFs are ingested together when contiguous in frequency, and
``--field`` picks a source of a multi-source file (AIPS SU table). The pipeline's ``--vis``
accepts an MS or UVFITS file directly: it is
ingested once into ``INPUT.arlstore`` beside it (or under ``$ARL_CACHE`` when that
directory is not writable), reused while the input is unchanged and replaced when it changes.
"""

from __future__ import annotations

import argparse
import logging
import sys

from arl_mpi.cli import run_cli, setup_logging
from arl_mpi.errors import ConfigError
from arl_mpi.io.ingest import detect_format, ensure_store_from_input, ingest, open_reader  # noqa: F401 (API)
from arl_mpi.mpienv import mpi_rank_size

log = logging.getLogger("arl_mpi.ingest")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m arl_mpi.ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="MeasurementSet directory or UVFITS file (opened read-only)")
    p.add_argument("store", help="output store directory (must not exist)")
    p.add_argument("--time-partitions", type=int, default=4)
    p.add_argument("--freq-partitions", type=int, default=1)
    p.add_argument(
        "--column",
        default="DATA",
        help="MS data column: DATA, CORRECTED_DATA or MODEL_DATA (UVFITS has only DATA)",
    )
    p.add_argument("--field", type=int, default=0)
    p.add_argument("--spw", type=int, default=0)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.column not in ("DATA", "CORRECTED_DATA", "MODEL_DATA"):
        raise ConfigError(f"--column {args.column}: must be DATA, CORRECTED_DATA or MODEL_DATA")
    rank, _ = mpi_rank_size()
    setup_logging(args.log_level, rank)
    idx = ingest(
        args.input,
        args.store,
        time_partitions=args.time_partitions,
        freq_partitions=args.freq_partitions,
        column=args.column,
        field=args.field,
        spw=args.spw,
    )
    if idx is not None:
        log.info(
            "wrote %s: %d partitions, %d visibilities, %d channels, %s",
            idx.path,
            len(idx.partitions),
            idx.nvis,
            idx.meta.frequency.size,
            " ".join(idx.meta.polarisations),
        )
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(run_cli(main, prog="arl_mpi.ingest"))


if __name__ == "__main__":
    entry()
