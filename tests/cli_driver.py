"""Runs several `distill-ret` command lines in one process, each exactly as the console script would run it.

`python tests/cli_driver.py CASES.json RESULTS.json`: CASES is a list of {"id", "argv", "cwd"}; RESULTS maps each id
to {"code": exit status, "stderr": everything written to file descriptor 2 meanwhile (Python, absl logging and C
libraries alike)}. An exception escaping `main` is printed as the console script would print it (a traceback),
so the suite sees it. One process for many cases saves the 3-5 s of imports each subprocess costs.
"""
import contextlib
import json
import os
import sys
import tempfile
import traceback

from absl import flags
from absl import logging as absl_logging

from distill_ret import main as cli


@contextlib.contextmanager
def captured_fd(fd: int):
    """Redirects file descriptor `fd` to a temporary file; yields a function returning what was written."""
    with tempfile.TemporaryFile() as capture:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(fd)
        os.dup2(capture.fileno(), fd)
        try:
            yield lambda: (capture.seek(0), capture.read().decode("utf-8", "replace"))[1]
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)


def run_case(argv: list[str], cwd: str) -> dict:
    """Parses flags and runs main like `absl.app.run` (sys.argv is what ml_collections reads overrides from)."""
    os.chdir(cwd)
    for name in [name for name in flags.FLAGS if name.startswith("config.")]:  # the previous case's overrides
        delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
    sys.argv = ["distill-ret", *argv]
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), captured_fd(2) as stderr:
        try:
            code = cli.main(cli.parse_flags(sys.argv))
        except SystemExit as exit_:
            code = exit_.code
        except Exception:  # noqa: BLE001 - a bug in distill_ret: shown as the console script would show it
            traceback.print_exc()
            code = 1
        text = stderr()
    return {"code": code, "stderr": text}


def main(cases_path: str, results_path: str) -> None:
    absl_logging.use_absl_handler()
    absl_logging.get_absl_handler().addFilter(cli.is_own_or_important)
    with open(cases_path, encoding="utf-8") as handle:
        cases = json.load(handle)
    results = {case["id"]: run_case(case["argv"], case["cwd"]) for case in cases}
    with open(results_path, "w", encoding="utf-8") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
