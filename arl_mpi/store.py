"""``python -m arl_mpi.store {info,verify} STORE``: inspect or check a visibility store."""

from __future__ import annotations

import argparse
import json
import sys

from arl_mpi.cli import run_cli, setup_logging
from arl_mpi.errors import StoreError
from arl_mpi.io.store import open_store, verify_store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m arl_mpi.store", description=__doc__)
    p.add_argument("command", choices=["info", "verify"])
    p.add_argument("store")
    args = p.parse_args(argv)
    setup_logging("WARNING")
    idx = open_store(args.store)
    if args.command == "info":
        m = idx.meta
        print(json.dumps({
            "path": str(idx.path), "schema_version": idx.schema_version, "created": idx.created,
            "telescope": m.telescope, "antennas": m.configuration.nant, "nchan": int(m.frequency.size),
            "frequency_hz": [float(m.frequency[0]), float(m.frequency[-1])], "polarisations": m.polarisations,
            "phase_centre_deg": [float(m.phase_centre.ra.deg), float(m.phase_centre.dec.deg)],
            "partitions": len(idx.partitions), "time_blocks": idx.ntime_blocks, "freq_blocks": idx.nfreq_blocks,
            "visibilities": idx.nvis,
        }, indent=2))
        return 0
    problems = verify_store(idx)
    if problems:
        raise StoreError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    print(f"{idx.path}: OK, {len(idx.partitions)} partitions verified")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="arl_mpi.store"))
