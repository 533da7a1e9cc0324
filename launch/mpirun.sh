#!/usr/bin/env bash
# Run the pipeline under MPI on a workstation:  launch/mpirun.sh -n 4 [pipeline arguments]
# rank 0 = Dask scheduler, rank 1 = driver, ranks 2+ = workers (so -n 4 gives 2 workers).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
np=4
if [ "${1:-}" = "-n" ]; then np="$2"; shift 2; fi
venv="${ARL_VENV:-$here/.venv}"
if [ -x "$venv/bin/mpiexec" ]; then mpiexec="$venv/bin/mpiexec"; python="$venv/bin/python"
else mpiexec="$(command -v mpiexec)"; python="$(command -v python3)"; fi
extra=()
# Open MPI refuses root and more ranks than cores unless told; MPICH needs nothing.
if "$mpiexec" --version 2>&1 | grep -qi "open mpi"; then extra=(--allow-run-as-root --oversubscribe); fi
exec "$mpiexec" "${extra[@]}" -n "$np" "$python" -m arl_mpi.pipeline "$@"
