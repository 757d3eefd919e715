"""Teacher scores of long-document pieces for FGD, cached on disk.

A piece is a passage or a sentence of a long document. The teacher scores (query, piece text) pairs; the results are
keyed by (query id, document id, granularity, piece index) and saved as one `.npz` file (no pickles):

  query_ids [n] str, doc_ids [n] str, granularities [n] int8 (index into GRANULARITIES), piece_indices [n] int32,
  scores [n] float32, fingerprint: a JSON string.

Rows are sorted by key, so each (query, document, granularity) owns a contiguous slice. The fingerprint records the
teacher's identity (kind, weights hash, tokenizer hash, max length: `Teacher.fingerprint()`) and a hash of every
request (ids, query text, piece texts). `build_or_load` refuses, with an error naming the file and the differing
fields, to serve a cache whose fingerprint differs from the one its inputs give now. Files are written atomically.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np

from distill_ret.data import formats
from distill_ret.errors import UserError, describe_differences
from distill_ret.teachers.base import Teacher, TeacherQuery

GRANULARITIES = ("passage", "sentence")
FORMAT_VERSION = "piece-scores-v1"
_ARRAYS = ("query_ids", "doc_ids", "granularities", "piece_indices", "scores")


class StalePieceCacheError(UserError, ValueError):
    """A piece-score cache was built from other inputs than the ones it is asked to serve."""


@dataclasses.dataclass(frozen=True)
class PieceRequest:
    """The pieces of one document, at one granularity, to score against one query."""

    query_id: str
    query: str
    doc_id: str
    granularity: str  # one of GRANULARITIES
    pieces: tuple[str, ...]  # piece texts in piece-index order

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")


def document_requests(query_id: str, query: str, doc_id: str, text: str, segmented) -> list[PieceRequest]:
    """The passage and sentence requests of one document segmented by `distill_ret.data.segment.segment_document`.

    Piece i of a granularity is row i of the segmentation's spans (its character span's text), so cached scores
    line up with `passage_spans` / `sentence_spans`; pieces truncated away from the encoding are scored too and
    the FGD loss masks them with `passage_mask` / `sentence_mask`.
    """
    return [
        PieceRequest(query_id, query, doc_id, "passage",
                     tuple(text[start:end] for start, end in segmented.passage_chars)),
        PieceRequest(query_id, query, doc_id, "sentence",
                     tuple(text[start:end] for start, end in segmented.sentence_chars)),
    ]


def fingerprint(teacher: Teacher, requests: Sequence[PieceRequest]) -> dict[str, str]:
    """The identity of a cache's inputs: the teacher's fingerprint and a hash of every request's ids and texts."""
    digest = hashlib.sha256()
    for request in sorted(requests, key=lambda r: (r.query_id, r.doc_id, r.granularity)):
        record = [request.query_id, request.query, request.doc_id, request.granularity, list(request.pieces)]
        digest.update(json.dumps(record, ensure_ascii=False).encode() + b"\n")
    teacher_print = teacher.fingerprint()
    return {**{f"teacher.{key}": str(value) for key, value in sorted(teacher_print.items())},
            "pieces_sha256": digest.hexdigest(), "format": FORMAT_VERSION}


