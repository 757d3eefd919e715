# Sourced by the experiment scripts (from the repository root): one resumable stage per call.
#   stage NAME OUTPUT COMMAND...
# runs COMMAND unless OUTPUT exists and says which in one line, "[TAG] NAME: ran in N s" or "[TAG] NAME: skipped
# (OUTPUT exists)"; with DRY=1 it prints "[TAG] NAME: would run: COMMAND" instead of running it. TAG is $STAGE_TAG,
# which the sourcing script sets (default: its file name without .sh). A failing COMMAND stops the script (set -e).
STAGE_TAG=${STAGE_TAG:-$(basename "$0" .sh)}
DRY=${DRY:-0}

stage() {
  local name=$1 output=$2
  shift 2
  if [[ -e $output ]]; then
    echo "[$STAGE_TAG] $name: skipped ($output exists)"
    return
  fi
  if [[ $DRY == 1 ]]; then
    echo "[$STAGE_TAG] $name: would run: $*"
    return
  fi
  local start=$SECONDS
  "$@"
  echo "[$STAGE_TAG] $name: ran in $((SECONDS - start)) s"
}
