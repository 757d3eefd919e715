# Sourced by the experiment scripts (from the repository root): one resumable stage per call.
#   stage NAME OUTPUT COMMAND...
# runs COMMAND unless OUTPUT exists and says which in one line, "[TAG] NAME: ran in N s" or "[TAG] NAME: skipped
# (OUTPUT exists)"; with DRY=1 it prints "[TAG] NAME: would run: COMMAND" instead of running it, or, when COMMAND is a
# shell function of the script, "[TAG] NAME: would run:" and the commands the function passes to `run`, one per
# line. TAG is $STAGE_TAG, which the sourcing script sets (default: its file name without .sh). A failing COMMAND
# stops the script (set -e).
STAGE_TAG=${STAGE_TAG:-$(basename "$0" .sh)}
DRY=${DRY:-0}

# run COMMAND...: runs COMMAND, or with DRY=1 prints it indented (the commands of a function that a stage calls).
run() {
  if [[ $DRY == 1 ]]; then
    echo "  $*"
  else
    "$@"
  fi
}

stage() {
  local name=$1 output=$2
  shift 2
  if [[ -e $output ]]; then
    echo "[$STAGE_TAG] $name: skipped ($output exists)"
    return
  fi
  if [[ $DRY == 1 ]]; then
    if declare -F "$1" >/dev/null; then
      echo "[$STAGE_TAG] $name: would run:"
      "$@"
    else
      echo "[$STAGE_TAG] $name: would run: $*"
    fi
    return
  fi
  local start=$SECONDS
  "$@"
  echo "[$STAGE_TAG] $name: ran in $((SECONDS - start)) s"
}
