"""A workdir -> its results table, `report.md`, `results.json` and PNG plots (mode `report`).

What is reported, found anywhere under the workdir:
- every `<name>.metrics.json` (bm25, evaluate, retrieve, rerank): one system per file path relative to the workdir
  minus the suffix, with a seed component (a path part matching `config.report.seed_pattern`, e.g. `seed0` or `s1`)
  removed, so that `seed0/fgd/retrieve-test` and `seed1/fgd/retrieve-test` are one system `fgd/retrieve-test` with
  two seeds: the table shows the mean over seeds ± the spread (sample standard deviation, ddof=1; no ± with one
  seed). `results.json` keeps every seed's values.
- every training run's `metrics.jsonl`: curves of the train loss and of every evaluator measure by step.
- every `<name>.margins.json` = {"system": str, "positive_minus_negative": [float, ...]}: the distribution of the
  score margin s(q, d+) - s(q, d-) (FGD's Figure 4); `evaluation.margins_from_scores` computes it from a run and qrels.
- paired comparisons (`config.report.baseline` names a system by label or path): every other system against it, seed
  by seed (distill_ret/significance.py: equal seed names pair up, a seedless baseline pairs with every seed): the
  mean and spread of the differences and the pairs won; with `config.report.qrels_path`, also a two-sided paired
  randomization test over queries, each seed's run file (the metrics file's "run") evaluated per query against those
  qrels, which must reproduce the metrics file's values (else they are not the qrels it was evaluated with).
- sweeps: systems whose paths differ only in one directory `NAME=VALUE` (e.g. `sweeps/m_gap=0.5/dev` and
  `sweeps/m_gap=1/dev`) are the points of sweep `sweeps/m_gap=*/dev`: a table (one row per value, numeric values
  ascending) and a plot of every measure against the value (lines for numbers, bars for names), as the DGR paper's
  Figure 2 plots nDCG against m_gap and the list length.

Outputs go to `config.report.output_dir` (default `<workdir>/report/`): `report.md`, `results.json`, `metrics.png`
(grouped bars per measure, error bars = spread), `curves-<run>.png`, `margins-<name>.png` and `sweep-<name>.png`.
Each is written atomically after every input has been read and every plot rendered. A manifest
(`.report-manifest.json`) lists what reports wrote there: a report replaces those files and refuses to replace any
other.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import pathlib
import re
import statistics
from collections.abc import Sequence

import ml_collections
from matplotlib.figure import Figure

from distill_ret import evaluation, significance
from distill_ret.data import formats
from distill_ret.evaluation import MARGINS_SUFFIX
from distill_ret.errors import ConfigError, UserError

METRICS_SUFFIX = ".metrics.json"
TRAINING_LOG = "metrics.jsonl"
MANIFEST = ".report-manifest.json"
MANIFEST_KIND = "distill_ret report outputs"
DEFAULT_OUTPUT_DIR = "report"
RECOMPUTED_TOLERANCE = 1e-6  # a run's per-query evaluation must give its metrics file's values within this
SWEEP_COMPONENT = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>[^/=]+)")  # a swept directory


class NothingToReport(UserError, ValueError):
    """The workdir holds no metrics file, training log or margins file."""


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


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One system against the baseline: its paired differences, per measure that both sides hold."""

    label: str
    path: str
    differences: dict[str, significance.PairedDifference]  # measure -> differences


@dataclasses.dataclass(frozen=True)
class Report:
    workdir: str
    output_dir: str
    measures: tuple[str, ...]  # the table's measure columns, in order
    systems: tuple[SystemResult, ...]
    runs: tuple[TrainingRun, ...]
    margins: tuple[Margins, ...]
    sweeps: tuple[Sweep, ...]
    table: str  # the aligned text table printed on the terminal
    files: tuple[str, ...]  # output paths written
    baseline: str = ""  # label of the system compared against ("" without comparisons)
    comparisons: tuple[Comparison, ...] = ()
    comparison_table: str = ""  # the aligned text table of the comparisons


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    output_dir: str = ""  # "" = <workdir>/report
    seed_pattern: str = r"seed\d+|s\d+"  # a path component matching this in full is a seed
    systems: str = ""  # "label=path,label=path": renames and orders systems
    measures: str = ""  # measure columns, comma-separated; "" = every measure found
    baseline: str = ""  # a system (label or path) every other one is compared with; "" = no comparison
    qrels_path: str = ""  # qrels of the per-query randomization test; "" = seeds only
    qrels_format: str = "beir"  # a key of evaluation.QRELS_READERS


