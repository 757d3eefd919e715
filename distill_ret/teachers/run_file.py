"""A precomputed TREC run as a teacher: scores come from the file, no model runs.

Fallback for candidates the run does not rank for a query: they get the score `(lowest score the run gives that
query) - 1`, so they rank after every candidate the run does rank, and among themselves by document id (the shared
tie rule). A query the run does not rank at all is an error: the teacher has no opinion about it.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence

import numpy as np

from distill_ret.data import formats
from distill_ret.teachers.base import Teacher, TeacherQuery

MISSING_SCORE_GAP = 1.0  # absent candidates score this much below the query's lowest run score


class RunFileTeacher(Teacher):
    """Scores candidates with a fixed run: query id -> document id -> score."""

    def __init__(self, run: Mapping[str, Mapping[str, float]], *, source: str = "<memory>", digest: str | None = None):
        self._run = {qid: dict(docs) for qid, docs in run.items()}
        self._source = source
        self._digest = digest or _run_digest(self._run)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "RunFileTeacher":
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        return cls(formats.read_run(path), source=str(path), digest=digest)

    def fingerprint(self) -> dict[str, str]:
        return {"kind": "run_file", "run_sha256": self._digest}

    def score_batch(self, queries: Sequence[TeacherQuery]) -> list[np.ndarray]:
        return [self._score(query) for query in queries]

    def _score(self, query: TeacherQuery) -> np.ndarray:
        if query.query_id not in self._run or not self._run[query.query_id]:
            raise formats.FormatError(self._source, None,
                                      f"the teacher run ranks no document for query {query.query_id!r}")
        ranked = self._run[query.query_id]
        missing = min(ranked.values()) - MISSING_SCORE_GAP
        # [num_candidates]
        return np.array([ranked.get(doc.doc_id, missing) for doc in query.candidates], dtype=np.float64)


def _run_digest(run: Mapping[str, Mapping[str, float]]) -> str:
    digest = hashlib.sha256()
    for query_id in sorted(run):
        for doc_id in sorted(run[query_id]):
            digest.update(f"{query_id}\t{doc_id}\t{float(run[query_id][doc_id])!r}\n".encode())
    return digest.hexdigest()
