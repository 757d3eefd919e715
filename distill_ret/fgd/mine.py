"""Mode `mine`: the current student's hard negatives for the next FGD stage, written as a fingerprinted file.

`distill-ret mine --config=configs/fgd.py:<preset> --workdir=<next stage's workdir> --config.model.init_from=<run>`
encodes every train query and every long document with the student named by `model.init_from` (an fgd run's
workdir: its checkpoint and model record; or a Hugging Face BERT directory with the `model` head options), takes
each query's `data.num_negatives` best unjudged documents over the whole corpus (`mining.document_negatives`), then
the passages of those documents and the sentences of the chosen passages the student scores highest
(`mining.hierarchical_negatives`, eq. 14-15, at `mine.passage_pool` / `mine.sentence_pool` per query), and writes
them to `mine.output` (default `<workdir>/inputs/negatives.jsonl`), which stage 2 names as `data.negatives_file`.

The file's fingerprint holds the student's weights digest, the data digest and every option: a file that matches is
kept (the stage is skipped), a different one is refused and never overwritten.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import numpy as np

from distill_ret import index
from distill_ret.errors import ConfigError, integer_field
from distill_ret.fgd import inputs, mining, spans
from distill_ret.hf.identity import params_digest, tokenizer_digest
from distill_ret.models import heads
from distill_ret.training import state

OUTPUT_NAME = os.path.join("inputs", "negatives.jsonl")


def output_path(config: Any, workdir: str) -> pathlib.Path:
    return pathlib.Path(config.mine.output or os.path.join(workdir, OUTPUT_NAME)).absolute()


def _check(config: Any) -> None:
    inputs.check_lengths(config)
    for field in ("passage_pool", "sentence_pool", "batch_size"):
        integer_field(config.mine.get(field), f"config.mine.{field}", 1)
    integer_field(config.data.num_negatives, "config.data.num_negatives", 1)
    if not config.model.init_from:
        raise ConfigError("config.model.init_from: name the student to mine with (a run's workdir or an HF directory)")
    try:
        spans.check_representation(config.fgd.representation, config.model.pooling)
    except ValueError as error:
        raise ConfigError(f"config.fgd.representation / config.model.pooling: {error}") from None


def student_params(student: inputs.Student) -> Any:
    """The student's weights (host arrays): the run's checkpoint, or the HF directory's encoder as bi-encoder towers;
    ConfigError when the source holds another model than `config.model` describes."""
    weights = state.read_source_params(student.source, student.record, "config.model.init_from",
                                       adapt_hf=lambda params: heads.bi_encoder_params(params, student.model.tied))
    return jax.tree.map(np.asarray, weights)


def mine_from_config(config: Any, workdir: str) -> pathlib.Path:
    """Mode `mine` (see the module docstring); returns the negatives file."""
    _check(config)
    output = output_path(config, workdir)
    if output.exists() and not output.is_file():
        raise ConfigError(f"config.mine.output={str(output)!r} exists and is not a file")
    student = inputs.student(config)
    params = student_params(student)
    documents = inputs.long_documents(config, student.tokenizer)
    dataset = documents.dataset
    split = config.data.train_split
    if split not in dataset.qrels:
        raise ConfigError(f"config.data.train_split={split!r}: no such split; splits: {sorted(dataset.qrels)}")
    options = {"split": split, "num_negatives": config.data.num_negatives, "passage_pool": config.mine.passage_pool,
               "sentence_pool": config.mine.sentence_pool, "representation": config.fgd.representation,
               "max_length": config.data.max_length, "query_max_length": config.data.query_max_length,
               "tokenizer": tokenizer_digest(student.tokenizer), **student.record.options}
    expected = mining.fingerprint(params_digest(params), mining.data_digest(
        {d: doc.text for d, doc in dataset.documents.items()}, dataset.queries, dataset.qrels), options)
    if output.exists():
        mining.check_fingerprint(output, expected)
        print(f"mine: {output} already holds these negatives; nothing to do")
        return output
    model = student.model
    query_ids = sorted(dataset.qrels[split])
    doc_ids = list(dataset.documents)
    queries = index.TextEncoder(index.bi_encoder_fn(model, "query"), student.tokenizer,
                                max_length=config.data.query_max_length, batch_size=config.mine.batch_size,
                                show_progress=True)
    texts = index.TextEncoder(index.bi_encoder_fn(model, "document"), student.tokenizer,
                              max_length=config.data.max_length, batch_size=config.mine.batch_size, show_progress=True)
    query_embeddings = queries.encode(queries.replicate(params), [dataset.queries[q] for q in query_ids])
    doc_embeddings = texts.encode(texts.replicate(params), [dataset.documents[d].text for d in doc_ids])
    negative_documents = mining.document_negatives(query_ids, query_embeddings, doc_ids, doc_embeddings,
                                                   dataset.qrels[split], config.data.num_negatives)
    needed = sorted({d for docs in negative_documents.values() for d in docs})
    pieces = mining.document_piece_embeddings(model, params, {d: documents.segmented[d] for d in needed},
                                              length=config.data.max_length,
                                              representation=config.fgd.representation,
                                              batch_size=config.mine.batch_size, show_progress=True)
    negatives = mining.hierarchical_negatives(query_ids, query_embeddings, negative_documents, pieces,
                                              config.mine.passage_pool, config.mine.sentence_pool)
    if jax.process_index() == 0:
        mining.write_negatives(output, negatives, expected)
    print(f"mine: {len(negatives)} queries' negatives ({config.data.num_negatives} documents, up to "
          f"{config.mine.passage_pool} passages and {config.mine.sentence_pool} sentences each) -> {output}")
    return output
