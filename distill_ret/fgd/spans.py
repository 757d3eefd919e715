"""Segmented long documents -> span masks, and the embeddings of a document and its pieces in one forward pass.

A batch of documents (`data.segment.SegmentedDocument`) becomes `SpanBatch`: token ids and attention masks
[docs, length], and span masks [docs, pieces, length] whose first `num_passages` rows are passages and the next
`num_sentences` rows sentences (`piece_valid` [docs, pieces] marks rows that hold a piece with tokens left after
truncation). Which pieces fill the rows is the caller's choice (all of a positive document's, or mined negatives).

Representations of the pieces (FGD Table 2, "fine-grained representation"):
- "global": the global-consistent granularity embedding (eq. 7): the last layer's [CLS] row recomputed with its
  attention restricted to the span (`Bert.span_embeddings`); the document is its [CLS] embedding. Needs [CLS]
  pooling.
- "fg_pooling" ("FGD w/ FG pooling"): the document by [CLS], each piece the mean of its span's last-layer token
  states. Needs [CLS] pooling.
- "all_pooling" ("FGD w/ All pooling": "all embeddings at different granularity with mean-pooling"): the
  document the mean of all its tokens' last-layer states, each piece the mean over its span. Needs mean pooling
  (the model's queries and retrieval documents are then mean-pooled too, so training and retrieval agree).
- "separate" ("FGD w/ Separate Pieces"): each piece encoded on its own as `[CLS] piece [SEP]` with the model's
  pooling; the document by the model's pooling over its whole encoding.
Every representation applies the model's L2 normalisation, when it has one, to documents and pieces alike.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill_ret.data.segment import SegmentedDocument
from distill_ret.models import heads
from distill_ret.models.bert import Bert

REPRESENTATIONS = ("global", "fg_pooling", "all_pooling", "separate")
POOLING_OF_REPRESENTATION = {"global": "cls", "fg_pooling": "cls", "all_pooling": "mean"}  # separate: either


@dataclasses.dataclass(frozen=True)
class SpanBatch:
    """Documents with the token spans of selected pieces; passages first, then sentences, along the pieces axis."""

    input_ids: np.ndarray  # [docs, length] int32
    attention_mask: np.ndarray  # [docs, length] int32
    span_mask: np.ndarray  # [docs, pieces, length] bool
    piece_valid: np.ndarray  # [docs, pieces] bool
    num_passages: int  # rows [0, num_passages) are passages, the rest sentences
    piece_input_ids: np.ndarray | None = None  # [docs, pieces, piece_length] int32: pieces encoded on their own
    piece_attention_mask: np.ndarray | None = None  # [docs, pieces, piece_length] int32

    @property
    def num_sentences(self) -> int:
        return self.span_mask.shape[1] - self.num_passages


def span_mask(spans: np.ndarray, length: int) -> np.ndarray:
    """Token [start, end) spans [pieces, 2] -> masks [pieces, length] bool (an empty span marks nothing)."""
    spans = np.asarray(spans, np.int64).reshape(-1, 2)  # [pieces, 2]
    positions = np.arange(length)[None, :]  # [1, length]
    return (positions >= spans[:, :1]) & (positions < spans[:, 1:])  # [pieces, length]


def _selected_spans(spans: np.ndarray, valid: np.ndarray, selection: Sequence[int] | None, rows: int):
    """The spans [rows, 2] and validity [rows] of the selected pieces (default: the first `rows` pieces)."""
    indices = list(range(min(rows, len(spans)))) if selection is None else list(selection)
    if len(indices) > rows:
        raise ValueError(f"{len(indices)} pieces selected for {rows} rows")
    chosen = np.zeros((rows, 2), np.int32)  # [rows, 2]
    chosen_valid = np.zeros((rows,), bool)  # [rows]
    if indices:
        chosen[: len(indices)] = spans[indices]
        chosen_valid[: len(indices)] = valid[indices]
    return chosen, chosen_valid


def batch_documents(
    documents: Sequence[SegmentedDocument],
    *,
    length: int,
    num_passages: int,
    num_sentences: int,
    passages: Sequence[Sequence[int] | None] | None = None,
    sentences: Sequence[Sequence[int] | None] | None = None,
    piece_length: int = 0,
) -> SpanBatch:
    """Documents padded to `length` with the spans of their pieces.

    passages[i] / sentences[i]: indices of document i's passages / sentences to place in its rows (None: its first
    `num_passages` / `num_sentences`). `piece_length` > 0 also builds each piece as its own input
    `[CLS] piece tokens [SEP]` (cut to `piece_length`) for the "separate" representation; [CLS] and [SEP] are the
    first and last token of the document's encoding.
    """
    docs = len(documents)
    ids = np.zeros((docs, length), np.int32)  # [docs, length]
    spans = np.zeros((docs, num_passages + num_sentences, 2), np.int32)  # [docs, pieces, 2]
    valid = np.zeros((docs, num_passages + num_sentences), bool)  # [docs, pieces]
    for row, document in enumerate(documents):
        if len(document.input_ids) > length:
            raise ValueError(f"document {row} has {len(document.input_ids)} tokens, more than length={length}")
        ids[row, : len(document.input_ids)] = document.input_ids
        spans[row, :num_passages], valid[row, :num_passages] = _selected_spans(
            document.passage_spans, document.passage_mask, None if passages is None else passages[row], num_passages)
        spans[row, num_passages:], valid[row, num_passages:] = _selected_spans(
            document.sentence_spans, document.sentence_mask, None if sentences is None else sentences[row],
            num_sentences)
    lengths = np.array([len(document.input_ids) for document in documents])  # [docs]
    attention_mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)  # [docs, length]
    masks = np.stack([span_mask(doc_spans, length) for doc_spans in spans]) if docs else np.zeros(
        (0, spans.shape[1], length), bool)  # [docs, pieces, length]
    batch = SpanBatch(ids, attention_mask, masks & valid[..., None], valid, num_passages)
    if piece_length:
        piece_ids, piece_mask = _separate_pieces(documents, spans, valid, piece_length)
        batch = dataclasses.replace(batch, piece_input_ids=piece_ids, piece_attention_mask=piece_mask)
    return batch


def _separate_pieces(documents, spans: np.ndarray, valid: np.ndarray, piece_length: int):
    """[docs, pieces, piece_length] ids and masks of `[CLS] piece [SEP]` inputs (invalid pieces: all padding)."""
    if piece_length < 3:
        raise ValueError(f"piece_length must be >= 3 ([CLS], a token, [SEP]), got {piece_length}")
    docs, pieces = valid.shape
    ids = np.zeros((docs, pieces, piece_length), np.int32)  # [docs, pieces, piece_length]
    mask = np.zeros((docs, pieces, piece_length), np.int32)  # [docs, pieces, piece_length]
    for row, document in enumerate(documents):
        cls_id, sep_id = int(document.input_ids[0]), int(document.input_ids[-1])
        for piece in np.flatnonzero(valid[row]):
            start, end = spans[row, piece]
            tokens = [cls_id, *document.input_ids[start:end][: piece_length - 2].tolist(), sep_id]
            ids[row, piece, : len(tokens)] = tokens
            mask[row, piece, : len(tokens)] = 1
    return ids, mask


def check_representation(representation: str, pooling: str) -> None:
    """ValueError unless `representation` is known and fits the bi-encoder's pooling."""
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")
    needed = POOLING_OF_REPRESENTATION.get(representation)
    if needed is not None and pooling != needed:
        raise ValueError(f"representation {representation!r} needs a bi-encoder with {needed!r} pooling, "
                         f"got {pooling!r}")


