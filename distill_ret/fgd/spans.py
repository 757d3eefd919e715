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
  pooling; the document by the model's pooling over its whole encoding. Only the valid pieces are encoded, packed
  (`SeparatePieces`), passages and sentences each at their own length (`PieceShape`), so the cost follows the pieces
  a batch uses, not its rows times the document length.
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
    separate: SeparatePieces | None = None  # the pieces as texts of their own ("separate" representation)

    @property
    def num_sentences(self) -> int:
        return self.span_mask.shape[1] - self.num_passages


@dataclasses.dataclass(frozen=True)
class PieceShape:
    """Static shape of the "separate" representation's inputs: how many passages and sentences a batch packs, and
    the token length ([CLS] and [SEP] included) each granularity is cut or padded to."""

    passages: int
    passage_length: int
    sentences: int
    sentence_length: int


@dataclasses.dataclass(frozen=True)
class SeparatePieces:
    """The valid pieces of a batch as `[CLS] piece [SEP]` texts, packed: passages, then sentences, and where each
    (document, row) finds its piece in that order (`index`)."""

    passage_input_ids: np.ndarray  # [passages, passage_length] int32
    passage_attention_mask: np.ndarray  # [passages, passage_length] int32
    sentence_input_ids: np.ndarray  # [sentences, sentence_length] int32
    sentence_attention_mask: np.ndarray  # [sentences, sentence_length] int32
    index: np.ndarray  # [docs, pieces] int32: row in passages ++ sentences; 0 on invalid rows (masked out)

    def arrays(self) -> dict[str, np.ndarray]:
        """The fields by name (a pytree for jitted functions and training batches)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def piece_lengths(documents: Sequence[SegmentedDocument], length: int, multiple: int = 8) -> tuple[int, int]:
    """(passage_length, sentence_length): the longest valid passage and sentence of `documents` in tokens, plus
    [CLS] and [SEP], rounded up to `multiple` and at most `length` (the document length the pieces come from)."""

    def longest(spans_of, mask_of) -> int:
        sizes = [int(end - start) for document in documents
                 for (start, end), valid in zip(spans_of(document), mask_of(document)) if valid]
        needed = max(sizes, default=1) + 2
        return min(-(-needed // multiple) * multiple, length)

    return (longest(lambda d: d.passage_spans, lambda d: d.passage_mask),
            longest(lambda d: d.sentence_spans, lambda d: d.sentence_mask))


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
    separate: PieceShape | None = None,
) -> SpanBatch:
    """Documents padded to `length` with the spans of their pieces.

    passages[i] / sentences[i]: indices of document i's passages / sentences to place in its rows (None: its first
    `num_passages` / `num_sentences`). `separate` also packs each valid piece as its own input
    `[CLS] piece tokens [SEP]` (cut to its granularity's length) for the "separate" representation; [CLS] and [SEP]
    are the first and last token of the document's encoding. ValueError when more pieces are valid than it packs.
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
    if separate is not None:
        batch = dataclasses.replace(batch, separate=_separate_pieces(documents, spans, valid, num_passages, separate))
    return batch


def _separate_pieces(documents, spans: np.ndarray, valid: np.ndarray, num_passages: int,
                     shape: PieceShape) -> SeparatePieces:
    """The valid pieces packed as `[CLS] piece [SEP]` inputs (unused slots: all padding)."""
    if min(shape.passage_length, shape.sentence_length) < 3 or min(shape.passages, shape.sentences) < 1:
        raise ValueError(f"a PieceShape packs >= 1 piece of >= 3 tokens ([CLS], a token, [SEP]) per granularity, "
                         f"got {shape}")
    packed = {"passage": (shape.passages, shape.passage_length), "sentence": (shape.sentences, shape.sentence_length)}
    ids = {name: np.zeros(size, np.int32) for name, size in packed.items()}  # [count, piece_length]
    masks = {name: np.zeros(size, np.int32) for name, size in packed.items()}  # [count, piece_length]
    used = {"passage": 0, "sentence": 0}
    index = np.zeros(valid.shape, np.int32)  # [docs, pieces]
    for row, document in enumerate(documents):
        cls_id, sep_id = int(document.input_ids[0]), int(document.input_ids[-1])
        for piece in np.flatnonzero(valid[row]):
            name = "passage" if piece < num_passages else "sentence"
            count, piece_length = packed[name]
            if used[name] == count:
                raise ValueError(f"more than {count} valid {name}s in the batch, the {name}s its PieceShape packs")
            start, end = spans[row, piece]
            tokens = [cls_id, *document.input_ids[start:end][: piece_length - 2].tolist(), sep_id]
            ids[name][used[name], : len(tokens)] = tokens
            masks[name][used[name], : len(tokens)] = 1
            index[row, piece] = used[name] + (0 if name == "passage" else shape.passages)
            used[name] += 1
    return SeparatePieces(ids["passage"], masks["passage"], ids["sentence"], masks["sentence"], index)


def merge_separate(separate: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """`SeparatePieces.arrays()` of `size` examples stacked along a leading axis -> those of one batch: every
    example's passages, then every example's sentences, the index shifted to match ([size * docs, pieces])."""
    size, passages = separate["passage_input_ids"].shape[:2]
    sentences = separate["sentence_input_ids"].shape[1]
    example = jnp.arange(size)[:, None, None]  # [size, 1, 1]
    index = separate["index"]  # [size, docs, pieces]
    shifted = jnp.where(index < passages, example * passages + index,
                        size * passages + example * sentences + index - passages)  # [size, docs, pieces]
    merged = {name: value.reshape(-1, value.shape[-1])
              for name, value in separate.items() if name != "index"}  # [size * count, piece_length]
    return {**merged, "index": shifted.reshape(-1, index.shape[-1])}


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
    separate: dict[str, jax.Array] | None = None,
    deterministic: bool = True,
    rngs: dict | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Document tower embeddings of documents and their pieces: (documents [docs, hidden], pieces [docs, pieces,
    hidden]) float32, from `BiEncoder` params. input_ids, attention_mask [docs, length]; span_masks [docs, pieces,
    length] bool. All pieces of every granularity come from the documents' one encoding, except with "separate",
    which encodes the packed pieces of `separate` (`SeparatePieces.arrays()`) on their own (one more pass per
    granularity); rows without a valid piece are zero."""
    check_representation(representation, model.pooling)
    bert = Bert(model.config)
    variables = {"params": heads.bert_params_from_bi_encoder(params, "document")["bert"]}
    span_masks = span_masks.astype(bool)
    if representation == "separate":
        if separate is None:
            raise ValueError("the 'separate' representation needs the packed pieces (separate=)")
        documents = bert.apply(variables, input_ids, attention_mask, model.pooling, deterministic,
                               method=_pooled, rngs=rngs)  # [docs, hidden]
        table = jnp.concatenate([
            bert.apply(variables, separate[f"{name}_input_ids"], separate[f"{name}_attention_mask"], model.pooling,
                       deterministic, method=_pooled, rngs=rngs) for name in ("passage", "sentence")
        ])  # [passages + sentences, hidden]
        valid = span_masks.any(axis=-1)  # [docs, pieces]
        piece_embeddings = jnp.where(valid[..., None], table[separate["index"]], 0.0)  # [docs, pieces, hidden]
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
                                  separate=None if batch.separate is None else jax.tree.map(
                                      jnp.asarray, batch.separate.arrays()), **options)
