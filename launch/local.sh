#!/usr/bin/env bash
# Run a distill-ret job on this machine, as one process or as several cooperating processes.
#
#   launch/local.sh MODE CONFIG WORKDIR [--config.a.b=v ...]
#   launch/local.sh train configs/t5_seq2seq.py:tiny workdirs/t5_toy
#
# NUM_PROCESSES=N (default 1) starts N processes joined through a loopback coordinator (jax.distributed), the way
# a multi-host job runs; it is how the multi-host code path is exercised on one machine. On CPU,
# DEVICES_PER_PROCESS=D gives each process D fake devices (XLA --xla_force_host_platform_device_count).
# Logs of process i > 0 go to WORKDIR/process_i.log; process 0 writes to the terminal.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 MODE CONFIG WORKDIR [--config.a.b=v ...]" >&2
  exit 2
fi
MODE=$1 CONFIG=$2 WORKDIR=$3
shift 3
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-"$REPO/.venv/bin/python"}
NUM_PROCESSES=${NUM_PROCESSES:-1}
if [[ -n "${DEVICES_PER_PROCESS:-}" ]]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
fi
mkdir -p "$WORKDIR"
cd "$REPO"
if [[ "$NUM_PROCESSES" -eq 1 ]]; then
  exec "$PYTHON" -m distill_ret.main "$MODE" --config="$CONFIG" --workdir="$WORKDIR" "$@"
fi

PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export DISTILL_RET_COORDINATOR="127.0.0.1:$PORT" DISTILL_RET_NUM_PROCESSES="$NUM_PROCESSES"
PIDS=()
trap 'kill -TERM "${PIDS[@]}" 2>/dev/null || true' INT TERM
for ((i = NUM_PROCESSES - 1; i >= 0; i--)); do
  if [[ $i -eq 0 ]]; then
    DISTILL_RET_PROCESS_ID=0 "$PYTHON" -m distill_ret.main "$MODE" --distributed --config="$CONFIG" \
      --workdir="$WORKDIR" "$@" &
  else
    DISTILL_RET_PROCESS_ID=$i "$PYTHON" -m distill_ret.main "$MODE" --distributed --config="$CONFIG" \
      --workdir="$WORKDIR" "$@" >"$WORKDIR/process_$i.log" 2>&1 &
  fi
  PIDS+=($!)
done
STATUS=0
for pid in "${PIDS[@]}"; do
  wait "$pid" || STATUS=$?
done
exit "$STATUS"
