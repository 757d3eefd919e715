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

Modules: `options` (config.report -> ReportOptions, checked), `collect` (the workdir's files -> systems, curves,
margins, sweeps), `compare` (paired comparisons against the baseline), `tables` and `plots` (rendering); this one
writes the outputs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import statistics
from collections.abc import Sequence

import ml_collections

from distill_ret.data import formats
from distill_ret.errors import ConfigError, UserError
from distill_ret.evaluation import MARGINS_SUFFIX
from distill_ret.report import collect, compare, plots, tables
from distill_ret.report.options import ReportOptions, check_options, options_from_config

MANIFEST = ".report-manifest.json"
MANIFEST_KIND = "distill_ret report outputs"
DEFAULT_OUTPUT_DIR = "report"


class NothingToReport(UserError, ValueError):
    """The workdir holds no metrics file, training log or margins file."""


@dataclasses.dataclass(frozen=True)
class Report:
    workdir: str
    output_dir: str
    measures: tuple[str, ...]  # the table's measure columns, in order
    systems: tuple[collect.SystemResult, ...]
    runs: tuple[collect.TrainingRun, ...]
    margins: tuple[collect.Margins, ...]
    sweeps: tuple[collect.Sweep, ...]
    table: str  # the aligned text table printed on the terminal
    files: tuple[str, ...]  # output paths written
    baseline: str = ""  # label of the system compared against ("" without comparisons)
    comparisons: tuple[compare.Comparison, ...] = ()
    comparison_table: str = ""  # the aligned text table of the comparisons


def _output_dir(workdir: pathlib.Path, options: ReportOptions) -> pathlib.Path:
    output = pathlib.Path(options.output_dir) if options.output_dir else workdir / DEFAULT_OUTPUT_DIR
    if output.exists() and not output.is_dir():
        raise ConfigError(f"config.report.output_dir={options.output_dir!r}: {output} is a file, not a directory")
    return output


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("/", "-"))


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name.removesuffix('.png')}-{number}.png", number + 1
    taken.add(candidate)
    return candidate


def _comparisons_json(baseline: str, comparisons: Sequence[compare.Comparison], options: ReportOptions) -> dict:
    return {"system": baseline, "qrels": options.qrels_path or None, "comparisons": [
        {"system": item.label, "path": item.path,
         "measures": {name: {**dataclasses.asdict(difference), "pairs": [list(pair) for pair in difference.pairs],
                             "differences": list(difference.differences)}
                      for name, difference in item.differences.items()}}
        for item in comparisons]}


def _results_json(report_fields: dict, systems, runs, margins, sweeps, plot_files: dict[str, str]) -> dict:
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
        "plots": plot_files,
    }


def _markdown(workdir: pathlib.Path, systems, measures, runs, margins, sweeps, plot_files: dict[str, str],
              baseline: str = "", comparisons: Sequence[compare.Comparison] = ()) -> str:
    lines = [f"# Report: {workdir}", ""]
    if systems:
        lines += ["## Results", "", "Mean over seeds ± sample standard deviation (ddof=1); `seeds` = runs averaged.",
                  "", tables.markdown_table(systems, measures), "", f"![metrics]({plot_files['metrics']})", ""]
    if baseline:
        tested = compare.any_tested(comparisons)
        lines += [f"## Against {baseline}", "", "Per measure: the mean over paired seeds of system − baseline ± their "
                  "sample standard deviation, (pairs where the system is higher / pairs)"
                  + (", and the two-sided paired randomization test over queries (p)." if tested else "."), "",
                  tables.comparisons_markdown(comparisons, measures), ""]
    for sweep in sweeps:
        lines += [f"## Sweep: {sweep.key}", "", tables.sweep_table(sweep, measures), "",
                  f"![{sweep.key}]({plot_files[f'sweep/{sweep.key}']})", ""]
    if runs:
        lines += ["## Training curves", ""]
        lines += [f"![{run.name}]({plot_files[f'curves/{run.name}']})" for run in runs] + [""]
    if margins:
        lines += ["## Score margins s(q, d+) − s(q, d−)", ""]
        lines += [f"![{m.name}]({plot_files[f'margins/{m.name}']})" for m in margins] + [""]
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
    metrics_paths, log_paths, margins_paths = collect.find_files(root, output_dir) if root.is_dir() else ([], [], [])
    if not (metrics_paths or log_paths or margins_paths):
        raise NothingToReport(f"{root} holds no *{collect.METRICS_SUFFIX}, {collect.TRAINING_LOG} or "
                              f"*{MARGINS_SUFFIX} file: nothing to report")
    systems = collect.read_systems(root, metrics_paths, options)
    measures = collect.select_measures(systems, options)
    runs = collect.read_runs(root, log_paths)
    margins = collect.read_margins(root, margins_paths)
    sweeps = collect.find_sweeps(systems)
    baseline_label, comparisons = "", []
    if options.baseline:
        baseline = compare.find_baseline(systems, options)
        baseline_label = baseline.label
        comparisons = compare.compare_systems(root, systems, baseline, measures, options)

    outputs: dict[str, bytes] = {}  # file name -> bytes
    plot_files: dict[str, str] = {}  # plot key -> file name
    taken = {"report.md", "results.json", "metrics.png"}
    if systems:
        plot_files["metrics"] = "metrics.png"
        outputs["metrics.png"] = plots.metrics_plot(systems, measures)
    for run in runs:
        plot_files[f"curves/{run.name}"] = name = _unique(f"curves-{_file_stem(run.name)}.png", taken)
        outputs[name] = plots.curves_plot(run)
    for item in margins:
        plot_files[f"margins/{item.name}"] = name = _unique(f"margins-{_file_stem(item.name)}.png", taken)
        outputs[name] = plots.margins_plot(item)
    for sweep in sweeps:
        stem = _file_stem(sweep.key.replace("=*", ""))
        plot_files[f"sweep/{sweep.key}"] = name = _unique(f"sweep-{stem}.png", taken)
        outputs[name] = plots.sweep_plot(sweep, measures)
    table = tables.format_table(systems, measures) if systems else ""
    fields = {"workdir": str(root.resolve()), "measures": list(measures)}
    if baseline_label:
        fields["baseline"] = _comparisons_json(baseline_label, comparisons, options)
    outputs["results.json"] = (json.dumps(_results_json(fields, systems, runs, margins, sweeps, plot_files), indent=2)
                               + "\n").encode()
    outputs["report.md"] = _markdown(root, systems, measures, runs, margins, sweeps, plot_files,
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
                  tables.format_comparisons(comparisons, measures) if baseline_label else "")


def run_from_config(config: ml_collections.ConfigDict, workdir: str) -> Report:
    """Mode `report`: builds the report of `workdir`, prints the results table and the files written."""
    report = build_report(workdir, options_from_config(config))
    if report.table:
        print(report.table)
    if report.baseline:
        print(f"\nagainst {report.baseline}: mean ± spread of the paired differences (pairs won / pairs)"
              + (", p: randomization test over queries" if compare.any_tested(report.comparisons) else ""))
        print(report.comparison_table)
    for run in report.runs:
        print(f"training run {run.name}: {', '.join(run.curves) or 'no curves'}")
    print(f"wrote {len(report.files)} files to {report.output_dir}")
    return report
