"""Dense retrieval with an FGD student: single-vector (the document embeddings) or multi-vector,
s(q, d) = <q, d> + γ·(max_i <q, passage_i> + max_j <q, sentence_j>) (FGD, "Multi-vector Retrieval"; γ = 0.4 there).

`retrieval_run` scores every document exactly and keeps the top k: the documents and, for multi-vector scoring, their
piece embeddings ([docs, pieces, hidden], padded per document) are split over every device of the mesh and scanned in
chunks by the same sharded top-k as single-vector search (`index.ShardedCorpus`), so no device holds the corpus'
scores at once. Evaluator kind "fgd_dense" (`build_dense_evaluator`) runs it on a split's queries with the parameters
under training and scores the run with ir-measures.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill_ret import evaluation, index
from distill_ret.errors import ConfigError, section_number
from distill_ret.fgd import inputs, mining, objective
from distill_ret.models import heads
from distill_ret.training import evaluators

Run = dict[str, dict[str, float]]
QUERY_CHUNK = 256  # queries per multi-vector search step
MULTI_VECTOR_SCORES = 1 << 24  # query-embedding products per multi-vector chunk (64 MiB of float32 scores)


def _padded(pieces: Sequence[np.ndarray], valid: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-document [n_i, hidden] arrays -> ([docs, max n, hidden], [docs, max n] bool)."""
    width = max(1, max(len(p) for p in pieces))
    hidden = pieces[0].shape[-1]
    stacked = np.zeros((len(pieces), width, hidden), np.float32)  # [docs, width, hidden]
    mask = np.zeros((len(pieces), width), bool)  # [docs, width]
    for row, (embeddings, flags) in enumerate(zip(pieces, valid)):
        stacked[row, : len(embeddings)] = embeddings
        mask[row, : len(embeddings)] = flags
    return stacked, mask


def multi_vector_score(queries: jax.Array, chunk: Mapping[str, jax.Array], gamma: jax.Array) -> jax.Array:
    """`index.ScoreFn` of multi-vector retrieval: queries [q, h], a chunk of documents and pieces -> [q, docs]."""
    highest = jax.lax.Precision.HIGHEST
    documents = jnp.dot(queries, chunk["documents"].T, precision=highest)  # [q, docs]
    passages = jnp.einsum("qh,dph->qdp", queries, chunk["passages"], precision=highest)  # [q, docs, passages]
    sentences = jnp.einsum("qh,dsh->qds", queries, chunk["sentences"], precision=highest)  # [q, docs, sentences]
    return objective.multi_vector_scores(documents, passages, chunk["passage_valid"][None], sentences,
                                         chunk["sentence_valid"][None], gamma)


def retrieval_run(query_ids: Sequence[str], query_embeddings: np.ndarray, corpus: Mapping[str, mining.DocumentPieces],
                  k: int, gamma: float = 0.0, *, mesh=None) -> Run:
    """query id -> its top-k documents -> score; γ = 0 is plain single-vector retrieval (exact inner products).

    The documents (with their pieces when γ > 0) are split over every device of `mesh` (default: all devices) and
    searched exactly (`index.ShardedCorpus`), ties to the earlier document of `corpus`."""
    doc_ids = list(corpus)
    documents = np.stack([corpus[d].document for d in doc_ids])  # [docs, hidden]
    if gamma == 0.0:
        return index.dense_run(query_ids, query_embeddings, doc_ids, documents, k, mesh=mesh)
    passages, passage_valid = _padded([corpus[d].passages for d in doc_ids], [corpus[d].passage_valid for d in doc_ids])
    sentences, sentence_valid = _padded([corpus[d].sentences for d in doc_ids],
                                        [corpus[d].sentence_valid for d in doc_ids])
    vectors = 1 + passages.shape[1] + sentences.shape[1]  # embeddings scored per document
    sharded = index.ShardedCorpus({"documents": documents, "passages": passages, "passage_valid": passage_valid,
                                   "sentences": sentences, "sentence_valid": sentence_valid}, mesh=mesh,
                                  doc_chunk=max(1, MULTI_VECTOR_SCORES // (QUERY_CHUNK * vectors)))
    scores, indices = sharded.search(query_embeddings, k, score_fn=multi_vector_score,
                                     score_args=(np.float32(gamma),), query_chunk=QUERY_CHUNK)  # [queries, k]
    return {qid: {doc_ids[i]: float(s) for s, i in zip(row_scores, row_indices)}
            for qid, row_scores, row_indices in zip(query_ids, scores, indices)}


@dataclasses.dataclass(frozen=True)
class DenseEvalInputs:
    """What evaluator kind "fgd_dense" needs from the fgd task."""

    documents: inputs.LongDocuments
    model: heads.BiEncoder
    query_max_length: int
    max_length: int
    representation: str


class DenseEvaluation:
    """The student's retrieval run over a split's queries, scored with ir-measures."""

    def __init__(self, inputs_: DenseEvalInputs, split: str, depth: int, gamma: float, measures: tuple[str, ...],
                 relevance_level: int, batch_size: int):
        self.inputs, self.split, self.depth, self.gamma = inputs_, split, depth, gamma
        self.measures, self.relevance_level, self.batch_size = measures, relevance_level, batch_size
        self._encoders: dict[Any, index.TextEncoder] = {}

    def __call__(self, params: Any, mesh) -> dict[str, float]:
        dataset = self.inputs.documents.dataset
        if mesh not in self._encoders:
            self._encoders[mesh] = index.TextEncoder(index.bi_encoder_fn(self.inputs.model, "query"),
                                                     self.inputs.documents.tokenizer,
                                                     max_length=self.inputs.query_max_length,
                                                     batch_size=self.batch_size, mesh=mesh)
        encoder = self._encoders[mesh]
        host_params = jax.tree.map(np.asarray, params)
        query_ids = sorted(dataset.qrels[self.split])
        queries = encoder.encode(encoder.replicate(host_params), [dataset.queries[q] for q in query_ids])
        corpus = mining.document_piece_embeddings(self.inputs.model, host_params, self.inputs.documents.segmented,
                                                  length=self.inputs.max_length,
                                                  representation=self.inputs.representation,
                                                  batch_size=self.batch_size)
        run = retrieval_run(query_ids, queries, corpus, self.depth, self.gamma, mesh=mesh)
        return evaluation.evaluate(run, dataset.qrels[self.split], self.measures,
                                   relevance_level=self.relevance_level).aggregate


def build_dense_evaluator(name: str, section: Any, inputs_: DenseEvalInputs, mesh) -> evaluators.Evaluator:
    """Kind "fgd_dense": fields split, depth, gamma (0 = single-vector), measures, relevance_level, batch_size."""
    prefix = f"config.evals.{name}"
    split = section.get("split")
    if split not in inputs_.documents.dataset.qrels:
        raise ConfigError(f"{prefix}.split={split!r} has no qrels; splits: {sorted(inputs_.documents.dataset.qrels)}")
    gamma = section_number(section, prefix, "gamma", 0, hint="0 = single-vector")
    measures = evaluation.measures_from_config(section, prefix)
    evaluation_ = DenseEvaluation(inputs_, split, evaluators.positive_field(name, section, "depth"), gamma,
                                  measures, section.relevance_level,
                                  evaluators.positive_field(name, section, "batch_size"))
    return evaluators.Evaluator(name=name, every=evaluators.check_every(name, section), measures=measures,
                                evaluate=evaluation_)
