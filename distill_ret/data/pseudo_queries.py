"""Pseudo-queries drawn from a corpus: one sentence of a passage's text stands for a query whose positive is that
passage. DGR's candidates mode uses them to have a teacher rank the student's candidates for queries nobody
judged (the teacher's ranking is the label), beside the judged training queries.

A pseudo-query of passage p is a sentence of p's text (never its title) of `min_words` to `max_words` words that
starts at or after word `skip_words` of the text, so that a student which read only the start of p (its indexing
input is cut) has not seen it. Passages are drawn without replacement in a seeded order of the sorted passage ids;
a passage without such a sentence is passed over; the sentence is drawn uniformly among its eligible ones.
"""
from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from distill_ret.data import formats, segment

ID_PREFIX = "pseudo-"


@dataclasses.dataclass(frozen=True)
class PseudoQuery:
    """One pseudo-query: its id (`pseudo-<passage id>`), its text and the passage it was drawn from."""

    query_id: str
    text: str
    doc_id: str


def eligible_sentences(text: str, min_words: int, max_words: int, skip_words: int) -> list[str]:
    """The sentences of `text` with min_words..max_words words that start at or after word `skip_words`."""
    word_starts = [match.start() for match in re.finditer(r"\S+", text)]  # the words text.split() gives
    found = []
    for start, end in segment.sentence_spans(text):
        words = text[start:end].split()
        words_before = bisect.bisect_left(word_starts, start)  # == len(text[:start].split())
        if words_before >= skip_words and min_words <= len(words) <= max_words:
            found.append(" ".join(words))
    return found


def draw(corpus: Mapping[str, formats.Document], count: int, *, seed: int, min_words: int, max_words: int,
         skip_words: int) -> list[PseudoQuery]:
    """Up to `count` pseudo-queries, one per drawn passage, in draw order (fewer when too few passages qualify)."""
    if count < 0 or min_words < 1 or max_words < min_words or skip_words < 0:
        raise ValueError(f"count={count}, min_words={min_words}, max_words={max_words}, skip_words={skip_words}: "
                         "need count >= 0, 1 <= min_words <= max_words and skip_words >= 0")
    rng = np.random.default_rng(seed)
    doc_ids = sorted(corpus)
    drawn = []
    for index in rng.permutation(len(doc_ids)):
        if len(drawn) == count:
            break
        doc_id = doc_ids[index]
        sentences = eligible_sentences(corpus[doc_id].text, min_words, max_words, skip_words)
        if sentences:
            drawn.append(PseudoQuery(ID_PREFIX + doc_id, sentences[rng.integers(len(sentences))], doc_id))
    return drawn