# ---------------------------------------------------------------------------------------------- options


def options_from_config(config: ml_collections.ConfigDict) -> ReportOptions:
    section = config.report
    options = ReportOptions(output_dir=section.output_dir, seed_pattern=section.seed_pattern,
                            systems=section.systems, measures=section.measures, baseline=section.baseline,
                            qrels_path=section.qrels_path, qrels_format=section.qrels_format)
    check_options(options)
    return options


def check_options(options: ReportOptions) -> None:
    """Every option's value, checked before anything is read (ConfigError naming the field)."""
    for field in ("output_dir", "seed_pattern", "systems", "measures", "baseline", "qrels_path", "qrels_format"):
        value = getattr(options, field)
        if not isinstance(value, str):
            raise ConfigError(f"config.report.{field}={value!r}: must be a string")
    _seed_regex(options.seed_pattern)
    _system_names(options.systems)
    if options.qrels_path and not options.baseline:
        raise ConfigError(f"config.report.qrels_path={options.qrels_path!r}: tests systems against "
                          "config.report.baseline, which is empty")
    if options.qrels_format not in evaluation.QRELS_READERS:
        raise ConfigError(f"config.report.qrels_format={options.qrels_format!r}: must be one of "
                          f"{sorted(evaluation.QRELS_READERS)}")


def _seed_regex(pattern: str) -> re.Pattern:
    if not pattern:
        raise ConfigError("config.report.seed_pattern='': must be a regular expression (e.g. 'seed\\d+|s\\d+')")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"config.report.seed_pattern={pattern!r}: not a regular expression: {error}") from None


def _system_names(spec: str) -> dict[str, str]:
    """`config.report.systems` ("label=path,label=path") as path -> label, in the order given."""
    names: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        label, equals, path = (text.strip() for text in item.partition("="))
        if not (equals and label and path):
            raise ConfigError(f"config.report.systems={spec!r}: {item!r} is not label=path")
        if path in names or label in names.values():
            raise ConfigError(f"config.report.systems={spec!r}: {item!r} repeats a label or a path")
        names[path] = label
    return names


def _output_dir(workdir: pathlib.Path, options: ReportOptions) -> pathlib.Path:
    output = pathlib.Path(options.output_dir) if options.output_dir else workdir / DEFAULT_OUTPUT_DIR
    if output.exists() and not output.is_dir():
        raise ConfigError(f"config.report.output_dir={options.output_dir!r}: {output} is a file, not a directory")
    return output


# -------------------------------------------------------------------------------------------- discovery


def _files(workdir: pathlib.Path, output_dir: pathlib.Path) -> tuple[list[pathlib.Path], ...]:
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


def _read_json(path: pathlib.Path) -> dict:
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


def _read_metrics(path: pathlib.Path) -> tuple[dict[str, float], str]:
    """(measure -> value, split) of one `*.metrics.json` (split from its qrels description `... [split]`)."""
    payload = _read_json(path)
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


def _systems(workdir: pathlib.Path, paths: list[pathlib.Path], options: ReportOptions) -> list[SystemResult]:
    seed = _seed_regex(options.seed_pattern)
    grouped: dict[str, dict[str, tuple[dict[str, float], str, str]]] = {}
    for path in paths:
        relative = path.relative_to(workdir)
        system, seed_name = _system_and_seed(relative, seed)
        values, split = _read_metrics(path)
        group = grouped.setdefault(system, {})
        if seed_name in group:
            raise formats.FormatError(path, None, f"is system {system!r} seed {seed_name or '(none)'!r} again, like "
                                                  f"{group[seed_name][2]}")
        group[seed_name] = (values, split, str(relative))
    names = _system_names(options.systems)
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


