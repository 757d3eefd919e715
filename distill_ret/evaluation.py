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
from distill_ret.errors import ConfigError, UserError, integer_field

DEFAULT_MEASURES = ("nDCG@10", "MRR@10", "MRR@100", "R@5", "R@20", "R@100", "R@1000", "MAP")

Run = Mapping[str, Mapping[str, float]]  # query id -> document id -> score
Qrels = Mapping[str, Mapping[str, int]]  # query id -> document id -> gain
QRELS_READERS = {"beir": formats.read_qrels, "trec": formats.read_trec_qrels}  # config.eval.qrels_format -> reader


class NothingToEvaluate(UserError, ValueError):
    """Empty qrels, or a run that ranks no document for any judged query (wrong run or wrong split)."""


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


def is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_measure(name: str, measure: ir_measures.Measure) -> None:
    """Cutoffs and relevance levels are positive integers, and an installed provider computes the measure (trec_eval
    aborts the whole process on a cutoff of 0)."""
    for param in ("cutoff", "rel"):
        value = measure.params.get(param)
        if value is not None and not is_positive_int(value):
            raise ValueError(f"measure {name!r}: {param} must be a positive integer, got {value!r}")
    if not any(provider.supports(measure) and provider.is_available()
               for provider in ir_measures.DefaultPipeline.providers):
        raise ValueError(f"measure {name!r}: no installed ir-measures provider computes it")


def parse_measures(names: Sequence[str], relevance_level: int = 1) -> dict[str, ir_measures.Measure]:
    """Measure names (ir-measures syntax, e.g. `nDCG@10`, `MRR@10`, `R@100`, `MAP`) -> measure objects.

    Measures that take a relevance level and do not set one get `rel=relevance_level`.
    """
    if not is_positive_int(relevance_level):
        raise ValueError(f"relevance_level must be an integer >= 1, got {relevance_level!r}")
    measures = {}
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except (NameError, ValueError, SyntaxError) as error:
            raise ValueError(f"unknown measure {name!r} "
                             "(ir-measures syntax, e.g. nDCG@10, MRR@10, R@100, MAP)") from error
        _check_measure(name, measure)
        if "rel" in measure.SUPPORTED_PARAMS and "rel" not in measure.params:
            measure = measure(rel=relevance_level)
        measures[name] = measure
    if not measures:
        raise ValueError("no measures given")
    return measures


def measures_from_config(section: ml_collections.ConfigDict, prefix: str = "config.eval") -> tuple[str, ...]:
    """The measure names of a config's eval section, after checking `measures` and `relevance_level` (ConfigError
    naming the field), so that a mode can refuse them before it computes or writes anything."""
    level = integer_field(section.relevance_level, f"{prefix}.relevance_level", 1)
    names = measure_names(section.measures)
    try:
        parse_measures(names, level)
    except ValueError as error:
        raise ConfigError(f"{prefix}.measures={section.measures!r}: {error}") from None
    return names


