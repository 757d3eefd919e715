#!/usr/bin/env bash
# Run a distill-ret job on every worker of a Cloud TPU VM pod slice (one process per worker).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b [PROJECT=my-project] \
#     launch/tpu_pod.sh MODE CONFIG WORKDIR [--config.a.b=v ...]
#
# 1. copies this repository (without .venv and workdirs) to ~/distill_ret on all workers;
# 2. creates or updates ~/distill_ret/.venv on every worker and installs the package with jax[tpu];
# 3. starts `python -m distill_ret.main MODE ... --distributed` on all workers at once; jax.distributed
#    finds the coordinator, process count and ids from the TPU metadata, so nothing else is needed.
# WORKDIR must be the same shared directory on every worker (checkpoints are written shard by shard by
# all workers), e.g. a bucket mounted with gcsfuse at the same path, or a Filestore/NFS mount.
# Preemption: a SIGTERM on the workers makes every process save a checkpoint at the same step and exit 0;
# rerunning the same command resumes from it.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: TPU_NAME=... ZONE=... $0 MODE CONFIG WORKDIR [--config.a.b=v ...]" >&2
  exit 2
fi
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
MODE=$1 CONFIG=$2 WORKDIR=$3
shift 3
REPO=$(cd "$(dirname "$0")/.." && pwd)
GCLOUD=(gcloud compute tpus tpu-vm)
TARGET=(--zone="$ZONE" --worker=all)
if [[ -n "${PROJECT:-}" ]]; then
  TARGET+=(--project="$PROJECT")
fi
REMOTE_DIR='~/distill_ret'

ARCHIVE=$(mktemp -t distill_ret.XXXXXX.tar.gz)
trap 'rm -f "$ARCHIVE"' EXIT
tar -C "$REPO" --exclude=.venv --exclude=workdirs --exclude=.git -czf "$ARCHIVE" .
"${GCLOUD[@]}" scp "$ARCHIVE" "$TPU_NAME:/tmp/distill_ret.tar.gz" "${TARGET[@]}"

SETUP="mkdir -p $REMOTE_DIR && tar -C $REMOTE_DIR -xzf /tmp/distill_ret.tar.gz && cd $REMOTE_DIR \
  && { test -x .venv/bin/python || python3 -m venv .venv; } \
  && .venv/bin/python -m pip install -q --upgrade pip \
  && .venv/bin/python -m pip install -q -e . 'jax[tpu]'"
"${GCLOUD[@]}" ssh "$TPU_NAME" "${TARGET[@]}" --command="$SETUP"

printf -v EXTRA ' %q' "$@"
RUN="cd $REMOTE_DIR && .venv/bin/python -m distill_ret.main $(printf %q "$MODE") --distributed \
  --config=$(printf %q "$CONFIG") --workdir=$(printf %q "$WORKDIR")$EXTRA"
"${GCLOUD[@]}" ssh "$TPU_NAME" "${TARGET[@]}" --command="$RUN"