def _runs(workdir: pathlib.Path, paths: list[pathlib.Path]) -> list[TrainingRun]:
    runs = []
    for path in paths:
        relative = path.parent.relative_to(workdir).as_posix()
        runs.append(TrainingRun(workdir.resolve().name if relative == "." else relative, _read_training_log(path)))
    return runs


def _margins(workdir: pathlib.Path, paths: list[pathlib.Path]) -> list[Margins]:
    found = []
    for path in paths:
        payload = _read_json(path)
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


def _sweeps(systems: Sequence[SystemResult]) -> list[Sweep]:
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


def _measures(systems: list[SystemResult], options: ReportOptions) -> tuple[str, ...]:
    found = list(dict.fromkeys(name for system in systems for name in system.mean))
    if not options.measures:
        return tuple(found)
    asked = tuple(name.strip() for name in options.measures.split(",") if name.strip())
    missing = [name for name in asked if name not in found]
    if not asked or missing:
        raise ConfigError(f"config.report.measures={options.measures!r}: the metrics files hold {found}")
    return asked


# ------------------------------------------------------------------------------------------ comparisons


def _baseline(systems: Sequence[SystemResult], options: ReportOptions) -> SystemResult:
    for system in systems:
        if options.baseline in (system.label, system.path):
            return system
    raise ConfigError(f"config.report.baseline={options.baseline!r}: no such system; systems: "
                      f"{[system.label for system in systems]}")


def _per_query(workdir: pathlib.Path, file: str, measures: Sequence[str], qrels, options: ReportOptions):
    """measure -> query -> value of the run that the metrics file `file` evaluated, recomputed against `qrels` for
    each of `measures` that the file holds; the recomputed aggregates must equal the file's."""
    path = workdir / file
    payload = _read_json(path)
    run_path, level = payload.get("run"), payload.get("relevance_level", 1)
    if not isinstance(run_path, str) or not run_path:
        raise formats.FormatError(path, None, "names no \"run\" file, which config.report.qrels_path evaluates "
                                              "query by query")
    stored, _ = _read_metrics(path)
    names = [name for name in measures if name in stored]
    run = formats.read_run(run_path)
    field = f"config.report.qrels_path={options.qrels_path!r}"
    try:
        result = evaluation.evaluate(run, qrels, names, relevance_level=level)
    except evaluation.NothingToEvaluate:
        raise ConfigError(f"{field}: {run_path} ranks none of its queries: not the qrels {path} was evaluated "
                          "with") from None
    except ValueError as error:
        raise formats.FormatError(path, None, f"cannot be evaluated per query: {error}") from None
    for name in names:
        if abs(result.aggregate[name] - stored[name]) > RECOMPUTED_TOLERANCE:
            raise ConfigError(f"{field}: {run_path} scores {name} {result.aggregate[name]:.4f} against them, {path} "
                              f"holds {stored[name]:.4f}: not the qrels it was evaluated with")
    return {name: {query: values[name] for query, values in result.per_query.items()} for name in names}


