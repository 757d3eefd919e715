# Sourced by the FGD experiment scripts (from the repository root, with distill_ret importable):
#   fgd_preset DATASET
# sets PRESET_EXPORT, PRESET_TEACHER_KIND and PRESET_TEACHER_PATH from configs/fgd.py:DATASET: the BEIR export of its
# long documents (qrels under PRESET_EXPORT/qrels), its teacher's kind and path ("-" when the path is empty); exits
# the script with one line when the preset cannot be read.
fgd_preset() {
  local values
  if ! values=$(python - "$1" <<'PYTHON'
import importlib.util
import sys

from distill_ret.data import builders

spec = importlib.util.spec_from_file_location("fgd_config", "configs/fgd.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
config = module.get_config(sys.argv[1])
print(builders.beir_dir(config, config.data.data_dir), config.teacher.kind, config.teacher.path or "-")
PYTHON
  ) || [[ -z $values ]]; then
    echo "$0: could not read configs/fgd.py:$1 (is the venv active?)" >&2
    exit 1
  fi
  read -r PRESET_EXPORT PRESET_TEACHER_KIND PRESET_TEACHER_PATH <<< "$values"
}
