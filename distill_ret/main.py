"""Command-line entry point: `distill-ret MODE --config=configs/x.py:preset --workdir=DIR [--config.a.b=v]`.

Parses flags, checks the command line (mode, config file, workdir) and dispatches to the library function that
owns the mode. Every error a user can cause ends as one line `distill-ret MODE: error: ...` on stderr and exit
status 1; a traceback means a bug in distill_ret.
"""
import importlib
import logging
import os
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import ConfigDict, config_flags

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
    "retrieve": "distill_ret.retrieve_mode:run_from_config",
    "mine": "distill_ret.fgd.mine:mine_from_config",
    "candidates": "distill_ret.dgr.candidates:run_from_config",
    "report": "distill_ret.report:run_from_config",
}
EXIT_ERROR = 1
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

_CONFIG = config_flags.DEFINE_config_file("config", None, "Job config file, e.g. configs/bm25.py:cranfield.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this job's outputs (checkpoints, runs, metrics).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-process job (jax.distributed.initialize); also DISTILL_RET_DISTRIBUTED=1."
)


class CommandLineError(UserError):
    """A wrong mode, flag, config file or workdir on the command line."""


def _mode_of(argv: list[str]) -> str:
    """The first positional argument (the mode, when the command line is right), or "" when there is none."""
    return next((arg for arg in argv[1:] if not arg.startswith("-")), "")


def report(mode: str, message: str) -> int:
    """Prints the one-line error `distill-ret MODE: error: message` and returns the exit status."""
    prefix = f"distill-ret {mode}" if mode in MODES else "distill-ret"
    sys.stderr.write(f"{prefix}: error: {' '.join(str(message).split())}\n")
    return EXIT_ERROR


def _config_file_argument(argv: list[str]) -> str | None:
    """The value of `--config=PATH[:preset]` (or `--config PATH`) on the command line, if given."""
    for index, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.removeprefix("--config=")
        if arg == "--config" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def check_config_file(argv: list[str]) -> None:
    """A missing or unreadable `--config` file is named before absl tries to load it."""
    value = _config_file_argument(argv)
    if value is None:
        return
    path = value.split(":", 1)[0]
    if not os.path.isfile(path):
        raise CommandLineError(f"--config={value}: {path} is not a file")
    if not os.access(path, os.R_OK):
        raise CommandLineError(f"--config={value}: {path} is not readable")


def _flags_message(argv: list[str], error: Exception) -> str:
    """One line from absl's or ml_collections' flag-parsing error (a failing get_config() embeds a traceback)."""
    if isinstance(error, (AttributeError, KeyError)):  # ml_collections: an unknown `--config.a.b` field
        overrides = " ".join(arg for arg in argv if arg.startswith("--config."))
        return f"the config has no field {str(error).strip(chr(34) + chr(39))!r} (overrides: {overrides})"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if "Traceback (most recent call last):" in lines:
        return f"{lines[0]} {lines[-1]}"
    return " ".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing; every error is one line and exit status 1 (no traceback, no usage dump)."""
    mode = _mode_of(argv)
    try:
        check_config_file(argv)
        return flags.FLAGS(argv)
    except CommandLineError as error:
        message = str(error)
    except (flags.Error, AttributeError, KeyError, OSError, SyntaxError) as error:
        message = _flags_message(argv, error)
    sys.exit(report(mode, message))


def check_workdir(workdir: str) -> None:
    """The workdir is a writable directory, or can be created as one (nothing is created here)."""
    path = os.path.abspath(workdir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise CommandLineError(f"--workdir={workdir} {what}, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created: {existing} is not writable"
        raise CommandLineError(f"--workdir={workdir} {what}")


def check_command_line(argv: list[str]) -> str:
    """The mode named by a well-formed command line; raises CommandLineError otherwise."""
    if len(argv) != 2 or argv[1] not in MODES:
        given = " ".join(argv[1:]) or "nothing"
        raise CommandLineError(f"usage: distill-ret MODE --config=... --workdir=...; MODE is one of {sorted(MODES)} "
                               f"(got {given})")
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise CommandLineError("--config and --workdir are required")
    if not isinstance(_CONFIG.value, ConfigDict):
        raise CommandLineError(f"--config={config_flags.get_config_filename(flags.FLAGS['config'])} did not load")
    check_workdir(_WORKDIR.value)
    return argv[1]


def is_own_or_important(record: logging.LogRecord) -> bool:
    """Keeps warnings and errors, and distill_ret's own INFO lines; drops third-party INFO chatter (jax's
    "Unable to initialize backend 'tpu'", bm25s's index building, TFDS's "Downloading and preparing")."""
    return record.levelno >= logging.WARNING or os.path.abspath(record.pathname).startswith(PACKAGE_DIR + os.sep)


def is_out_of_memory(error: Exception) -> bool:
    """Whether an XLA runtime error is an allocation the device (or the host, for the CPU) could not make."""
    message = str(error)
    return "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower()


def file_error_message(error: OSError) -> str:
    """`PATH: reason` (`PATH -> OTHER: reason` for a rename or a link) of a file operation the system refused: a
    workdir that cannot be created, a full disk, a path made unreadable while the job ran."""
    target = f"{error.filename} -> {error.filename2}" if error.filename2 is not None else str(error.filename)
    return f"{target}: {error.strerror or error}"


def main(argv: list[str]) -> int:
    mode = _mode_of(argv)
    try:
        mode = check_command_line(argv)
        if _DISTRIBUTED.value or distributed.requested_by_environment():
            distributed.initialize()
        module_name, function_name = MODES[mode].split(":")
        getattr(importlib.import_module(module_name), function_name)(_CONFIG.value, _WORKDIR.value)
    except UserError as error:
        return report(mode, str(error))
    except OSError as error:
        if error.filename is None:
            raise
        return report(mode, file_error_message(error))
    except jax.errors.JaxRuntimeError as error:
        if not is_out_of_memory(error):
            raise
        return report(mode, f"the device ran out of memory ({str(error).splitlines()[0]}); lower the batch sizes "
                            f"(config.*.batch_size) or raise config.train.grad_accum_steps")
    return 0


def run():
    absl_logging.get_absl_handler().addFilter(is_own_or_important)
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