def _comparisons(workdir: pathlib.Path, systems: Sequence[SystemResult], baseline: SystemResult,
                 measures: Sequence[str], options: ReportOptions) -> list[Comparison]:
    """Every other system against `baseline` over their paired seeds, and over queries when qrels are given."""
    qrels = None
    if options.qrels_path:
        qrels = evaluation.QRELS_READERS[options.qrels_format](options.qrels_path)
        if not qrels:
            raise formats.FormatError(options.qrels_path, None, "no judgements: nothing to compare")
    per_query: dict[str, dict[str, dict[str, float]]] = {}  # metrics file -> measure -> query -> value

    def values_of(system: SystemResult, seed: str) -> dict[str, dict[str, float]]:
        file = dict(zip(system.seeds, system.files))[seed]
        if file not in per_query:
            per_query[file] = _per_query(workdir, file, measures, qrels, options)
        return per_query[file]

    found = []
    for system in systems:
        pairs = significance.pair_seeds(list(system.seeds), list(baseline.seeds))
        if system is baseline or not pairs:
            continue
        differences = {}
        for name in measures:
            if not all(name in system.seeds[left] and name in baseline.seeds[right] for left, right in pairs):
                continue
            summary = significance.summarise(name, pairs, {seed: system.seeds[seed][name] for seed, _ in pairs},
                                             {seed: baseline.seeds[seed][name] for _, seed in pairs})
            if qrels is not None:
                by_query = significance.per_query_differences([values_of(system, left)[name] for left, _ in pairs],
                                                              [values_of(baseline, right)[name] for _, right in pairs])
                summary = dataclasses.replace(summary, queries=len(by_query),
                                              p_value=significance.randomization_test(by_query))
            differences[name] = summary
        found.append(Comparison(system.label, system.path, differences))
    return found


# ----------------------------------------------------------------------------------------------- tables


def _cell(system: SystemResult, measure: str) -> str:
    if measure not in system.mean:
        return "-"
    if measure in system.spread:
        return f"{system.mean[measure]:.4f} ± {system.spread[measure]:.4f}"
    return f"{system.mean[measure]:.4f}"


def _rows(systems: Sequence[SystemResult], measures: Sequence[str]) -> list[list[str]]:
    return [[system.label, str(len(system.seeds)), *(_cell(system, name) for name in measures)] for system in systems]


def _aligned(header: list[str], body: list[list[str]]) -> str:
    """An aligned text table: the first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(line[column]) for line in [header, *body]) for column in range(len(header))]

    def render(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(rest, widths[1:]))])

    return "\n".join([render(header), "-" * len(render(header)), *map(render, body)])


def _markdown_grid(header: list[str], body: list[list[str]]) -> str:
    """A markdown table: the first column left-aligned, the others right-aligned; `|` in cells escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", *("---:" for _ in header[1:])]) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def format_table(systems: Sequence[SystemResult], measures: Sequence[str]) -> str:
    """The aligned text table: system, seeds, then each measure (mean ± spread, four decimals)."""
    return _aligned(["system", "seeds", *measures], _rows(systems, measures))


def markdown_table(systems: Sequence[SystemResult], measures: Sequence[str]) -> str:
    return _markdown_grid(["system", "seeds", *measures], _rows(systems, measures))


def _difference_cell(difference: significance.PairedDifference | None) -> str:
    """`+0.0053 ± 0.0083 (2/3) p=0.21`: mean difference ± spread, (pairs won / pairs), randomization p-value."""
    if difference is None:
        return "-"
    cell = f"{difference.mean:+.4f}"
    if difference.spread is not None:
        cell += f" ± {difference.spread:.4f}"
    cell += f" ({difference.wins}/{len(difference.pairs)})"
    if difference.p_value is not None:
        cell += f" p={difference.p_value:.2g}"
    return cell


def _comparison_rows(comparisons: Sequence[Comparison], measures: Sequence[str]) -> list[list[str]]:
    return [[item.label, str(len(next(iter(item.differences.values())).pairs)) if item.differences else "0",
             *(_difference_cell(item.differences.get(name)) for name in measures)] for item in comparisons]


def format_comparisons(comparisons: Sequence[Comparison], measures: Sequence[str]) -> str:
    """The aligned text table of the comparisons: system, pairs, then per measure `_difference_cell`."""
    return _aligned(["system", "pairs", *measures], _comparison_rows(comparisons, measures))


def comparisons_markdown(comparisons: Sequence[Comparison], measures: Sequence[str]) -> str:
    return _markdown_grid(["system", "pairs", *measures], _comparison_rows(comparisons, measures))


