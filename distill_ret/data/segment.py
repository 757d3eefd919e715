"""Documents -> passages -> sentences as spans, in characters and in tokens of one document encoding.

Character spans are [start, end) offsets into the document's Python string. Sentences come from pysbd
(`clean=False`, so the text is never altered); each sentence span excludes surrounding whitespace.

Token spans are [start, end) indices into the token sequence of the one (truncated) encoding of the whole
document, as FGD needs them. A token belongs to the span that contains its first character; special tokens
([CLS], [SEP], padding: empty offsets) belong to no span. Truncation: a span whose tokens were partly cut off
is clipped to the tokens that remain; a span with no token left (cut off, or an empty passage) is dropped,
encoded as the empty span (0, 0) and reported by the mask (`end > start`), so span arrays keep one row per
character span.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pysbd

Span = tuple[int, int]


def sentence_spans(text: str, *, start: int = 0, end: int | None = None, language: str = "en") -> list[Span]:
    """Sentence character spans of `text[start:end]`, in `text`'s coordinates, in order, non-overlapping."""
    end = len(text) if end is None else end
    region = text[start:end]
    segmenter = pysbd.Segmenter(language=language, clean=False, char_span=True)
    spans, cursor = [], 0
    for piece in segmenter.segment(region):
        sentence = piece.sent.strip()
        if not sentence:
            continue
        # Locate each sentence after the previous one: pysbd's own spans can jump back on repeated sentences.
        found = region.find(sentence, cursor)
        if found < 0:
            raise ValueError(f"pysbd returned a sentence that is not in the text: {sentence[:60]!r}")
        spans.append((start + found, start + found + len(sentence)))
        cursor = found + len(sentence)
    return spans


def group_sentences(sentences: Sequence[Span], sentences_per_passage: int) -> list[Span]:
    """Passages for a document that has none: consecutive groups of `sentences_per_passage` sentences."""
    if sentences_per_passage < 1:
        raise ValueError(f"sentences_per_passage must be >= 1, got {sentences_per_passage}")
    groups = [sentences[i : i + sentences_per_passage] for i in range(0, len(sentences), sentences_per_passage)]
    return [(group[0][0], group[-1][1]) for group in groups]


def token_spans(char_spans: Sequence[Span], offsets: np.ndarray) -> np.ndarray:
    """[n, 2] token spans of character spans, given a fast tokenizer's offset mapping `[tokens, 2]`.

    Token t is in a span when its first character is; special tokens (empty offsets) are in none. Spans with
    no token (e.g. cut off by truncation) become (0, 0).
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)  # [tokens, 2]
    chars = np.asarray(char_spans, dtype=np.int64).reshape(-1, 2)  # [n, 2]
    real = offsets[:, 1] > offsets[:, 0]  # [tokens]
    inside = (
        real[None, :]
        & (offsets[None, :, 0] >= chars[:, None, 0])
        & (offsets[None, :, 0] < chars[:, None, 1])
    )  # [n, tokens]
    positions = np.arange(offsets.shape[0])
    first = np.where(inside, positions[None, :], offsets.shape[0]).min(axis=1)  # [n]
    last = np.where(inside, positions[None, :], -1).max(axis=1)  # [n]
    found = inside.any(axis=1)  # [n]
    return np.stack([np.where(found, first, 0), np.where(found, last + 1, 0)], axis=1).astype(np.int32)  # [n, 2]


@dataclasses.dataclass(frozen=True)
class SegmentedDocument:
    """One document encoding with its passages and sentences as token spans."""

    input_ids: np.ndarray  # [tokens] int32, truncated to max_length, no padding
    passage_spans: np.ndarray  # [passages, 2] int32 token [start, end); (0, 0) when truncated away
    sentence_spans: np.ndarray  # [sentences, 2] int32 token [start, end); (0, 0) when truncated away
    sentence_passage: np.ndarray  # [sentences] int32, index of the passage each sentence belongs to
    passage_chars: tuple[Span, ...]  # the passages' character spans
    sentence_chars: tuple[Span, ...]  # the sentences' character spans

    @property
    def passage_mask(self) -> np.ndarray:  # [passages] bool, False for passages truncated away
        return self.passage_spans[:, 1] > self.passage_spans[:, 0]

    @property
    def sentence_mask(self) -> np.ndarray:  # [sentences] bool, False for sentences truncated away
        return self.sentence_spans[:, 1] > self.sentence_spans[:, 0]


def segment_document(
    tokenizer,
    text: str,
    passages: Sequence[Span] | None = None,
    *,
    max_length: int,
    sentences_per_passage: int = 4,
    language: str = "en",
) -> SegmentedDocument:
    """Encodes `text` once (with special tokens, truncated to `max_length`) and maps its pieces to tokens.

    `passages` are the document's passage character spans (a long document's own passages:
    `sources.load_long_docs(...)[0].passage_chars(doc_id)`); when None, passages are groups of
    `sentences_per_passage` consecutive sentences of the whole text. Sentences are split inside each passage.
    `tokenizer` is a Hugging Face fast tokenizer (offset mappings).
    """
    if passages is None:
        passages = group_sentences(sentence_spans(text, language=language), sentences_per_passage)
    sentences, owner = [], []
    for index, (start, end) in enumerate(passages):
        for span in sentence_spans(text, start=int(start), end=int(end), language=language):
            sentences.append(span)
            owner.append(index)
    encoding = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True)
    offsets = np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2)  # [tokens, 2]
    return SegmentedDocument(
        input_ids=np.asarray(encoding["input_ids"], dtype=np.int32),
        passage_spans=token_spans(passages, offsets),
        sentence_spans=token_spans(sentences, offsets),
        sentence_passage=np.asarray(owner, dtype=np.int32),
        passage_chars=tuple((int(start), int(end)) for start, end in passages),
        sentence_chars=tuple(sentences),
    )
