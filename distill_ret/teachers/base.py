"""The teacher interface: a frozen ranker that scores a query's candidate passages and ranks them.

Every teacher (cross-encoder, dense bi-encoder, precomputed run file) implements `Teacher.score_batch`; ranking,
reranking of whole runs and fingerprints for caches are shared. Rank lists order candidates by descending score with
ties broken by document id (ascending), the same rule `formats.write_run` applies, so a teacher's rank list and the
run file written from its scores always agree.
"""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from distill_ret.data import formats


@dataclasses.dataclass(frozen=True)
class TeacherQuery:
    """One query and the candidate passages a teacher is asked to score."""

    query_id: str
    text: str
    candidates: tuple[formats.Document, ...]


@dataclasses.dataclass(frozen=True)
class Ranking:
    """A teacher's verdict on one query: scores in candidate (input) order and the rank list derived from them."""

    doc_ids: tuple[str, ...]  # candidate ids, input order
    scores: np.ndarray  # [num_candidates] float64, input order

    @property
    def order(self) -> np.ndarray:
        """[num_candidates] candidate indices, best first (descending score, ties by ascending document id)."""
        return np.asarray(rank_order(self.scores, self.doc_ids), dtype=np.int64)

    def ranked_ids(self) -> list[str]:
        return [self.doc_ids[i] for i in self.order]

    def as_run(self) -> dict[str, float]:
        """document id -> score, best first (a run entry for this query)."""
        return {self.doc_ids[i]: float(self.scores[i]) for i in self.order}


def rank_order(scores: Sequence[float] | np.ndarray, doc_ids: Sequence[str]) -> list[int]:
    """Candidate indices sorted by descending score, ties by ascending document id."""
    if len(scores) != len(doc_ids):
        raise ValueError(f"{len(scores)} scores for {len(doc_ids)} candidates")
    return sorted(range(len(doc_ids)), key=lambda i: (-float(scores[i]), doc_ids[i]))


class Teacher(abc.ABC):
    """A frozen ranker. Subclasses implement `score_batch` and `fingerprint`; nothing here is ever trained."""

    @abc.abstractmethod
    def score_batch(self, queries: Sequence[TeacherQuery]) -> list[np.ndarray]:
        """One array of shape [num_candidates] per query, in candidate order (higher = more relevant)."""

    @abc.abstractmethod
    def fingerprint(self) -> dict[str, str]:
        """What identifies this teacher's scores (kind, weights hash, tokenizer, max length...), for caches."""

    def rank_batch(self, queries: Sequence[TeacherQuery]) -> list[Ranking]:
        scores = self.score_batch(queries)
        if len(scores) != len(queries):
            raise RuntimeError(f"{type(self).__name__} returned {len(scores)} score arrays for {len(queries)} queries")
        rankings = []
        for query, query_scores in zip(queries, scores):
            query_scores = np.asarray(query_scores, dtype=np.float64)
            if query_scores.shape != (len(query.candidates),):
                raise RuntimeError(
                    f"{type(self).__name__} gave scores of shape {query_scores.shape} for query {query.query_id!r} "
                    f"with {len(query.candidates)} candidates"
                )
            rankings.append(Ranking(tuple(doc.doc_id for doc in query.candidates), query_scores))
        return rankings

    def rank(self, query: TeacherQuery) -> Ranking:
        return self.rank_batch([query])[0]


def candidates_from_run(
    run: Mapping[str, Mapping[str, float]],
    queries: Mapping[str, str],
    corpus: Mapping[str, formats.Document],
    depth: int | None = None,
) -> list[TeacherQuery]:
    """The top-`depth` documents of each run query (run order: descending score, ties by id) as teacher queries.

    Raises ValueError naming the first query or document id that `queries` / `corpus` does not know.
    """
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be a positive integer or None, got {depth}")
    requests = []
    for query_id, scores in run.items():
        if query_id not in queries:
            raise ValueError(f"the run ranks query {query_id!r}, which is not among the {len(queries)} queries")
        doc_ids = list(scores)
        top = [doc_ids[i] for i in rank_order([scores[d] for d in doc_ids], doc_ids)[:depth]]
        unknown = [doc_id for doc_id in top if doc_id not in corpus]
        if unknown:
            raise ValueError(f"the run ranks document {unknown[0]!r} for query {query_id!r}; it is not in the corpus")
        requests.append(TeacherQuery(query_id, queries[query_id], tuple(corpus[doc_id] for doc_id in top)))
    return requests


def rerank_run(
    teacher: Teacher,
    run: Mapping[str, Mapping[str, float]],
    queries: Mapping[str, str],
    corpus: Mapping[str, formats.Document],
    depth: int | None = None,
) -> dict[str, dict[str, float]]:
    """The teacher's scores for each run query's top-`depth` candidates: query id -> document id -> score, best first.

    Queries with no candidate stay in the output with no document (they are simply not ranked).
    """
    requests = candidates_from_run(run, queries, corpus, depth)
    non_empty = [request for request in requests if request.candidates]
    rankings = dict(zip((request.query_id for request in non_empty), teacher.rank_batch(non_empty)))
    return {request.query_id: rankings[request.query_id].as_run() if request.query_id in rankings else {}
            for request in requests}
