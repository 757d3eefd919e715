#!/usr/bin/env bash
# Run one process of a multi-host GPU job; start it on every node (by hand, pdsh, or a scheduler).
#
#   COORDINATOR=node0:12345 NUM_PROCESSES=4 PROCESS_ID=<0..3> \
#     launch/gpu_multihost.sh MODE CONFIG WORKDIR [--config.a.b=v ...]
#
# One process per node drives all of that node's GPUs. COORDINATOR is host:port of process 0 (any free port
# reachable from the other nodes). WORKDIR must be a filesystem shared by all nodes. The packages come from
# the repository's .venv (install with `pip install -e . 'jax[cuda12]'`). Under Slurm use
# launch/slurm_example.sbatch instead: jax reads the process layout from Slurm itself.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: COORDINATOR=host:port NUM_PROCESSES=N PROCESS_ID=i $0 MODE CONFIG WORKDIR [--config.a.b=v ...]" >&2
  exit 2
fi
: "${COORDINATOR:?set COORDINATOR=host:port of process 0}" "${NUM_PROCESSES:?set NUM_PROCESSES}"
: "${PROCESS_ID:?set PROCESS_ID (0 .. NUM_PROCESSES-1)}"
MODE=$1 CONFIG=$2 WORKDIR=$3
shift 3
REPO=$(cd "$(dirname "$0")/.." && pwd)
export DISTILL_RET_COORDINATOR="$COORDINATOR" DISTILL_RET_NUM_PROCESSES="$NUM_PROCESSES"
export DISTILL_RET_PROCESS_ID="$PROCESS_ID"
cd "$REPO"
exec "${PYTHON:-$REPO/.venv/bin/python}" -m distill_ret.main "$MODE" --distributed --config="$CONFIG" \
  --workdir="$WORKDIR" "$@"
