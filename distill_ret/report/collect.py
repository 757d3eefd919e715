"""A workdir's reportable files, read and checked: systems (metrics files grouped over seeds, mean ± spread),
training curves (`metrics.jsonl`), score margins (`*.margins.json`) and the sweeps among the systems (see the package
docstring for the layout each is found in)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import statistics
from collections.abc import Sequence

from distill_ret.data import formats
from distill_ret.errors import ConfigError
from distill_ret.evaluation import MARGINS_SUFFIX
from distill_ret.report.options import ReportOptions, seed_regex, system_names

METRICS_SUFFIX = ".metrics.json"
TRAINING_LOG = "metrics.jsonl"
SWEEP_COMPONENT = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>[^/=]+)")  # a swept directory


@dataclasses.dataclass(frozen=True)
class SystemResult:
    """One system: its measures on every seed, their mean and spread."""

    label: str  # name shown in the table (a `config.report.systems` label, else `path`)
    path: str  # metrics file path relative to the workdir, without suffix and seed component
    split: str  # qrels split named by the metrics files ("" when they name none)
    seeds: dict[str, dict[str, float]]  # seed ("" without a seed component) -> measure -> value
    mean: dict[str, float]  # measure -> mean over the seeds that have it
    spread: dict[str, float]  # measure -> sample standard deviation over seeds (only with >= 2 seeds)
    files: tuple[str, ...]  # the metrics files read, relative to the workdir


@dataclasses.dataclass(frozen=True)
class TrainingRun:
    """One training log: metric name -> [(step, value), ...] ("train/loss", "dev/nDCG@10", ...)."""

    name: str  # directory of metrics.jsonl relative to the workdir (the workdir's own name for itself)
    curves: dict[str, list[tuple[int, float]]]


@dataclasses.dataclass(frozen=True)
class Margins:
    name: str  # margins file path relative to the workdir, without suffix
    system: str
    values: tuple[float, ...]  # s(q, d+) - s(q, d-)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Systems that differ in one `NAME=VALUE` path component: the points of one swept setting."""

    key: str  # the systems' common path with the swept component written NAME=*
    setting: str  # NAME
    values: tuple[str, ...]  # the VALUEs, numeric ones ascending
    systems: tuple[SystemResult, ...]  # one per value, in the same order

    @property
    def numeric(self) -> bool:
        return all(_is_float(value) for value in self.values)


def find_files(workdir: pathlib.Path, output_dir: pathlib.Path) -> tuple[list[pathlib.Path], ...]:
    """(metrics files, training logs, margins files) under the workdir, sorted; hidden entries and the output
    directory are skipped. Links to directories are followed (a run's linked stage-1 students and baselines are
    part of it), each real directory read once, so a link cycle ends."""
    found: tuple[list[pathlib.Path], ...] = ([], [], [])
    skip = output_dir.resolve()
    visited: set[pathlib.Path] = set()
    for root, dirs, names in os.walk(workdir, followlinks=True):
        real = pathlib.Path(root).resolve()
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (pathlib.Path(root) / d).resolve() != skip)
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = pathlib.Path(root) / name
            if name.endswith(METRICS_SUFFIX):
                found[0].append(path)
            elif name == TRAINING_LOG:
                found[1].append(path)
            elif name.endswith(MARGINS_SUFFIX):
                found[2].append(path)
    return found


