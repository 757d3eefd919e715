"""The dense teacher: a BERT bi-encoder (e.g. MiniLM, mean-pooled and L2-normalised) scoring by inner product.

Encoding goes through `distill_ret.index.TextEncoder` (the sharded encoding engine: length buckets, one compiled
program per bucket, the batch split over every device). Passage embeddings are cached by passage text for the
teacher's lifetime, so candidates shared by many queries are encoded once (and two documents with one id but
different texts never share an embedding); repeated query texts within a batch are encoded once. `retrieve`
searches a whole corpus with the sharded exact top-k, optionally through an on-disk embedding cache fingerprinted
by this teacher and the corpus texts. The parameters enter the encoder through `jax.lax.stop_gradient`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from distill_ret import index
from distill_ret.data import formats
from distill_ret.hf.identity import load_tokenizer, params_digest, tokenizer_digest
from distill_ret.models.bert import BertConfig
from distill_ret.models.heads import BiEncoder, bi_encoder_params
from distill_ret.teachers import pairs
from distill_ret.teachers.base import Teacher, TeacherQuery


class DenseTeacher(Teacher):
    """s(q, p) = <E(q), E(title + text of p)> with one shared (tied) BERT tower."""

    def __init__(self, params: Any, config: BertConfig, tokenizer, *, pooling: str = "mean", normalize: bool = True,
                 max_length: int = 256, batch_size: int = 64, mesh: jax.sharding.Mesh | None = None,
                 show_progress: bool = False):
        if max_length > config.max_position_embeddings:
            raise ValueError(f"max_length {max_length} exceeds the model's {config.max_position_embeddings} positions")
        self.config, self.pooling, self.normalize = config, pooling, normalize
        model = BiEncoder(config, pooling=pooling, normalize=normalize, tied=True)
        frozen_fn = index.bi_encoder_fn(model)
        self.encoder = index.TextEncoder(
            lambda params, ids, mask: frozen_fn(jax.lax.stop_gradient(params), ids, mask), tokenizer,
            max_length=max_length, batch_size=batch_size, mesh=mesh, show_progress=show_progress,
        )
        host_params = jax.tree.map(np.asarray, nn.unbox(params))
        self._params_sha256 = params_digest(host_params)
        self.params = self.encoder.replicate(host_params)
        self._passages: dict[str, np.ndarray] = {}  # passage text -> [hidden] embedding

    @classmethod
    def from_hf(cls, directory: str | os.PathLike, **options) -> "DenseTeacher":
        """A BertModel directory in Hugging Face layout (safetensors, config.json, tokenizer files)."""
        from distill_ret.hf import import_from_hf

        config, weights = import_from_hf(directory)
        if not isinstance(config, BertConfig):
            raise ValueError(f"{directory}: not a BERT checkpoint")
        return cls(bi_encoder_params(weights, tied=True), config, load_tokenizer(directory), **options)

    def fingerprint(self) -> dict[str, str]:
        return {"kind": "dense", "params_sha256": self._params_sha256,
                "tokenizer_sha256": tokenizer_digest(self.encoder.tokenizer),
                "max_length": str(self.encoder.max_length), "pooling": self.pooling,
                "normalize": str(self.normalize), "config": repr(self.config)}

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """[n, hidden] float32 query embeddings (each distinct text encoded once)."""
        unique = list(dict.fromkeys(texts))
        embeddings = dict(zip(unique, self.encoder.encode(self.params, unique)))
        return np.stack([embeddings[text] for text in texts])

    def encode_passages(self, documents: Sequence[formats.Document]) -> np.ndarray:
        """[n, hidden] float32 passage embeddings (cached by passage text: title then text)."""
        texts = [pairs.passage_text(doc) for doc in documents]
        new = [text for text in dict.fromkeys(texts) if text not in self._passages]
        if new:
            self._passages.update(zip(new, self.encoder.encode(self.params, new)))
        return np.stack([self._passages[text] for text in texts])

    def score_batch(self, queries: Sequence[TeacherQuery]) -> list[np.ndarray]:
        if not queries:
            return []
        query_embeddings = self.encode_queries([query.text for query in queries])  # [queries, hidden]
        passages = self.encode_passages([doc for query in queries for doc in query.candidates])  # [pairs, hidden]
        bounds = np.cumsum([0] + [len(query.candidates) for query in queries])
        return [passages[start:end] @ query_embeddings[row]
                for row, (start, end) in enumerate(zip(bounds[:-1], bounds[1:]))]

    def encode_corpus(self, documents: Sequence[formats.Document],
                      cache_dir: str | os.PathLike | None = None) -> np.ndarray:
        """[n, hidden] passage embeddings; with `cache_dir`, read from or saved to an embedding cache there
        (fingerprinted by this teacher and the passage texts in order; a cache of anything else is refused)."""
        if cache_dir is None:
            return self.encode_passages(documents)
        fingerprint = index.cache_fingerprint(self.fingerprint(), [pairs.passage_text(doc) for doc in documents])
        return index.encode_or_load(cache_dir, fingerprint, lambda: self.encode_passages(documents))

    def retrieve(self, queries: Mapping[str, str], corpus: Mapping[str, formats.Document], k: int, *,
                 cache_dir: str | os.PathLike | None = None) -> dict:
        """Exact top-k dense retrieval over the whole corpus (sharded over the encoder's mesh) as a run
        (query id -> document id -> score); `cache_dir` caches the corpus embeddings (see `encode_corpus`)."""
        doc_ids = list(corpus)
        documents = self.encode_corpus([corpus[doc_id] for doc_id in doc_ids], cache_dir)
        query_ids = list(queries)
        return index.dense_run(query_ids, self.encode_queries([queries[q] for q in query_ids]), doc_ids, documents, k,
                               mesh=self.encoder.engine.mesh)
