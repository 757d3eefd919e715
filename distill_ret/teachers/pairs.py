"""(query, passage) pairs as cross-encoder inputs: `[CLS] query [SEP] title text [SEP]` with token types 0 / 1.

Pairs are tokenised once (variable length, truncated to `max_length`, longest side first); `pad_pairs` pads a
batch of them to one bucket length (batches are planned by `distill_ret.index.plan_batches`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from distill_ret.bm25 import document_text
from distill_ret.data import formats


@dataclasses.dataclass(frozen=True)
class EncodedPair:
    """One tokenised pair, unpadded."""

    input_ids: np.ndarray  # [length] int32
    token_type_ids: np.ndarray  # [length] int32: 0 for [CLS] query [SEP], 1 for passage [SEP]


def passage_text(document: formats.Document) -> str:
    """The passage side of a pair: title then text (the same text BM25 indexes)."""
    return document_text(document)


def encode_pairs(tokenizer, queries: Sequence[str], passages: Sequence[str], max_length: int) -> list[EncodedPair]:
    """Tokenises (query, passage) pairs with a Hugging Face tokenizer; truncates the longer side first."""
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries for {len(passages)} passages")
    if not queries:
        return []
    encoded = tokenizer(
        list(queries), list(passages), truncation="longest_first", max_length=max_length, padding=False,
        return_token_type_ids=True, return_attention_mask=False,
    )
    return [
        EncodedPair(np.asarray(ids, dtype=np.int32), np.asarray(types, dtype=np.int32))
        for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"])
    ]


def pad_pairs(pairs: Sequence[EncodedPair], length: int, rows: int, pad_token_id: int = 0) -> dict[str, np.ndarray]:
    """Pads pairs to [rows, length] arrays (input_ids, attention_mask, token_type_ids); extra rows are all padding."""
    if len(pairs) > rows:
        raise ValueError(f"{len(pairs)} pairs do not fit in {rows} rows")
    input_ids = np.full((rows, length), pad_token_id, dtype=np.int32)  # [rows, length]
    attention_mask = np.zeros((rows, length), dtype=np.int32)  # [rows, length]
    token_type_ids = np.zeros((rows, length), dtype=np.int32)  # [rows, length]
    for row, pair in enumerate(pairs):
        size = len(pair.input_ids)
        if size > length:
            raise ValueError(f"pair {row} has {size} tokens, more than the padded length {length}")
        input_ids[row, :size] = pair.input_ids
        attention_mask[row, :size] = 1
        token_type_ids[row, :size] = pair.token_type_ids
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
