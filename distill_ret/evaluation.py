"""Run evaluation through ir-measures: metrics, printed tables, JSON / per-query outputs, and the `evaluate` mode.

Conventions (trec_eval `-c` semantics):
- The evaluated queries are exactly the queries of the qrels. A qrels query that the run does not rank counts as
  zero for every measure; run queries absent from the qrels are ignored (and counted in the result).
- nDCG uses the graded gains as given. Binary measures (R@k, RR/MRR, AP/MAP) count a document as relevant when its
  gain is >= `relevance_level` (default 1: on Cranfield, gains 1..4 are all relevant).
"""
import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence

import ir_measures
import ml_collections

from distill_ret.data import formats, sources
from distill_ret.errors import ConfigError

DEFAULT_MEASURES = ("nDCG@10", "MRR@10", "MRR@100", "R@5", "R@20", "R@100", "R@1000", "MAP")

Run = Mapping[str, Mapping[str, float]]  # query id -> document id -> score
Qrels = Mapping[str, Mapping[str, int]]  # query id -> document id -> gain


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Metrics of one run against one qrels set."""

    aggregate: dict[str, float]  # measure name -> mean over the qrels queries
    per_query: dict[str, dict[str, float]]  # query id -> measure name -> value (0 for queries missing from the run)
    missing_queries: tuple[str, ...]  # qrels queries the run does not rank
    ignored_queries: tuple[str, ...]  # run queries absent from the qrels
    relevance_level: int

    def to_json(self) -> dict:
        return {
            "measures": self.aggregate,
            "num_queries": len(self.per_query),
            "num_missing_queries": len(self.missing_queries),
            "num_ignored_queries": len(self.ignored_queries),
            "relevance_level": self.relevance_level,
        }


def measure_names(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A comma-separated string (as configs hold it) or a sequence of measure names -> a tuple of names."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    return tuple(name.strip() for name in names if name.strip())


def parse_measures(names: Sequence[str], relevance_level: int = 1) -> dict[str, ir_measures.Measure]:
    """Measure names (ir-measures syntax, e.g. `nDCG@10`, `MRR@10`, `R@100`, `MAP`) -> measure objects.

    Measures that take a relevance level and do not set one get `rel=relevance_level`.
    """
    if relevance_level < 1:
        raise ValueError(f"relevance_level must be >= 1, got {relevance_level}")
    measures = {}
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except (NameError, ValueError, SyntaxError) as error:
            raise ValueError(f"unknown measure {name!r} (ir-measures syntax, e.g. nDCG@10, MRR@10, R@100, MAP)") from error
        if "rel" in measure.SUPPORTED_PARAMS and "rel" not in measure.params:
            measure = measure(rel=relevance_level)
        measures[name] = measure
    if not measures:
        raise ValueError("no measures given")
    return measures


def evaluate(
    run: Run, qrels: Qrels, measures: Sequence[str] = DEFAULT_MEASURES, *, relevance_level: int = 1
) -> Evaluation:
    """Scores `run` against `qrels` with ir-measures; see the module docstring for the conventions."""
    if not qrels:
        raise ValueError("qrels are empty: nothing to evaluate")
    parsed = parse_measures(measures, relevance_level)
    ranked = {qid: dict(docs) for qid, docs in run.items() if qid in qrels and docs}
    if not ranked:
        raise ValueError(
            f"the run ranks no document for any of the {len(qrels)} qrels queries: wrong run or wrong split?"
        )
    name_of = {measure: name for name, measure in parsed.items()}
    per_query = {qid: dict.fromkeys(parsed, 0.0) for qid in qrels}
    judged = {qid: dict(docs) for qid, docs in qrels.items()}
    for metric in ir_measures.iter_calc(list(parsed.values()), judged, ranked):
        if metric.query_id in per_query:
            per_query[metric.query_id][name_of[metric.measure]] = float(metric.value)
    aggregate = {name: math.fsum(values[name] for values in per_query.values()) / len(per_query) for name in parsed}
    return Evaluation(
        aggregate=aggregate,
        per_query=per_query,
        missing_queries=tuple(sorted(qid for qid in qrels if qid not in ranked)),
        ignored_queries=tuple(sorted(qid for qid in run if qid not in qrels)),
        relevance_level=relevance_level,
    )


def format_table(rows: Mapping[str, Mapping[str, float]], measures: Sequence[str] | None = None) -> str:
    """An aligned text table: one row per system, one column per measure, four decimals."""
    if not rows:
        raise ValueError("no rows to format")
    if measures is None:
        measures = list(dict.fromkeys(name for values in rows.values() for name in values))
    header = ["system", *measures]
    body = [[system, *(f"{values[m]:.4f}" if m in values else "-" for m in measures)] for system, values in rows.items()]
    widths = [max(len(line[column]) for line in [header, *body]) for column in range(len(header))]

    def render(cells: list[str]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(rest, widths[1:]))])

    rule = "-" * len(render(header))
    return "\n".join([render(header), rule, *(render(line) for line in body)])


def write_json(payload: Mapping, path: str | os.PathLike) -> None:
    """Writes `payload` as indented JSON, atomically."""
    with formats.atomic_write(path) as handle:
        json.dump(payload, handle, indent=2, sort_keys=False)
        handle.write("\n")


def write_per_query(evaluation: Evaluation, path: str | os.PathLike) -> None:
    """Writes a TSV with a header `query_id<TAB>measure...` and one row per qrels query, atomically."""
    names = list(evaluation.aggregate)
    with formats.atomic_write(path) as handle:
        handle.write("\t".join(["query_id", *names]) + "\n")
        for qid, values in evaluation.per_query.items():
            handle.write("\t".join([qid, *(f"{values[name]:.6f}" for name in names)]) + "\n")


def save_evaluation(
    evaluation: Evaluation, workdir: str | os.PathLike, name: str, *, per_query: bool, extra: Mapping | None = None
) -> dict[str, str]:
    """Writes `<workdir>/<name>.metrics.json` (and `<name>.per_query.tsv` when asked); returns the paths written."""
    os.makedirs(workdir, exist_ok=True)
    paths = {"metrics": os.path.join(workdir, f"{name}.metrics.json")}
    write_json({**(extra or {}), **evaluation.to_json()}, paths["metrics"])
    if per_query:
        paths["per_query"] = os.path.join(workdir, f"{name}.per_query.tsv")
        write_per_query(evaluation, paths["per_query"])
    return paths


def _load_judgements(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict, dict | None, dict | None, str]:
    """(qrels, queries, corpus, qrels description) from `eval.qrels_path`, or else from `config.data` + `data.split`."""
    qrels_path = config.eval.qrels_path
    if qrels_path:
        readers = {"beir": formats.read_qrels, "trec": formats.read_trec_qrels}
        if config.eval.qrels_format not in readers:
            raise ConfigError(f"config.eval.qrels_format must be one of {sorted(readers)}, got {config.eval.qrels_format!r}")
        return readers[config.eval.qrels_format](qrels_path), None, None, str(qrels_path)
    dataset, source = sources.load_beir(config, workdir)
    if config.data.split not in dataset.qrels:
        raise ConfigError(f"config.data.split={config.data.split!r} has no qrels in {source}; splits: {sorted(dataset.qrels)}")
    return dataset.qrels[config.data.split], dataset.queries, dataset.corpus, f"{source} [{config.data.split}]"


def run_from_config(config: ml_collections.ConfigDict, workdir: str) -> Evaluation:
    """The `evaluate` mode: scores `eval.run_path`, prints the table, writes `<workdir>/<name>.metrics.json`.

    Judgements come from `eval.qrels_path` when it is set, else from `config.data` (see `sources.load_beir`);
    in the latter case every query and document id of the run must exist in the data set.
    """
    run_path = config.eval.run_path
    if not run_path:
        raise ConfigError("config.eval.run_path is required (a TREC run file)")
    qrels, queries, corpus, qrels_description = _load_judgements(config, workdir)
    run = formats.read_run(run_path, queries=queries, corpus=corpus)
    if not any(qid in qrels for qid in run):
        raise formats.FormatError(run_path, None, f"no query of this run has judgements in {qrels_description}")
    measures = measure_names(config.eval.measures)
    evaluation = evaluate(run, qrels, measures, relevance_level=config.eval.relevance_level)
    name = config.eval.name or os.path.basename(run_path).split(".")[0]
    paths = save_evaluation(
        evaluation, workdir, name, per_query=config.eval.per_query,
        extra={"run": os.path.abspath(run_path), "qrels": qrels_description},
    )
    print(format_table({name: evaluation.aggregate}, measures))
    print(f"{len(evaluation.per_query)} queries ({len(evaluation.missing_queries)} missing from the run count as 0); "
          f"wrote {', '.join(paths.values())}")
    return evaluation
