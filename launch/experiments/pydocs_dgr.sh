#!/usr/bin/env bash
# The DGR table on pydocs passages (standard-library docstrings; query = a docstring's summary line), one command,
# resumable: the stages of launch/experiments/cranfield_dgr.sh (see there: SEEDS, TEACHERS, ROOT, EXTRA_STAGE1,
# EXTRA_STAGE2) with the presets configs/dgr.py:pydocs_stage1 and pydocs_stage2; the teacher is MiniLM dense (the
# part-4 cross-encoder is trained on Cranfield only); ROOT defaults to workdirs/experiments/pydocs_dgr.
#   bash launch/experiments/pydocs_dgr.sh
set -euo pipefail

DATASET=pydocs exec bash "$(dirname "$0")/cranfield_dgr.sh" "$@"