def read_json(path: pathlib.Path) -> dict:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise formats.FormatError(path, None, f"cannot be read: {error}") from None
    except ValueError as error:
        raise formats.FormatError(path, getattr(error, "lineno", None), f"not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise formats.FormatError(path, None, "must hold a JSON object")
    return payload


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_metrics(path: pathlib.Path) -> tuple[dict[str, float], str]:
    """(measure -> value, split) of one `*.metrics.json` (split from its qrels description `... [split]`)."""
    payload = read_json(path)
    measures = payload.get("measures")
    if not isinstance(measures, dict) or not measures:
        raise formats.FormatError(path, None, "has no \"measures\" object with values")
    for name, value in measures.items():
        if not _is_number(value):
            raise formats.FormatError(path, None, f"measure {name!r} is not a number: {value!r}")
    split = re.search(r"\[([^\[\]]+)\]\s*$", str(payload.get("qrels", "")))
    return {name: float(value) for name, value in measures.items()}, split.group(1) if split else ""


def _system_and_seed(relative: pathlib.PurePath, seed: re.Pattern) -> tuple[str, str]:
    """(system, seed) of a metrics file: its relative path minus the suffix and minus every directory that is a seed
    component, and those components ("" for none)."""
    *directories, file_name = relative.parts
    kept = [part for part in directories if not seed.fullmatch(part)]
    seeds = [part for part in directories if seed.fullmatch(part)]
    return "/".join([*kept, file_name.removesuffix(METRICS_SUFFIX)]), "/".join(seeds)


def _summarise(label: str, path: str, per_seed: dict[str, tuple[dict[str, float], str, str]]) -> SystemResult:
    seeds = {seed: values for seed, (values, _, _) in sorted(per_seed.items())}
    measures = list(dict.fromkeys(name for values in seeds.values() for name in values))
    mean, spread = {}, {}
    for name in measures:
        values = [seed_values[name] for seed_values in seeds.values() if name in seed_values]
        mean[name] = statistics.fmean(values)
        if len(values) > 1:
            spread[name] = statistics.stdev(values)
    splits = sorted({split for _, split, _ in per_seed.values() if split})
    files = tuple(file for _, _, file in (per_seed[seed] for seed in seeds))
    return SystemResult(label, path, ",".join(splits), seeds, mean, spread, files)


def read_systems(workdir: pathlib.Path, paths: list[pathlib.Path], options: ReportOptions) -> list[SystemResult]:
    seed = seed_regex(options.seed_pattern)
    grouped: dict[str, dict[str, tuple[dict[str, float], str, str]]] = {}
    for path in paths:
        relative = path.relative_to(workdir)
        system, seed_name = _system_and_seed(relative, seed)
        values, split = read_metrics(path)
        group = grouped.setdefault(system, {})
        if seed_name in group:
            raise formats.FormatError(path, None, f"is system {system!r} seed {seed_name or '(none)'!r} again, like "
                                                  f"{group[seed_name][2]}")
        group[seed_name] = (values, split, str(relative))
    names = system_names(options.systems)
    unknown = [path for path in names if path not in grouped]
    if unknown:
        raise ConfigError(f"config.report.systems={options.systems!r}: no system {unknown[0]!r}; systems: "
                          f"{sorted(grouped)}")
    order = [*names, *sorted(path for path in grouped if path not in names)]
    return [_summarise(names.get(path, path), path, grouped[path]) for path in order]


def _read_training_log(path: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """Curves of one metrics.jsonl: "train/loss" from train records, every value of the other records by its name
    ("eval" records already name their evaluator: "dev/nDCG@10"; any other split prefixes its name). An unfinished
    last line (a run still writing) is ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise formats.FormatError(path, None, f"cannot be read: {error}") from None
    lines = text.split("\n")
    curves: dict[str, list[tuple[int, float]]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                continue
            raise formats.FormatError(path, number, "not a JSON object") from None
        if not (isinstance(record, dict) and _is_number(record.get("step")) and isinstance(record.get("split"), str)):
            raise formats.FormatError(path, number, "a record needs a numeric \"step\" and a string \"split\"")
        split = record["split"]
        if split == "train":
            values = {"train/loss": record["loss"]} if "loss" in record else {}
        else:
            values = {name if split == "eval" else f"{split}/{name}": value
                      for name, value in record.items() if name not in ("step", "split")}
        for name, value in values.items():
            if _is_number(value):
                curves.setdefault(name, []).append((int(record["step"]), float(value)))
    return curves


def read_runs(workdir: pathlib.Path, paths: list[pathlib.Path]) -> list[TrainingRun]:
    runs = []
    for path in paths:
        relative = path.parent.relative_to(workdir).as_posix()
        runs.append(TrainingRun(workdir.resolve().name if relative == "." else relative, _read_training_log(path)))
    return runs


def read_margins(workdir: pathlib.Path, paths: list[pathlib.Path]) -> list[Margins]:
    found = []
    for path in paths:
        payload = read_json(path)
        system, values = payload.get("system"), payload.get("positive_minus_negative")
        if not isinstance(system, str) or not isinstance(values, list) or not all(map(_is_number, values)):
            raise formats.FormatError(path, None, "must be {\"system\": str, \"positive_minus_negative\": [numbers]}")
        if not values:
            raise formats.FormatError(path, None, "\"positive_minus_negative\" is empty")
        name = path.relative_to(workdir).as_posix().removesuffix(MARGINS_SUFFIX)
        found.append(Margins(name, system, tuple(float(value) for value in values)))
    return found


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def find_sweeps(systems: Sequence[SystemResult]) -> list[Sweep]:
    """Systems with exactly one `NAME=VALUE` directory, grouped by their path with that directory as `NAME=*`;
    a group of two or more is a sweep."""
    grouped: dict[tuple[str, str], list[tuple[str, SystemResult]]] = {}
    for system in systems:
        parts = system.path.split("/")
        found = [(index, match) for index, part in enumerate(parts[:-1])
                 if (match := SWEEP_COMPONENT.fullmatch(part))]
        if len(found) != 1:
            continue
        index, match = found[0]
        key = "/".join([*parts[:index], f"{match['name']}=*", *parts[index + 1:]])
        grouped.setdefault((key, match["name"]), []).append((match["value"], system))
    sweeps = []
    for (key, setting), points in sorted(grouped.items()):
        if len(points) < 2:
            continue
        if all(_is_float(value) for value, _ in points):
            points.sort(key=lambda point: float(point[0]))
        sweeps.append(Sweep(key, setting, tuple(value for value, _ in points), tuple(system for _, system in points)))
    return sweeps


def select_measures(systems: list[SystemResult], options: ReportOptions) -> tuple[str, ...]:
    found = list(dict.fromkeys(name for system in systems for name in system.mean))
    if not options.measures:
        return tuple(found)
    asked = tuple(name.strip() for name in options.measures.split(",") if name.strip())
    missing = [name for name in asked if name not in found]
    if not asked or missing:
        raise ConfigError(f"config.report.measures={options.measures!r}: the metrics files hold {found}")
    return asked
