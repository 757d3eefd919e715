"""Mode `rerank`: a teacher reranks a candidate TREC run (BM25's or a student's) into a new TREC run.

`distill-ret rerank --config=configs/rerank.py:cranfield --workdir=DIR --config.rerank.run_path=bm25-test.trec
--config.teacher.path=workdirs/cross_encoder`. Each query's top `rerank.depth` candidates (run order) are scored by
the teacher and written, best first, to `<workdir>/<rerank.name>.trec` (atomically). When the split has qrels, the
candidate run and the reranked run are evaluated and printed side by side.
"""
from __future__ import annotations

import os
from typing import Any

import ml_collections

from distill_ret import evaluation
from distill_ret.data import formats
from distill_ret.errors import ConfigError
from distill_ret.teachers.base import rerank_run
from distill_ret.teachers.loader import load_teacher

def run_from_config(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Reranks `rerank.run_path` with the configured teacher; returns {"run": path, "metrics": {...} or None}."""
    if not config.data.beir_dir:
        raise ConfigError("config.data.beir_dir is required (a BEIR-layout directory)")
    if not config.rerank.run_path:
        raise ConfigError("config.rerank.run_path is required (the candidate TREC run)")
    dataset = formats.read_beir(config.data.beir_dir)
    split = config.data.split
    if split and split not in dataset.qrels:
        raise ConfigError(f"config.data.split={split!r} has no qrels in {config.data.beir_dir}; "
                          f"splits: {sorted(dataset.qrels)}")
    candidates = formats.read_run(config.rerank.run_path, queries=dataset.queries, corpus=dataset.corpus)
    if split:
        candidates = {qid: docs for qid, docs in candidates.items() if qid in dataset.qrels[split]}
        if not candidates:
            raise formats.FormatError(config.rerank.run_path, None, f"no query of this run is in split {split!r}")
    teacher = load_teacher(config.teacher)
    depth = config.rerank.depth or None
    reranked = rerank_run(teacher, candidates, dataset.queries, dataset.corpus, depth=depth)
    name = config.rerank.name or f"rerank-{config.teacher.kind}-{split or 'all'}"
    run_path = os.path.join(workdir, f"{name}.trec")
    formats.write_run(reranked, run_path, tag=config.teacher.kind)
    print(f"reranked the top {depth or 'all'} candidates of {len(reranked)} queries; wrote {run_path}")
    if not split:
        return {"run": run_path, "metrics": None}
    measures = evaluation.measure_names(config.eval.measures)
    qrels = dataset.qrels[split]
    rows = {
        "candidates": evaluation.evaluate(candidates, qrels, measures, relevance_level=config.eval.relevance_level),
        name: evaluation.evaluate(reranked, qrels, measures, relevance_level=config.eval.relevance_level),
    }
    evaluation.save_evaluation(rows[name], workdir, name, per_query=config.eval.per_query, extra={
        "run": os.path.abspath(run_path), "candidates": os.path.abspath(config.rerank.run_path),
        "teacher": {"kind": config.teacher.kind, "path": os.path.abspath(config.teacher.path)}, "depth": depth,
        "qrels": f"{config.data.beir_dir} [{split}]",
    })
    print(evaluation.format_table({row: result.aggregate for row, result in rows.items()}, measures))
    return {"run": run_path, "metrics": rows[name].aggregate}
