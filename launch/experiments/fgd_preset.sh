# Sourced by the FGD experiment scripts (from the repository root, with distill_ret importable):
#   fgd_preset DATASET
# prints "EXPORT TEACHER_KIND TEACHER_PATH" of configs/fgd.py:DATASET: the BEIR export of its long documents (qrels
# under EXPORT/qrels), its teacher's kind and path ("-" when the path is empty).
fgd_preset() {
  python - "$1" <<'PYTHON'
import importlib.util
import sys

from distill_ret.data import builders

spec = importlib.util.spec_from_file_location("fgd_config", "configs/fgd.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
config = module.get_config(sys.argv[1])
print(builders.beir_dir(config, config.data.data_dir), config.teacher.kind, config.teacher.path or "-")
PYTHON
}