def evaluate(
    run: Run, qrels: Qrels, measures: Sequence[str] = DEFAULT_MEASURES, *, relevance_level: int = 1
) -> Evaluation:
    """Scores `run` against `qrels` with ir-measures; see the module docstring for the conventions."""
    if not qrels:
        raise NothingToEvaluate("qrels are empty: nothing to evaluate")
    parsed = parse_measures(measures, relevance_level)
    ranked = {qid: dict(docs) for qid, docs in run.items() if qid in qrels and docs}
    if not ranked:
        raise NothingToEvaluate(
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
    body = [[system, *(f"{values[m]:.4f}" if m in values else "-" for m in measures)]
            for system, values in rows.items()]
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
        qrels = QRELS_READERS[config.eval.qrels_format](qrels_path)
        if not qrels:
            raise formats.FormatError(qrels_path, None, "no judgements: nothing to evaluate")
        return qrels, None, None, str(qrels_path)
    dataset, source = sources.load_beir(config, workdir)
    if config.data.split not in dataset.qrels:
        raise ConfigError(f"config.data.split={config.data.split!r} has no qrels in {source}; "
                          f"splits: {sorted(dataset.qrels)}")
    if not dataset.qrels[config.data.split]:
        raise formats.FormatError(os.path.join(source, "qrels", f"{config.data.split}.tsv"), None, "no judgements")
    return dataset.qrels[config.data.split], dataset.queries, dataset.corpus, f"{source} [{config.data.split}]"


def data_label(data: ml_collections.ConfigDict) -> str:
    """The name tables give the data a job read: `data.name` when it names that data (no `beir_dir`, so the builder
    `data.name` made it, or a `beir_dir` whose directory is called `data.name`), else the BEIR directory's name."""
    beir_dir = data.get("beir_dir", "")
    if not beir_dir:
        return data.name
    directory = os.path.basename(os.path.normpath(os.path.abspath(beir_dir)))
    return data.name if directory == data.name else directory


def output_name(config_name: str, run_path: str, field: str = "config.eval.name") -> str:
    """The name of a run's outputs: `config_name`, else the run file's name without its final extension
    (`run.bm25.trec` -> `run.bm25`), so that two runs in one directory never share outputs."""
    if config_name:
        if os.sep in config_name or config_name in (".", "..") or config_name != config_name.strip():
            raise ConfigError(f"{field}={config_name!r}: must be a plain file name "
                              f"(no {os.sep!r}, no surrounding spaces)")
        return config_name
    return os.path.splitext(os.path.basename(run_path))[0]


def check_metrics_target(workdir: str, name: str, run_path: str, field: str = "config.eval.name") -> None:
    """Refuses to replace `<workdir>/<name>.metrics.json` unless it holds the metrics of this same run file."""
    path = os.path.join(workdir, f"{name}.metrics.json")
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as handle:
            previous = json.load(handle).get("run")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous != os.path.abspath(run_path):
        held = f"the metrics of {previous}" if isinstance(previous, str) else "a file this tool did not write"
        raise ConfigError(f"{path} already holds {held}; set {field} to another name to keep both")


def _check_config(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Config values of the `evaluate` mode, checked before any file is read; returns the measure names."""
    if not config.eval.run_path:
        raise ConfigError("config.eval.run_path is required (a TREC run file)")
    if config.eval.qrels_path and config.eval.qrels_format not in QRELS_READERS:
        raise ConfigError(
            f"config.eval.qrels_format={config.eval.qrels_format!r}: must be one of {sorted(QRELS_READERS)}"
        )
    output_name(config.eval.name, config.eval.run_path)
    return measures_from_config(config.eval)


def run_from_config(config: ml_collections.ConfigDict, workdir: str) -> Evaluation:
    """The `evaluate` mode: scores `eval.run_path`, prints the table, writes `<workdir>/<name>.metrics.json`.

    Judgements come from `eval.qrels_path` when it is set, else from `config.data` (see `sources.load_beir`);
    in the latter case every query and document id of the run must exist in the data set. Config values are
    checked first, then the inputs; nothing is written before both pass, and the metrics of another run with the
    same name are never replaced.
    """
    measures = _check_config(config)
    run_path = config.eval.run_path
    name = output_name(config.eval.name, run_path)
    check_metrics_target(workdir, name, run_path)
    qrels, queries, corpus, qrels_description = _load_judgements(config, workdir)
    run = formats.read_run(run_path, queries=queries, corpus=corpus)
    if not any(qid in qrels for qid in run):
        raise formats.FormatError(run_path, None, f"no query of this run has judgements in {qrels_description}")
    evaluation = evaluate(run, qrels, measures, relevance_level=config.eval.relevance_level)
    paths = save_evaluation(
        evaluation, workdir, name, per_query=config.eval.per_query,
        extra={"run": os.path.abspath(run_path), "qrels": qrels_description},
    )
    print(format_table({name: evaluation.aggregate}, measures))
    print(f"{len(evaluation.per_query)} queries ({len(evaluation.missing_queries)} missing from the run count as 0); "
          f"wrote {', '.join(paths.values())}")
    return evaluation


# --- score margins (FGD's Figure 4; read by distill_ret.report) ---

MARGINS_SUFFIX = ".margins.json"
NEGATIVE_CHOICES = ("hardest", "all")


def margins_from_scores(scores_by_query: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                        *, relevance_level: int = 1, negatives: str = "hardest") -> list[float]:
    """Score margins s(q, d+) - s(q, d-) over the scored documents of every judged query.

    A scored document is positive when its gain is >= relevance_level, else (unjudged or lower gain) negative; the
    scores of unscored documents are unknown, so they take no part. `negatives="hardest"` gives one margin per scored
    positive, against the query's highest-scored negative; `"all"` one per (positive, negative) pair. Queries
    without a scored positive or a scored negative give none. Order: queries, then positives, then negatives, as
    `scores_by_query` lists them.
    """
    if negatives not in NEGATIVE_CHOICES:
        raise ValueError(f"negatives must be one of {NEGATIVE_CHOICES}, got {negatives!r}")
    margins = []
    for qid, scores in scores_by_query.items():
        gains = qrels.get(qid, {})
        positive = [score for doc, score in scores.items() if gains.get(doc, 0) >= relevance_level]
        negative = [score for doc, score in scores.items() if gains.get(doc, 0) < relevance_level]
        if not (positive and negative):
            continue
        against = [max(negative)] if negatives == "hardest" else negative
        margins.extend(float(p) - float(n) for p in positive for n in against)
    return margins


def write_margins(path: str | os.PathLike, system: str, margins: Sequence[float]) -> None:
    """Writes `<name>.margins.json` (the format this module reads), atomically."""
    if not str(path).endswith(MARGINS_SUFFIX):
        raise ValueError(f"a margins file is named <name>{MARGINS_SUFFIX}, got {path}")
    with formats.atomic_write(path) as handle:
        json.dump({"system": system, "positive_minus_negative": [float(value) for value in margins]}, handle)
        handle.write("\n")
