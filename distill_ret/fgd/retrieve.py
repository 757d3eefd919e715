"""Mode `retrieve` for an FGD student: a dense TREC run of a split's queries over every long document.

`distill-ret retrieve --config=configs/fgd.py:<preset> --workdir=DIR --config.model.init_from=<run or HF dir>`
encodes the queries of `retrieve.split` ("" = every query) and every long document with the student named by
`model.init_from` (an fgd run's workdir: its checkpoint and model record; or a Hugging Face BERT directory with the
`model` head options), scores them with `retrieval.retrieval_run` (single-vector, or multi-vector when
`retrieve.gamma` > 0) and writes the top `retrieve.depth` documents of each query to `<workdir>/<name>.trec`, with
`<name>.metrics.json` and `<name>.margins.json` (each judged positive's score minus the query's best-scored
negative in the run: FGD's Figure 4, plotted by mode report) when the split has qrels. Config values are checked
first, then the data and the student are read, and the outputs are written last, each atomically.
"""
from __future__ import annotations

import os
from typing import Any

import jax

from distill_ret import evaluation, index
from distill_ret.data import formats
from distill_ret.errors import ConfigError, section_integer, section_number
from distill_ret.fgd import inputs, mine, mining, retrieval, spans


def check_config(config: Any) -> tuple[str, ...]:
    """Every config value of the mode, before any file is read; returns the measure names."""
    section = config.retrieve
    section_integer(section, "config.retrieve", "depth", 1)
    section_integer(section, "config.retrieve", "batch_size", 1)
    section_number(section, "config.retrieve", "gamma", 0, hint="0 = single-vector")
    if not isinstance(section.split, str):
        raise ConfigError(f"config.retrieve.split={section.split!r}: must be a split name or \"\" (every query)")
    evaluation.output_name(section.name, "retrieve", field="config.retrieve.name")
    measures = evaluation.measures_from_config(section, "config.retrieve")
    inputs.check_lengths(config)
    if not config.model.init_from:
        raise ConfigError("config.model.init_from: name the student to retrieve with (a run's workdir or an HF "
                          "directory)")
    try:
        spans.check_representation(config.fgd.representation, config.model.pooling)
    except ValueError as error:
        raise ConfigError(f"config.fgd.representation / config.model.pooling: {error}") from None
    return measures


def run_from_config(config: Any, workdir: str) -> dict[str, Any]:
    """Mode `retrieve` for task fgd (see the module docstring); returns {"run": path, "metrics": {...} or None}."""
    measures = check_config(config)
    section = config.retrieve
    split = section.split
    name = section.name or f"retrieve-{split or 'all'}"
    run_path = os.path.join(workdir, f"{name}.trec")
    student = inputs.student(config)
    params = mine.student_params(student)
    documents = inputs.long_documents(config, student.tokenizer)
    dataset = documents.dataset
    if split and split not in dataset.qrels:
        raise ConfigError(f"config.retrieve.split={split!r}: no such split; splits: {sorted(dataset.qrels)}")
    query_ids = sorted(dataset.qrels[split]) if split else sorted(dataset.queries)
    if not query_ids:
        raise ConfigError(f"config.retrieve.split={split!r}: no queries to retrieve for")
    if split:
        evaluation.check_metrics_target(workdir, name, run_path, field="config.retrieve.name")
    encoder = index.TextEncoder(index.bi_encoder_fn(student.model, "query"), student.tokenizer,
                                max_length=config.data.query_max_length, batch_size=section.batch_size,
                                show_progress=True)
    queries = encoder.encode(encoder.replicate(params), [dataset.queries[q] for q in query_ids])  # [queries, hidden]
    corpus = mining.document_piece_embeddings(student.model, params, documents.segmented,
                                              length=config.data.max_length,
                                              representation=config.fgd.representation,
                                              batch_size=section.batch_size, show_progress=True)
    run = retrieval.retrieval_run(query_ids, queries, corpus, section.depth, float(section.gamma))
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        formats.write_run(run, run_path, tag="fgd", depth=section.depth)
    print(f"retrieve: {len(query_ids)} queries over {len(corpus)} documents (gamma={float(section.gamma)}) with "
          f"{config.model.init_from}; wrote {run_path}")
    if not split:
        return {"run": run_path, "metrics": None}
    result = evaluation.evaluate(run, dataset.qrels[split], measures, relevance_level=section.relevance_level)
    if jax.process_index() == 0:
        evaluation.save_evaluation(result, workdir, name, per_query=section.per_query, extra={
            "run": os.path.abspath(run_path), "model": str(config.model.init_from), "gamma": float(section.gamma),
            "qrels": f"{config.data.data_dir} [{split}]", "data": evaluation.data_label(config.data)})
        margins = evaluation.margins_from_scores(run, dataset.qrels[split], relevance_level=section.relevance_level)
        evaluation.write_margins(os.path.join(workdir, f"{name}{evaluation.MARGINS_SUFFIX}"), name, margins)
    print(evaluation.format_table({name: result.aggregate}, measures))
    return {"run": run_path, "metrics": result.aggregate}
