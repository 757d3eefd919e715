"""Every system against a baseline: the paired differences over seeds, and with qrels a paired randomization test
over queries, each run re-evaluated per query (its aggregates must equal its metrics file's)."""
from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

from distill_ret import evaluation, significance
from distill_ret.data import formats
from distill_ret.errors import ConfigError
from distill_ret.report import collect
from distill_ret.report.options import ReportOptions

RECOMPUTED_TOLERANCE = 1e-6  # a run's per-query evaluation must give its metrics file's values within this


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One system against the baseline: its paired differences, per measure that both sides hold."""

    label: str
    path: str
    differences: dict[str, significance.PairedDifference]  # measure -> differences


def find_baseline(systems: Sequence[collect.SystemResult], options: ReportOptions) -> collect.SystemResult:
    for system in systems:
        if options.baseline in (system.label, system.path):
            return system
    raise ConfigError(f"config.report.baseline={options.baseline!r}: no such system; systems: "
                      f"{[system.label for system in systems]}")


def _per_query(workdir: pathlib.Path, file: str, measures: Sequence[str], qrels, options: ReportOptions):
    """measure -> query -> value of the run that the metrics file `file` evaluated, recomputed against `qrels` for
    each of `measures` that the file holds; the recomputed aggregates must equal the file's."""
    path = workdir / file
    payload = collect.read_json(path)
    run_path, level = payload.get("run"), payload.get("relevance_level", 1)
    if not isinstance(run_path, str) or not run_path:
        raise formats.FormatError(path, None, "names no \"run\" file, which config.report.qrels_path evaluates "
                                              "query by query")
    stored, _ = collect.read_metrics(path)
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


def compare_systems(workdir: pathlib.Path, systems: Sequence[collect.SystemResult], baseline: collect.SystemResult,
                    measures: Sequence[str], options: ReportOptions) -> list[Comparison]:
    """Every other system against `baseline` over their paired seeds, and over queries when qrels are given."""
    qrels = None
    if options.qrels_path:
        qrels = evaluation.QRELS_READERS[options.qrels_format](options.qrels_path)
        if not qrels:
            raise formats.FormatError(options.qrels_path, None, "no judgements: nothing to compare")
    per_query: dict[str, dict[str, dict[str, float]]] = {}  # metrics file -> measure -> query -> value

    def values_of(system: collect.SystemResult, seed: str) -> dict[str, dict[str, float]]:
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


def any_tested(comparisons: Sequence[Comparison]) -> bool:
    return any(difference.p_value is not None for item in comparisons for difference in item.differences.values())