def _document_and_spans(bert: Bert, input_ids, attention_mask, span_masks, representation: str, pooling: str,
                        deterministic: bool):
    """Inside `Bert.apply`: (documents [docs, hidden], pieces [docs, pieces, hidden]) float32, before normalising."""
    output = bert(input_ids, attention_mask, deterministic=deterministic)
    documents = heads.pool(output, attention_mask, pooling)  # [docs, hidden]
    if representation == "global":
        pieces = bert.span_embeddings(output.last_layer_input, attention_mask, span_masks,
                                      deterministic=deterministic).astype(jnp.float32)  # [docs, pieces, hidden]
    else:
        token_mask = span_masks & attention_mask.astype(bool)[:, None, :]  # [docs, pieces, length]
        pieces = heads.masked_mean(output.last_hidden_state[:, None, :, :], token_mask)  # [docs, pieces, hidden]
    return documents, pieces


def _pooled(bert: Bert, input_ids, attention_mask, pooling: str, deterministic: bool):
    """Inside `Bert.apply`: [n, length] inputs -> [n, hidden] pooled float32, before normalising."""
    return heads.pool(bert(input_ids, attention_mask, deterministic=deterministic), attention_mask, pooling)


def granularity_embeddings(
    model: heads.BiEncoder,
    params: Any,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    span_masks: jax.Array,
    representation: str = "global",
    *,
    piece_input_ids: jax.Array | None = None,
    piece_attention_mask: jax.Array | None = None,
    deterministic: bool = True,
    rngs: dict | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Document tower embeddings of documents and their pieces: (documents [docs, hidden], pieces [docs, pieces,
    hidden]) float32, from `BiEncoder` params. input_ids, attention_mask [docs, length]; span_masks [docs, pieces,
    length] bool. All pieces of every granularity come from the documents' one encoding, except with "separate",
    which encodes piece_input_ids [docs, pieces, piece_length] on their own (one more batched pass)."""
    check_representation(representation, model.pooling)
    bert = Bert(model.config)
    variables = {"params": heads.bert_params_from_bi_encoder(params, "document")["bert"]}
    span_masks = span_masks.astype(bool)
    if representation == "separate":
        if piece_input_ids is None or piece_attention_mask is None:
            raise ValueError("the 'separate' representation needs piece_input_ids and piece_attention_mask")
        documents = bert.apply(variables, input_ids, attention_mask, model.pooling, deterministic,
                               method=_pooled, rngs=rngs)  # [docs, hidden]
        docs, pieces, piece_length = piece_input_ids.shape
        flat = bert.apply(variables, piece_input_ids.reshape(docs * pieces, piece_length),
                          piece_attention_mask.reshape(docs * pieces, piece_length), model.pooling, deterministic,
                          method=_pooled, rngs=rngs)  # [docs * pieces, hidden]
        piece_embeddings = flat.reshape(docs, pieces, -1)  # [docs, pieces, hidden]
    else:
        documents, piece_embeddings = bert.apply(variables, input_ids, attention_mask, span_masks, representation,
                                                 model.pooling, deterministic, method=_document_and_spans, rngs=rngs)
    if model.normalize:
        return heads.l2_normalize(documents), heads.l2_normalize(piece_embeddings)
    return documents, piece_embeddings


def batch_embeddings(model: heads.BiEncoder, params: Any, batch: SpanBatch, representation: str = "global",
                     **options) -> tuple[jax.Array, jax.Array]:
    """`granularity_embeddings` of a SpanBatch."""
    return granularity_embeddings(model, params, jnp.asarray(batch.input_ids), jnp.asarray(batch.attention_mask),
                                  jnp.asarray(batch.span_mask), representation,
                                  piece_input_ids=None if batch.piece_input_ids is None else jnp.asarray(
                                      batch.piece_input_ids),
                                  piece_attention_mask=None if batch.piece_attention_mask is None else jnp.asarray(
                                      batch.piece_attention_mask), **options)
