"""Command-line entry point: `distill-ret MODE --config=configs/x.py:preset --workdir=DIR [--config.a.b=v]`.

Parses flags and dispatches to the library function that owns the mode; nothing else lives here.
"""
import importlib
import sys

from absl import app, flags
from ml_collections import config_flags

from distill_ret import distributed
from distill_ret.errors import UserError

# mode -> "module:function"; each function takes (config: ConfigDict, workdir: str).
MODES = {
    "build-data": "distill_ret.data.builders:build_from_config",
    "bm25": "distill_ret.bm25:run_from_config",
    "evaluate": "distill_ret.evaluation:run_from_config",
    "demo": "distill_ret.demo:run_from_config",
    "train": "distill_ret.training.trainer:run_from_config",
    "export": "distill_ret.hf.export:export_from_config",
    "rerank": "distill_ret.teachers.rerank:run_from_config",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Job config file, e.g. configs/bm25.py:cranfield.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this job's outputs (checkpoints, runs, metrics).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-process job (jax.distributed.initialize); also DISTILL_RET_DISTRIBUTED=1."
)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with one-line errors for bad `--config` values and overrides (no tracebacks)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        # A failing get_config() comes back with its traceback embedded: keep the flag and the final message.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        message = f"{lines[0]} {lines[-1]}" if "Traceback (most recent call last):" in lines else str(error)
    except (AttributeError, KeyError) as error:  # raised by ml_collections for an unknown `--config.a.b` field
        overrides = " ".join(arg for arg in argv if arg.startswith("--config."))
        message = f"the config has no field {str(error).strip(chr(34) + chr(39))!r} (overrides: {overrides})"
    sys.stderr.write(f"FATAL Flags parsing error: {message}\nPass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in MODES:
        raise app.UsageError(f"usage: distill-ret MODE --config=... --workdir=...; MODE is one of {sorted(MODES)}")
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("--config and --workdir are required")
    if _DISTRIBUTED.value or distributed.requested_by_environment():
        distributed.initialize()
    module_name, function_name = MODES[argv[1]].split(":")
    try:
        getattr(importlib.import_module(module_name), function_name)(_CONFIG.value, _WORKDIR.value)
    except UserError as error:
        sys.stderr.write(f"distill-ret {argv[1]}: error: {error}\n")
        return 1
    return 0


def run():
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