def sweep_table(sweep: Sweep, measures: Sequence[str]) -> str:
    """Markdown: one row per value of the swept setting (mean ± spread over seeds)."""
    lines = ["| " + " | ".join([sweep.setting, "seeds", *measures]) + " |",
             "|" + "|".join(["---:", "---:", *("---:" for _ in measures)]) + "|"]
    lines += ["| " + " | ".join([value, str(len(system.seeds)), *(_cell(system, name) for name in measures)]) + " |"
              for value, system in zip(sweep.values, sweep.systems)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- plots


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def metrics_plot(systems: Sequence[SystemResult], measures: Sequence[str]) -> bytes:
    """Grouped bars: one group per measure, one bar per system (its mean), error bars = spread over seeds."""
    width = 0.8 / len(systems)
    figure = Figure(figsize=(max(6.0, 3.0 + len(measures) * (0.4 + 0.25 * len(systems))), 4.5))
    axes = figure.add_subplot()
    for index, system in enumerate(systems):
        positions = [m + (index - (len(systems) - 1) / 2) * width for m in range(len(measures))]
        heights = [system.mean.get(name, math.nan) for name in measures]
        errors = [system.spread.get(name, 0.0) for name in measures]
        axes.bar(positions, heights, width, yerr=errors, capsize=2, label=system.label)
    axes.set_xticks(range(len(measures)), measures)
    axes.set_ylabel("value (mean over seeds)")
    axes.legend(fontsize="small", ncols=max(1, len(systems) // 8), loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _png(figure)


def curves_plot(run: TrainingRun) -> bytes:
    """The losses (train, and evaluators' `<name>/loss`; left) and the other evaluator measures (right) by step."""
    figure = Figure(figsize=(10.0, 4.0))
    loss_axes, eval_axes = figure.subplots(1, 2)
    losses = [name for name in run.curves if name.endswith("loss")]
    for axes, names, title in ((loss_axes, losses, "loss"),
                               (eval_axes, [name for name in run.curves if name not in losses], "evaluation")):
        for name in names:
            steps, values = zip(*run.curves[name])
            axes.plot(steps, values, marker="." if len(steps) < 50 else None, label=name)
        axes.set_title(f"{run.name}: {title}")
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize="small")
    figure.tight_layout()
    return _png(figure)


def sweep_plot(sweep: Sweep, measures: Sequence[str]) -> bytes:
    """Every measure against the swept value: lines over numeric values, grouped bars over named ones; error bars
    = spread over seeds."""
    figure = Figure(figsize=(6.5, 4.0))
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(measures))
    for index, name in enumerate(measures):
        heights = [system.mean.get(name, math.nan) for system in sweep.systems]
        errors = [system.spread.get(name, 0.0) for system in sweep.systems]
        if sweep.numeric:
            axes.errorbar([float(value) for value in sweep.values], heights, yerr=errors, marker="o", capsize=3,
                          label=name)
        else:
            positions = [v + (index - (len(measures) - 1) / 2) * width for v in range(len(sweep.values))]
            axes.bar(positions, heights, width, yerr=errors, capsize=2, label=name)
    if not sweep.numeric:
        axes.set_xticks(range(len(sweep.values)), sweep.values)
    axes.set_xlabel(sweep.setting)
    axes.set_ylabel("value (mean over seeds)")
    axes.set_title(sweep.key)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return _png(figure)


def margins_plot(margins: Margins) -> bytes:
    """Histogram of s(q, d+) - s(q, d-), with zero and the mean marked."""
    figure = Figure(figsize=(6.0, 4.0))
    axes = figure.add_subplot()
    axes.hist(margins.values, bins=min(50, max(10, len(margins.values) // 5)), alpha=0.8, label=margins.system)
    axes.axvline(0.0, color="black", linewidth=1)
    mean = statistics.fmean(margins.values)
    axes.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.3f}")
    axes.set_xlabel("s(q, d+) − s(q, d−)")
    axes.set_ylabel("count")
    axes.set_title(f"score margins: {margins.system}")
    axes.legend(fontsize="small")
    figure.tight_layout()
    return _png(figure)


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("/", "-"))


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name.removesuffix('.png')}-{number}.png", number + 1
    taken.add(candidate)
    return candidate


# ----------------------------------------------------------------------------------------------- outputs


def _tested(comparisons: Sequence[Comparison]) -> bool:
    return any(difference.p_value is not None for item in comparisons for difference in item.differences.values())


def _comparisons_json(baseline: str, comparisons: Sequence[Comparison], options: ReportOptions) -> dict:
    return {"system": baseline, "qrels": options.qrels_path or None, "comparisons": [
        {"system": item.label, "path": item.path,
         "measures": {name: {**dataclasses.asdict(difference), "pairs": [list(pair) for pair in difference.pairs],
                             "differences": list(difference.differences)}
                      for name, difference in item.differences.items()}}
        for item in comparisons]}


def _results_json(report_fields: dict, systems, runs, margins, sweeps, plots: dict[str, str]) -> dict:
    return {
        **report_fields,
        "systems": [{"system": s.label, "path": s.path, "split": s.split, "num_seeds": len(s.seeds), "mean": s.mean,
                     "spread": s.spread, "seeds": s.seeds, "files": list(s.files)} for s in systems],
        "runs": {run.name: {name: [list(point) for point in points] for name, points in run.curves.items()}
                 for run in runs},
        "margins": {m.name: {"system": m.system, "count": len(m.values), "mean": statistics.fmean(m.values),
                             "median": statistics.median(m.values),
                             "fraction_positive": sum(value > 0 for value in m.values) / len(m.values)}
                    for m in margins},
        "sweeps": {sweep.key: {"setting": sweep.setting, "values": list(sweep.values),
                               "systems": [system.path for system in sweep.systems]} for sweep in sweeps},
        "plots": plots,
    }


def _markdown(workdir: pathlib.Path, systems, measures, runs, margins, sweeps, plots: dict[str, str],
              baseline: str = "", comparisons: Sequence[Comparison] = ()) -> str:
    lines = [f"# Report: {workdir}", ""]
    if systems:
        lines += ["## Results", "", "Mean over seeds ± sample standard deviation (ddof=1); `seeds` = runs averaged.",
                  "", markdown_table(systems, measures), "", f"![metrics]({plots['metrics']})", ""]
    if baseline:
        tested = _tested(comparisons)
        lines += [f"## Against {baseline}", "", "Per measure: the mean over paired seeds of system − baseline ± their "
                  "sample standard deviation, (pairs where the system is higher / pairs)"
                  + (", and the two-sided paired randomization test over queries (p)." if tested else "."), "",
                  comparisons_markdown(comparisons, measures), ""]
    for sweep in sweeps:
        lines += [f"## Sweep: {sweep.key}", "", sweep_table(sweep, measures), "",
                  f"![{sweep.key}]({plots[f'sweep/{sweep.key}']})", ""]
    if runs:
        lines += ["## Training curves", ""]
        lines += [f"![{run.name}]({plots[f'curves/{run.name}']})" for run in runs] + [""]
    if margins:
        lines += ["## Score margins s(q, d+) − s(q, d−)", ""]
        lines += [f"![{m.name}]({plots[f'margins/{m.name}']})" for m in margins] + [""]
    return "\n".join(lines)


def _previous_outputs(output_dir: pathlib.Path, options: ReportOptions) -> set[str]:
    """The file names earlier reports wrote to `output_dir` (from its manifest; none without one)."""
    path = output_dir / MANIFEST
    if not path.exists():
        return set()
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        names = payload["files"] if payload.get("kind") == MANIFEST_KIND else None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, AttributeError, TypeError):
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"config.report.output_dir={options.output_dir!r}: {path} was not written by a report; "
                          "choose another output directory")
    return set(names)


