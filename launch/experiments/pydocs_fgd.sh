#!/usr/bin/env bash
# The FGD result table on pydocs (standard-library modules as long documents, docstrings as passages), one command,
# resumable: the stages of launch/experiments/cranfield_fgd.sh (see there: SEEDS, ROOT, DISTILL_RET, EXTRA_ARGS, DRY)
# with the presets configs/fgd.py:pydocs_warmup and pydocs; ROOT defaults to workdirs/experiments/pydocs_fgd.
#   bash launch/experiments/pydocs_fgd.sh
set -euo pipefail

DATASET=pydocs exec bash "$(dirname "$0")/cranfield_fgd.sh" "$@"
