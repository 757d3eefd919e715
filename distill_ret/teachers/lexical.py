"""BM25 as a teacher: every candidate text scored with a corpus's BM25 statistics, no model runs.

`Bm25Teacher` scores whatever it is handed (whole documents, passages or sentences of one) as `bm25.Bm25Scorer`
does: the score the text would get were it a document of the corpus whose statistics it holds. It reads a document
whole (title and text, no truncation), which makes it the one teacher that sees a long document's every passage.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from distill_ret import bm25
from distill_ret.data import formats
from distill_ret.teachers.base import Teacher, TeacherQuery


class Bm25Teacher(Teacher):
    """Scores (query, candidate) pairs by BM25 with fixed corpus statistics."""

    def __init__(self, scorer: bm25.Bm25Scorer):
        self._scorer = scorer
        self._digest = scorer.digest()

    @classmethod
    def from_beir(cls, directory: str | os.PathLike, params: bm25.Bm25Params = bm25.Bm25Params()) -> "Bm25Teacher":
        """Statistics of the corpus of a BEIR-layout directory (its corpus.jsonl)."""
        corpus = formats.read_corpus(os.path.join(directory, "corpus.jsonl"))
        if not corpus:
            raise formats.FormatError(os.path.join(directory, "corpus.jsonl"), None, "no documents to take "
                                      "BM25 statistics from")
        return cls(bm25.Bm25Scorer.build(corpus, params))

    def fingerprint(self) -> dict[str, str]:
        return {"kind": "bm25", "statistics_sha256": self._digest}

    def score_batch(self, queries: Sequence[TeacherQuery]) -> list[np.ndarray]:
        # one [num_candidates] array per query
        return [self._scorer.score(query.text, [bm25.document_text(doc) for doc in query.candidates])
                for query in queries]