def _check_targets(output_dir: pathlib.Path, names: Sequence[str], previous: set[str], options: ReportOptions) -> None:
    foreign = [name for name in names if (output_dir / name).exists() and name not in previous]
    if foreign:
        raise ConfigError(f"config.report.output_dir={options.output_dir!r}: {output_dir / foreign[0]} was not "
                          "written by a report; move it or choose another output directory")


def build_report(workdir: str | os.PathLike, options: ReportOptions = ReportOptions()) -> Report:
    """Reads everything reportable under `workdir`, renders the tables and plots, then writes them (see the module
    docstring). Options are checked first and inputs read next; nothing is written before both pass."""
    check_options(options)
    root = pathlib.Path(workdir)
    output_dir = _output_dir(root, options)
    metrics_paths, log_paths, margins_paths = _files(root, output_dir) if root.is_dir() else ([], [], [])
    if not (metrics_paths or log_paths or margins_paths):
        raise NothingToReport(f"{root} holds no *{METRICS_SUFFIX}, {TRAINING_LOG} or *{MARGINS_SUFFIX} file: "
                              "nothing to report")
    systems = _systems(root, metrics_paths, options)
    measures = _measures(systems, options)
    runs = _runs(root, log_paths)
    margins = _margins(root, margins_paths)
    sweeps = _sweeps(systems)
    baseline_label, comparisons = "", []
    if options.baseline:
        baseline = _baseline(systems, options)
        baseline_label, comparisons = baseline.label, _comparisons(root, systems, baseline, measures, options)

    outputs: dict[str, bytes] = {}  # file name -> bytes
    plots: dict[str, str] = {}  # plot key -> file name
    taken = {"report.md", "results.json", "metrics.png"}
    if systems:
        plots["metrics"] = "metrics.png"
        outputs["metrics.png"] = metrics_plot(systems, measures)
    for run in runs:
        plots[f"curves/{run.name}"] = name = _unique(f"curves-{_file_stem(run.name)}.png", taken)
        outputs[name] = curves_plot(run)
    for item in margins:
        plots[f"margins/{item.name}"] = name = _unique(f"margins-{_file_stem(item.name)}.png", taken)
        outputs[name] = margins_plot(item)
    for sweep in sweeps:
        stem = _file_stem(sweep.key.replace("=*", ""))
        plots[f"sweep/{sweep.key}"] = name = _unique(f"sweep-{stem}.png", taken)
        outputs[name] = sweep_plot(sweep, measures)
    table = format_table(systems, measures) if systems else ""
    fields = {"workdir": str(root.resolve()), "measures": list(measures)}
    if baseline_label:
        fields["baseline"] = _comparisons_json(baseline_label, comparisons, options)
    outputs["results.json"] = (json.dumps(_results_json(fields, systems, runs, margins, sweeps, plots), indent=2)
                               + "\n").encode()
    outputs["report.md"] = _markdown(root, systems, measures, runs, margins, sweeps, plots,
                                     baseline_label, comparisons).encode()

    previous = _previous_outputs(output_dir, options)
    _check_targets(output_dir, list(outputs), previous, options)
    with formats.atomic_write(output_dir / MANIFEST) as handle:  # first: a write cut short still leaves ours marked
        json.dump({"kind": MANIFEST_KIND, "files": sorted(previous | set(outputs))}, handle, indent=2)
        handle.write("\n")
    for name, payload in outputs.items():
        with formats.atomic_write(output_dir / name, "wb") as handle:
            handle.write(payload)
    return Report(str(root), str(output_dir), measures, tuple(systems), tuple(runs), tuple(margins), tuple(sweeps),
                  table, tuple(str(output_dir / name) for name in outputs), baseline_label, tuple(comparisons),
                  format_comparisons(comparisons, measures) if baseline_label else "")


def run_from_config(config: ml_collections.ConfigDict, workdir: str) -> Report:
    """Mode `report`: builds the report of `workdir`, prints the results table and the files written."""
    report = build_report(workdir, options_from_config(config))
    if report.table:
        print(report.table)
    if report.baseline:
        print(f"\nagainst {report.baseline}: mean ± spread of the paired differences (pairs won / pairs)"
              + (", p: randomization test over queries" if _tested(report.comparisons) else ""))
        print(report.comparison_table)
    for run in report.runs:
        print(f"training run {run.name}: {', '.join(run.curves) or 'no curves'}")
    print(f"wrote {len(report.files)} files to {report.output_dir}")
    return report
