"""Training metrics on host 0: a JSON-lines log, TensorBoard event files and a tqdm progress bar.

`metrics.jsonl` has one record {"step": s, "split": "train"|"eval", name: value, ...} per logged step. On
resume the records beyond the restored step (written by the interrupted run after its last checkpoint) are
dropped, so the log always describes one trajectory.
"""
import json
import math
import os
import pathlib

import tqdm
from tensorboardX import SummaryWriter


def truncate_log(path: pathlib.Path, last_step: int) -> None:
    """Keeps only the records with step <= last_step (atomically: temp file + os.replace)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    os.replace(temporary, path)


def read_log(path: str | pathlib.Path, split: str = "train") -> list[dict]:
    """The records of one split, in order."""
    lines = pathlib.Path(path).read_text().splitlines()
    return [record for record in map(json.loads, filter(None, lines)) if record["split"] == split]


class MetricWriter:
    """Writes metrics and drives the progress bar; every method is a no-op on processes other than host 0."""

    def __init__(self, workdir: str | pathlib.Path, *, start_step: int, num_steps: int, enabled: bool):
        self._enabled = enabled
        if not enabled:
            return
        workdir = pathlib.Path(workdir)
        self._log_path = workdir / "metrics.jsonl"
        truncate_log(self._log_path, start_step)
        self._log = self._log_path.open("a")
        self._tensorboard = SummaryWriter(str(workdir / "tensorboard"))
        self._progress = tqdm.tqdm(total=num_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self._enabled:
            return
        record = {"step": step, "split": split, **{name: float(value) for name, value in values.items()}}
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()
        for name, value in values.items():
            if math.isfinite(value):
                self._tensorboard.add_scalar(f"{split}/{name}", value, step)
        if split == "train":
            self._progress.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)

    def advance(self, steps: int) -> None:
        if self._enabled:
            self._progress.update(steps)

    def close(self) -> None:
        if not self._enabled:
            return
        self._progress.close()
        self._tensorboard.close()
        self._log.close()