class PieceScores:
    """Scores of pieces: `get(query_id, doc_id, granularity)` -> [num_pieces] float32, in piece-index order."""

    def __init__(self, arrays: Mapping[str, np.ndarray], fingerprint_: Mapping[str, str], *, source: str = "<memory>"):
        self.fingerprint = dict(fingerprint_)
        self._source = source
        query_ids, doc_ids = np.asarray(arrays["query_ids"]), np.asarray(arrays["doc_ids"])
        granularities, piece_indices = np.asarray(arrays["granularities"]), np.asarray(arrays["piece_indices"])
        scores = np.asarray(arrays["scores"], dtype=np.float32)
        sizes = {len(query_ids), len(doc_ids), len(granularities), len(piece_indices), len(scores)}
        if len(sizes) != 1:
            raise formats.FormatError(source, None, f"piece-score arrays have different lengths {sorted(sizes)}")
        order = np.lexsort((piece_indices, granularities, doc_ids, query_ids))
        self._query_ids, self._doc_ids = query_ids[order], doc_ids[order]
        self._granularities, self._piece_indices = granularities[order], piece_indices[order]
        self._scores = scores[order]  # [n]
        self._slices = self._index()

    def _index(self) -> dict[tuple[str, str, str], slice]:
        """(query id, doc id, granularity) -> its rows; checks that piece indices run 0..n-1 with no gap."""
        n = len(self._scores)
        if n == 0:
            return {}
        changes = np.flatnonzero(
            (self._query_ids[1:] != self._query_ids[:-1]) | (self._doc_ids[1:] != self._doc_ids[:-1])
            | (self._granularities[1:] != self._granularities[:-1])
        ) + 1
        starts, ends = np.concatenate([[0], changes]), np.concatenate([changes, [n]])
        slices = {}
        for start, end in zip(starts.tolist(), ends.tolist()):
            granularity = int(self._granularities[start])
            if not 0 <= granularity < len(GRANULARITIES):
                raise formats.FormatError(self._source, None, f"unknown granularity code {granularity}")
            key = (str(self._query_ids[start]), str(self._doc_ids[start]), GRANULARITIES[granularity])
            if not np.array_equal(self._piece_indices[start:end], np.arange(end - start)):
                raise formats.FormatError(
                    self._source, None, f"pieces of {key} are not numbered 0..{end - start - 1} exactly once")
            slices[key] = slice(start, end)
        return slices

    def __len__(self) -> int:
        return len(self._scores)

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self._slices

    def keys(self) -> list[tuple[str, str, str]]:
        return list(self._slices)

    def get(self, query_id: str, doc_id: str, granularity: str) -> np.ndarray:
        """[num_pieces] float32 scores of the document's pieces at this granularity."""
        key = (query_id, doc_id, granularity)
        if key not in self._slices:
            raise KeyError(f"{self._source}: no piece scores for query {query_id!r}, "
                           f"document {doc_id!r}, {granularity}")
        return self._scores[self._slices[key]]

    def score(self, query_id: str, doc_id: str, granularity: str, piece_index: int) -> float:
        return float(self.get(query_id, doc_id, granularity)[piece_index])

    def save(self, path: str | os.PathLike) -> None:
        """Writes the cache atomically as one `.npz` file."""
        arrays = {"query_ids": self._query_ids.astype(str), "doc_ids": self._doc_ids.astype(str),
                  "granularities": self._granularities.astype(np.int8),
                  "piece_indices": self._piece_indices.astype(np.int32), "scores": self._scores}
        with formats.atomic_write(path, "wb") as handle:
            np.savez(handle, fingerprint=np.array(json.dumps(self.fingerprint, sort_keys=True)), **arrays)


def load(path: str | os.PathLike, expected_fingerprint: Mapping[str, str] | None = None) -> PieceScores:
    """Reads a cache; with `expected_fingerprint`, raises StalePieceCacheError unless the cache's matches it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in (*_ARRAYS, "fingerprint") if name not in data.files]
            if missing:
                raise formats.FormatError(path, None, f"not a piece-score cache: missing arrays {missing}")
            arrays = {name: data[name] for name in _ARRAYS}
            stored = json.loads(str(data["fingerprint"]))
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, formats.FormatError):
            raise
        raise formats.FormatError(path, None, f"cannot read the piece-score cache: {error}") from None
    if expected_fingerprint is not None and stored != dict(expected_fingerprint):
        details = describe_differences(stored, dict(expected_fingerprint), "cache")
        raise StalePieceCacheError(
            f"{path}: this piece-score cache was built from other inputs ({details}). "
            "Delete it or choose another cache path to rebuild it."
        )
    return PieceScores(arrays, stored, source=str(path))


def compute(teacher: Teacher, requests: Sequence[PieceRequest]) -> PieceScores:
    """Scores every piece of every request with the teacher (one batched call)."""
    seen = set()
    for request in requests:
        key = (request.query_id, request.doc_id, request.granularity)
        if key in seen:
            raise ValueError(f"duplicate piece request for (query, document, granularity) {key}")
        seen.add(key)
    queries = [
        TeacherQuery(r.query_id, r.query, tuple(formats.Document(f"{r.doc_id}#{i}", "", text)
                                                for i, text in enumerate(r.pieces)))
        for r in requests if r.pieces
    ]
    scored = iter(teacher.score_batch(queries))
    rows = {name: [] for name in _ARRAYS}
    for request in requests:
        if not request.pieces:
            continue
        count = len(request.pieces)
        rows["query_ids"] += [request.query_id] * count
        rows["doc_ids"] += [request.doc_id] * count
        rows["granularities"] += [GRANULARITIES.index(request.granularity)] * count
        rows["piece_indices"] += list(range(count))
        rows["scores"].append(np.asarray(next(scored), dtype=np.float32))
    arrays = {
        "query_ids": np.array(rows["query_ids"], dtype=str), "doc_ids": np.array(rows["doc_ids"], dtype=str),
        "granularities": np.array(rows["granularities"], dtype=np.int8),
        "piece_indices": np.array(rows["piece_indices"], dtype=np.int32),
        "scores": np.concatenate(rows["scores"]) if rows["scores"] else np.zeros([0], np.float32),
    }
    return PieceScores(arrays, fingerprint(teacher, requests))


def build_or_load(path: str | os.PathLike, teacher: Teacher, requests: Sequence[PieceRequest]) -> PieceScores:
    """Loads the cache at `path` if it was built from exactly these inputs (else refuses);
    builds and saves it if absent."""
    expected = fingerprint(teacher, requests)
    if os.path.exists(path):
        return load(path, expected)
    scores = compute(teacher, requests)
    scores.save(path)
    return scores
