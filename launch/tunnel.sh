#!/usr/bin/env bash
# Print the ssh command that tunnels the Dask dashboard of this job to your laptop.
# Inside a SLURM job the scheduler (rank 0) runs on the first node of the allocation and
# binds the dashboard to localhost:8787 (--dashboard-address to change it).
port="${ARL_DASHBOARD_PORT:-8787}"
if [ -n "${SLURM_JOB_NODELIST:-}" ] && command -v scontrol >/dev/null; then
  node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
else
  node="$(hostname)"
fi
login="${SLURM_SUBMIT_HOST:-login-node}"
echo "Dashboard: on your laptop run"
echo "  ssh -N -L 8787:localhost:$port -J ${USER:-you}@$login ${USER:-you}@$node"
echo "then open http://localhost:8787/status"
