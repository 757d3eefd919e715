"""(query, passage) pairs as cross-encoder inputs: `[CLS] query [SEP] title text [SEP]` with token types 0 / 1.

Pairs are tokenised once (variable length, truncated to `max_length`, longest side first) into encoding-engine
examples ({"input_ids", "token_type_ids"}: [length] int32 each); `pad_pairs` pads a group of them to one length
(the engine plans and pads its own batches, `distill_ret.index.EncodingEngine`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distill_ret import index
from distill_ret.bm25 import document_text
from distill_ret.data import formats

FEATURES = ("input_ids", "token_type_ids")  # token types: 0 for [CLS] query [SEP], 1 for passage [SEP]


def passage_text(document: formats.Document) -> str:
    """The passage side of a pair: title then text (the same text BM25 indexes)."""
    return document_text(document)


def encode_pairs(tokenizer, queries: Sequence[str], passages: Sequence[str], max_length: int) -> list[index.Example]:
    """Tokenises (query, passage) pairs with a Hugging Face tokenizer; truncates the longer side first."""
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries for {len(passages)} passages")
    if not queries:
        return []
    encoded = tokenizer(
        list(queries), list(passages), truncation="longest_first", max_length=max_length, padding=False,
        return_token_type_ids=True, return_attention_mask=False,
    )
    return [{"input_ids": np.asarray(ids, np.int32), "token_type_ids": np.asarray(types, np.int32)}
            for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"])]


def pad_pairs(pairs: Sequence[index.Example], length: int, rows: int, pad_token_id: int = 0) -> dict[str, np.ndarray]:
    """Pads pairs to [rows, length] arrays (input_ids, attention_mask, token_type_ids); extra rows are all padding."""
    return index.pad_examples(pairs, FEATURES, length, rows, pad_token_id)
