"""Command-line entry point: `distill-ret MODE --config=configs/x.py:preset --workdir=DIR [--config.a.b=v]`.

Parses flags and dispatches to the library function that owns the mode; nothing else lives here.
"""
import importlib

from absl import app, flags
from ml_collections import config_flags

# mode -> "module:function"; each function takes (config: ConfigDict, workdir: str).
MODES = {
    "build-data": "distill_ret.data.builders:build_from_config",
    "bm25": "distill_ret.bm25:run_from_config",
    "evaluate": "distill_ret.evaluation:run_from_config",
    "demo": "distill_ret.demo:run_from_config",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Job config file, e.g. configs/bm25.py:cranfield.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this job's outputs (checkpoints, runs, metrics).")


def main(argv):
    if len(argv) != 2 or argv[1] not in MODES:
        raise app.UsageError(f"usage: distill-ret MODE --config=... --workdir=...; MODE is one of {sorted(MODES)}")
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("--config and --workdir are required")
    module_name, function_name = MODES[argv[1]].split(":")
    getattr(importlib.import_module(module_name), function_name)(_CONFIG.value, _WORKDIR.value)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
