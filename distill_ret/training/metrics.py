"""Training metrics: sums and counts (never means of means), and host 0's JSON-lines log, TensorBoard event files
and tqdm progress bar.

A metric value is a scalar (a per-step value such as the learning rate: averaged over steps) or a `(sum, count)`
pair (a per-example or per-token quantity). Everything is carried as `(sum, count)` (a scalar counts once), added
across micro-batches, eval batches and log windows, and divided only when a value is written.

`metrics.jsonl` has one record {"step": s, "split": "train"|"eval", name: value, ...} per logged step. On
resume the records beyond the restored step (written by the interrupted run after its last checkpoint) are
dropped, and TensorBoard gets a fresh event file that purges the steps after the restored one, so both describe
one trajectory. TensorBoard tags are the record names made legal (`dev/nDCG@10` -> `eval/dev/nDCG_at_10`).
"""
import json
import math
import os
import pathlib
import re
import time
from typing import Any, Mapping

import jax.numpy as jnp
import tqdm
from tensorboardX import SummaryWriter

SumCount = tuple[Any, Any]


def as_sum_count(value: Any) -> SumCount:
    """A metric value as a float32 (sum, count) pair: a (sum, count) pair as it is, a scalar as (value, 1)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"a metric is a scalar or a (sum, count) pair, got a sequence of {len(value)}")
        total, count = value
        return jnp.asarray(total, jnp.float32), jnp.asarray(count, jnp.float32)
    return jnp.asarray(value, jnp.float32), jnp.ones((), jnp.float32)


def sum_counts(metrics: Mapping[str, Any]) -> dict[str, SumCount]:
    """Every metric of a dict as a (sum, count) pair."""
    return {name: as_sum_count(value) for name, value in metrics.items()}


def safe_ratio(total: Any, count: Any) -> Any:
    """total / count, and 0 where count is 0 (then the total is 0 too); works on arrays and tracers."""
    return total / jnp.where(count > 0, count, 1.0)


class MetricTotals:
    """Host-side running (sum, count) per metric name; `means()` is sum of sums / sum of counts."""

    def __init__(self):
        self._totals: dict[str, list[float]] = {}

    def add(self, pairs: Mapping[str, SumCount]) -> None:
        for name, (total, count) in pairs.items():
            running = self._totals.setdefault(name, [0.0, 0.0])
            running[0] += float(total)
            running[1] += float(count)

    def means(self) -> dict[str, float]:
        """Each metric's sum / count; a metric that counted nothing (count 0) is left out."""
        return {name: total / count for name, (total, count) in self._totals.items() if count > 0}

    def clear(self) -> None:
        self._totals.clear()

    def __bool__(self) -> bool:
        return bool(self._totals)


def ratio(pair: SumCount) -> float:
    """sum / count of one host (sum, count) pair; a zero count gives 0.0 (nothing was counted)."""
    total, count = float(pair[0]), float(pair[1])
    return total / count if count > 0 else 0.0


def tensorboard_tag(name: str) -> str:
    """A legal TensorBoard tag for a metric name: '@' -> '_at_', any other character outside [A-Za-z0-9_./-] -> '_'."""
    return re.sub(r"[^A-Za-z0-9_./\-]", "_", name.replace("@", "_at_"))


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
        # Every run (fresh or resumed) starts a new event file whose purge marker drops what earlier files logged after
        # `start_step`. tensorboardX names files by the second they were opened; the nanosecond suffix keeps a restart
        # within the same second from overwriting the previous file, and keeps name order = opening order.
        self._tensorboard = SummaryWriter(str(workdir / "tensorboard"), purge_step=start_step + 1,
                                          filename_suffix=f".{time.time_ns():020d}")
        self._progress = tqdm.tqdm(total=num_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self._enabled:
            return
        record = {"step": step, "split": split, **{name: float(value) for name, value in values.items()}}
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()
        for name, value in values.items():
            if math.isfinite(value):
                self._tensorboard.add_scalar(tensorboard_tag(f"{split}/{name}"), value, step)
        if split == "train" and "loss" in values:
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
