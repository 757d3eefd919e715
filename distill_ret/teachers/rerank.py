"""Mode `rerank`: a teacher reranks a candidate TREC run (BM25's or a student's) into a new TREC run.

`distill-ret rerank --config=configs/rerank.py:cranfield --workdir=DIR --config.rerank.run_path=bm25-test.trec
--config.teacher.path=workdirs/cross_encoder`. Each query's top `rerank.depth` candidates (run order) are scored by
the teacher and written, best first, to `<workdir>/<rerank.name>.trec` (atomically). When the split has qrels, the
candidate run and the reranked run are evaluated and printed side by side. The data comes from `config.data` as in
every mode (`data.beir_dir`, or the export of builder `data.name`).
"""
from __future__ import annotations

import os
from typing import Any

import ml_collections

from distill_ret import evaluation
from distill_ret.data import formats, sources
from distill_ret.errors import ConfigError, integer_field
from distill_ret.teachers.base import rerank_run
from distill_ret.teachers.loader import check_location, load_teacher


def _check_config(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """Config values checked before any file is read (ConfigError naming the field); returns the measure names."""
    if not config.rerank.run_path:
        raise ConfigError("config.rerank.run_path is required (the candidate TREC run)")
    integer_field(config.rerank.depth, "config.rerank.depth", 0, "0 = every candidate")
    evaluation.output_name(config.rerank.name, config.rerank.run_path, field="config.rerank.name")
    check_location(config.teacher)
    return evaluation.measures_from_config(config.eval)


def run_from_config(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Reranks `rerank.run_path` with the configured teacher; returns {"run": path, "metrics": {...} or None}.

    Config values are checked first, then the data, the run and the teacher are read, the reranked run is scored
    and evaluated, and only then are the run and its metrics written (each atomically)."""
    measures = _check_config(config)
    dataset, source = sources.load_beir(config, workdir)
    split = config.data.split
    if split and split not in dataset.qrels:
        raise ConfigError(f"config.data.split={split!r} has no qrels in {source}; splits: {sorted(dataset.qrels)}")
    if split and not dataset.qrels[split]:
        raise formats.FormatError(os.path.join(source, "qrels", f"{split}.tsv"), None, "no judgements")
    candidates = formats.read_run(config.rerank.run_path, queries=dataset.queries, corpus=dataset.corpus)
    if split:
        candidates = {qid: docs for qid, docs in candidates.items() if qid in dataset.qrels[split]}
        if not candidates:
            raise formats.FormatError(config.rerank.run_path, None, f"no query of this run is in split {split!r}")
    teacher = load_teacher(config.teacher, corpus=dataset.corpus)
    depth = config.rerank.depth or None
    reranked = rerank_run(teacher, candidates, dataset.queries, dataset.corpus, depth=depth)
    name = config.rerank.name or f"rerank-{config.teacher.kind}-{split or 'all'}"
    rows = {}
    if split:
        for row, run in (("candidates", candidates), (name, reranked)):
            rows[row] = evaluation.evaluate(run, dataset.qrels[split], measures,
                                            relevance_level=config.eval.relevance_level)
    run_path = os.path.join(workdir, f"{name}.trec")
    formats.write_run(reranked, run_path, tag=config.teacher.kind)
    print(f"reranked the top {depth or 'all'} candidates of {len(reranked)} queries; wrote {run_path}")
    if not split:
        return {"run": run_path, "metrics": None}
    evaluation.save_evaluation(rows[name], workdir, name, per_query=config.eval.per_query, extra={
        "run": os.path.abspath(run_path), "candidates": os.path.abspath(config.rerank.run_path),
        "teacher": {"kind": config.teacher.kind, "path": config.teacher.path and os.path.abspath(config.teacher.path),
                    "fingerprint": teacher.fingerprint()}, "depth": depth,
        "qrels": f"{source} [{split}]", "data": evaluation.data_label(config.data),
    })
    print(evaluation.format_table({row: result.aggregate for row, result in rows.items()}, measures))
    return {"run": run_path, "metrics": rows[name].aggregate}
