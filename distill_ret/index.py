"""Dense retrieval: corpus encoding in length-bucketed jitted batches, and exact top-k inner-product search.

`TextEncoder` tokenises texts, sorts them by length, pads each batch to the smallest of a few bucket lengths
(and the last batch to the full batch size), so the jitted encoder compiles once per bucket and little compute
goes to padding; embeddings come back as a float32 [n, hidden] matrix in input order.
`top_k_search` scores queries against documents chunk by chunk and merges `jax.lax.top_k` results, so the
[queries, documents] score matrix never exists at once; ties go to the lower document index.
"""
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill_ret.models import heads

EncodeFn = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, input_ids, attention_mask) -> [batch, hidden]


def bucket_lengths(max_length: int, step: int = 16) -> tuple[int, ...]:
    """Multiples of `step` below `max_length`, then `max_length`: e.g. 256 -> (16, 32, ..., 240, 256).

    Length-sorted batches padded to multiples of 16 waste about 5% of the compute on padding on Cranfield (32: 10%,
    powers of two: 20%), for at most max_length / step compilations, amortised over a corpus.
    """
    if max_length < 1 or step < 1:
        raise ValueError(f"max_length and step must be >= 1, got {max_length} and {step}")
    return (*range(step, max_length, step), max_length)


def plan_batches(lengths: Sequence[int], batch_size: int, buckets: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    """Texts sorted by length (stable) in chunks of `batch_size` -> [(text indices, padded length)]."""
    buckets = sorted(buckets)
    if max(lengths, default=0) > buckets[-1]:
        raise ValueError(f"a text has {max(lengths)} tokens, more than the largest bucket ({buckets[-1]})")
    order = np.argsort(np.asarray(lengths), kind="stable")
    plan = []
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        longest = max(int(lengths[i]) for i in chunk)
        plan.append((chunk, next(b for b in buckets if b >= longest)))
    return plan


def bi_encoder_fn(model: heads.BiEncoder, side: str = "document") -> EncodeFn:
    """(params, input_ids, attention_mask) -> embeddings through one tower of `model`."""
    method = {"query": heads.BiEncoder.encode_queries, "document": heads.BiEncoder.encode_documents}[side]
    return lambda params, input_ids, attention_mask: model.apply({"params": params}, input_ids, attention_mask,
                                                                 method=method)


class TextEncoder:
    """Texts -> [n, hidden] float32 embeddings with one compiled program per (batch_size, bucket) shape."""

    def __init__(self, encode_fn: EncodeFn, tokenizer, *, max_length: int = 256, batch_size: int = 64,
                 buckets: Sequence[int] | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.buckets = tuple(sorted(buckets)) if buckets else bucket_lengths(max_length)
        if self.buckets[-1] < max_length:
            raise ValueError(f"the largest bucket ({self.buckets[-1]}) is shorter than max_length={max_length}")
        self.pad_id = tokenizer.pad_token_id or 0
        self.encode_batch = jax.jit(encode_fn)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]

    def _padded(self, token_ids: list[list[int]], rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        input_ids = np.full((self.batch_size, length), self.pad_id, np.int32)  # [batch, length]
        mask = np.zeros((self.batch_size, length), np.int32)
        for row, index in enumerate(rows):
            ids = token_ids[index]
            input_ids[row, :len(ids)] = ids
            mask[row, :len(ids)] = 1
        return input_ids, mask

    def encode(self, params: Any, texts: Sequence[str]) -> np.ndarray:
        """[n] texts -> [n, hidden] float32 in input order."""
        if not texts:
            raise ValueError("no texts to encode")
        token_ids = self.tokenize(texts)
        plan = plan_batches([len(ids) for ids in token_ids], self.batch_size, self.buckets)
        # Dispatch every batch before reading any result back: the host pads batch i+1 while the device runs batch i.
        pending = [self.encode_batch(params, *self._padded(token_ids, rows, length)) for rows, length in plan]
        embeddings = np.zeros((len(texts), pending[0].shape[-1]), np.float32)
        for (rows, _), batch in zip(plan, pending):
            embeddings[rows] = np.asarray(batch[: len(rows)], np.float32)
        return embeddings


@jax.jit
def _merge_chunk(best_scores, best_indices, queries, documents, valid, offset):
    """Running top-k [q, k] merged with one document chunk [chunk, hidden] (rows beyond `valid` ignored)."""
    k = best_scores.shape[1]
    scores = jnp.dot(queries, documents.T, precision=jax.lax.Precision.HIGHEST)  # [q, chunk]
    scores = jnp.where(jnp.arange(documents.shape[0])[None, :] < valid, scores, -jnp.inf)
    chunk_scores, chunk_indices = jax.lax.top_k(scores, min(k, documents.shape[0]))  # [q, k]
    merged_scores = jnp.concatenate([best_scores, chunk_scores], axis=1)  # [q, k + k']: earlier (lower) indices first
    merged_indices = jnp.concatenate([best_indices, chunk_indices + offset], axis=1)
    top_scores, positions = jax.lax.top_k(merged_scores, k)  # [q, k]
    return top_scores, jnp.take_along_axis(merged_indices, positions, axis=1)


def top_k_search(queries: np.ndarray, documents: np.ndarray, k: int, *, doc_chunk: int = 65536,
                 query_chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: queries [q, hidden], documents [n, hidden] -> (scores [q, k'], indices [q, k'])
    with k' = min(k, n), best first."""
    queries, documents = np.asarray(queries, np.float32), np.asarray(documents, np.float32)
    if queries.ndim != 2 or documents.ndim != 2 or queries.shape[1] != documents.shape[1]:
        raise ValueError(f"expected queries [q, h] and documents [n, h], got {queries.shape} and {documents.shape}")
    if k < 1 or len(documents) == 0:
        raise ValueError(f"top-k search needs k >= 1 and at least one document (k={k}, n={len(documents)})")
    k = min(k, len(documents))
    doc_chunk = max(min(doc_chunk, len(documents)), k)
    # Pad the corpus to whole chunks so that every chunk has one shape (one compilation).
    padded = np.zeros((-(-len(documents) // doc_chunk) * doc_chunk, documents.shape[1]), np.float32)
    padded[: len(documents)] = documents
    all_scores, all_indices = [], []
    for start in range(0, len(queries), query_chunk):
        batch = jnp.asarray(queries[start:start + query_chunk])
        best_scores = jnp.full((batch.shape[0], k), -jnp.inf, jnp.float32)
        best_indices = jnp.zeros((batch.shape[0], k), jnp.int32)
        for offset in range(0, len(padded), doc_chunk):
            best_scores, best_indices = _merge_chunk(
                best_scores, best_indices, batch, padded[offset:offset + doc_chunk], len(documents) - offset, offset
            )
        all_scores.append(np.asarray(best_scores))
        all_indices.append(np.asarray(best_indices))
    return np.concatenate(all_scores), np.concatenate(all_indices)


def dense_run(query_ids: Sequence[str], query_embeddings: np.ndarray, doc_ids: Sequence[str],
              doc_embeddings: np.ndarray, k: int, **search_options) -> dict[str, dict[str, float]]:
    """Exact top-k retrieval as a run: query id -> document id -> inner-product score."""
    if len(query_ids) != len(query_embeddings) or len(doc_ids) != len(doc_embeddings):
        raise ValueError("every query and document embedding needs exactly one id")
    scores, indices = top_k_search(query_embeddings, doc_embeddings, k, **search_options)
    return {qid: {doc_ids[i]: float(s) for s, i in zip(row_scores, row_indices)}
            for qid, row_scores, row_indices in zip(query_ids, scores, indices)}
