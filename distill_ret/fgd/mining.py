"""Hard negatives for FGD: documents from the current student over the whole corpus, then passages and sentences
chosen hierarchically by the student's span scores (eq. 14-15), saved as a fingerprinted file.

Documents (N^0 minus the positives): the student's exact top-k over every document (`index.top_k_search`), minus
every document the query has a judgement with gain > 0 for, best first. Passages (N^1): among the passages of the
query's negative documents, the ones the student scores highest, s(q, x) = <Enc(q), Enc(x|d)> with the training
representation (`fgd.spans`). Sentences (N^2): among the sentences of those negative passages only, the highest
scored. Pieces that truncation removed from a document's encoding are never chosen. Like the documents, the
candidate pieces are scored on a matrix split over every device of the mesh (`index.ShardedCorpus`), never a
replicated host product.

File (`write_negatives` / `read_negatives`): JSON lines; line 1 is {"format", "fingerprint"}, then one line per
query {"query_id", "documents": [doc ids], "passages": [[doc id, passage index]], "sentences": [[doc id, sentence
index]]}. The fingerprint names the student's weights, the data and every mining option; a file made from other
inputs is refused (StaleNegativesError naming the file and the differing fields), never overwritten. The file is
written to a temporary name and renamed.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import tqdm

from distill_ret import index
from distill_ret.data import formats
from distill_ret.data.segment import SegmentedDocument
from distill_ret.errors import UserError, describe_differences
from distill_ret.fgd import spans
from distill_ret.models import heads

FORMAT_VERSION = "fgd-negatives-v1"
Piece = tuple[str, int]  # (document id, piece index in its segmentation)


class StaleNegativesError(UserError, ValueError):
    """A negatives file was mined from other inputs (student, data or options) than the ones it is asked to serve."""


@dataclasses.dataclass(frozen=True)
class QueryNegatives:
    """The hard negatives of one query at every granularity."""

    documents: tuple[str, ...]
    passages: tuple[Piece, ...] = ()
    sentences: tuple[Piece, ...] = ()


@dataclasses.dataclass(frozen=True)
class DocumentPieces:
    """A document's embedding and its piece embeddings from the student (document tower, training representation)."""

    document: np.ndarray  # [hidden] float32: the document's own embedding (what single-vector retrieval uses)
    passages: np.ndarray  # [passages, hidden] float32
    passage_valid: np.ndarray  # [passages] bool: the passage kept tokens after truncation
    sentences: np.ndarray  # [sentences, hidden] float32
    sentence_valid: np.ndarray  # [sentences] bool
    sentence_passage: np.ndarray  # [sentences] int32: the passage each sentence belongs to


def relevant(judged: Mapping[str, int]) -> set[str]:
    """Documents judged relevant (gain > 0): never a negative."""
    return {doc_id for doc_id, gain in judged.items() if gain > 0}


def document_negatives(
    query_ids: Sequence[str],
    query_embeddings: np.ndarray,
    doc_ids: Sequence[str],
    doc_embeddings: np.ndarray,
    qrels: Mapping[str, Mapping[str, int]],
    num_negatives: int,
    **search_options,
) -> dict[str, list[str]]:
    """query id -> its `num_negatives` best-scored documents that are not judged relevant, best first.

    query_embeddings [queries, hidden], doc_embeddings [docs, hidden]; the search is exact over every document.
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    most_relevant = max((len(relevant(qrels.get(qid, {}))) for qid in query_ids), default=0)
    _, indices = index.top_k_search(query_embeddings, doc_embeddings, num_negatives + most_relevant,
                                    **search_options)  # [queries, k]
    negatives = {}
    for qid, row in zip(query_ids, indices):
        excluded = relevant(qrels.get(qid, {}))
        negatives[qid] = [doc_ids[i] for i in row if doc_ids[i] not in excluded][:num_negatives]
    return negatives


def _top(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` largest scores, best first; ties keep their order."""
    return np.argsort(-scores, kind="stable")[:count]


def _score_candidates(query_embeddings: np.ndarray, candidates: Sequence[Sequence[Piece]],
                      embeddings: Mapping[Piece, np.ndarray], mesh) -> list[np.ndarray]:
    """Each query's candidate pieces -> their student scores <q, piece>, computed over a sharded matrix of every
    candidate piece (`index.ShardedCorpus.score`). query_embeddings [queries, hidden]."""
    rows = {piece: row for row, piece in enumerate(dict.fromkeys(p for pieces in candidates for p in pieces))}
    if not rows:
        return [np.zeros(0, np.float32) for _ in candidates]
    matrix = np.stack([embeddings[piece] for piece in rows])  # [pieces, hidden]
    table = np.full((len(candidates), max(len(pieces) for pieces in candidates)), -1, np.int32)  # [queries, c]
    for query, pieces in enumerate(candidates):
        table[query, : len(pieces)] = [rows[piece] for piece in pieces]
    scores = index.ShardedCorpus(matrix, mesh=mesh).score(query_embeddings, table)  # [queries, c]
    return [scores[query, : len(pieces)] for query, pieces in enumerate(candidates)]


def _passage_candidates(negative_documents: Sequence[str], pieces: Mapping[str, DocumentPieces]) -> list[Piece]:
    """Eq. 14's pool: every passage of the negative documents that kept tokens, in document order."""
    return [(doc_id, int(passage)) for doc_id in negative_documents
            for passage in np.flatnonzero(pieces[doc_id].passage_valid)]


def _sentence_candidates(chosen_passages: Sequence[Piece], pieces: Mapping[str, DocumentPieces]) -> list[Piece]:
    """Eq. 15's pool: every sentence (that kept tokens) of the chosen negative passages, in document order."""
    chosen = set(chosen_passages)
    return [(doc_id, int(sentence)) for doc_id in dict.fromkeys(doc_id for doc_id, _ in chosen_passages)
            for sentence in np.flatnonzero(pieces[doc_id].sentence_valid)
            if (doc_id, int(pieces[doc_id].sentence_passage[sentence])) in chosen]


def piece_negatives(
    query_embedding: np.ndarray,
    negative_documents: Sequence[str],
    pieces: Mapping[str, DocumentPieces],
    num_passages: int,
    num_sentences: int,
    *,
    mesh=None,
) -> tuple[list[Piece], list[Piece]]:
    """Eq. 14-15 for one query: (passages of the negative documents, sentences of those negative passages), each
    the ones the student scores highest, best first. query_embedding [hidden]."""
    negatives = hierarchical_negatives(["query"], np.asarray(query_embedding)[None], {"query": negative_documents},
                                       pieces, num_passages, num_sentences, mesh=mesh)["query"]
    return list(negatives.passages), list(negatives.sentences)


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple)


def document_piece_embeddings(
    model: heads.BiEncoder,
    params: Any,
    documents: Mapping[str, SegmentedDocument],
    *,
    length: int,
    representation: str = "global",
    batch_size: int = 16,
    show_progress: bool = False,
) -> dict[str, DocumentPieces]:
    """Each document's embedding and every passage and sentence embedding (one forward pass per batch of documents).

    Piece counts are padded to multiples of 8, so few shapes are compiled; `show_progress` draws a bar over batches."""
    encode = jax.jit(functools.partial(spans.granularity_embeddings, model, representation=representation))
    doc_ids = list(documents)
    piece_lengths = spans.piece_lengths(list(documents.values()), length) if representation == "separate" else None
    result = {}
    starts = range(0, len(doc_ids), batch_size)
    for start in tqdm.tqdm(starts, desc="documents", unit="batch", leave=False, disable=not show_progress):
        names = doc_ids[start:start + batch_size]
        batch_docs = [documents[name] for name in names]
        while len(batch_docs) < batch_size:  # one batch shape
            batch_docs.append(batch_docs[0])
        num_passages = _round_up(max(len(d.passage_spans) for d in batch_docs), 8)
        num_sentences = _round_up(max(len(d.sentence_spans) for d in batch_docs), 8)
        shape = None if piece_lengths is None else spans.PieceShape(  # the batch's valid pieces, padded to 64s
            _round_up(sum(int(d.passage_mask.sum()) for d in batch_docs), 64), piece_lengths[0],
            _round_up(sum(int(d.sentence_mask.sum()) for d in batch_docs), 64), piece_lengths[1])
        batch = spans.batch_documents(batch_docs, length=length, num_passages=num_passages,
                                      num_sentences=num_sentences, separate=shape)
        document_embeddings, embeddings = encode(
            params, batch.input_ids, batch.attention_mask, batch.span_mask,
            separate=None if batch.separate is None else batch.separate.arrays())  # [docs, pieces, hidden]
        embeddings = np.asarray(embeddings, np.float32)  # [docs, pieces, hidden]
        document_embeddings = np.asarray(document_embeddings, np.float32)  # [docs, hidden]
        for row, name in enumerate(names):
            document = documents[name]
            passages, sentences = len(document.passage_spans), len(document.sentence_spans)
            result[name] = DocumentPieces(
                document=document_embeddings[row], passages=embeddings[row, :passages],
                passage_valid=document.passage_mask,
                sentences=embeddings[row, num_passages:num_passages + sentences],
                sentence_valid=document.sentence_mask, sentence_passage=document.sentence_passage)
    return result


def hierarchical_negatives(
    query_ids: Sequence[str],
    query_embeddings: np.ndarray,
    document_negatives_: Mapping[str, Sequence[str]],
    pieces: Mapping[str, DocumentPieces],
    num_passages: int,
    num_sentences: int,
    *,
    mesh=None,
) -> dict[str, QueryNegatives]:
    """Every query's documents, passages and sentences (eq. 14-15): among the passages of its negative documents
    the `num_passages` the student scores highest, then among the sentences of those passages the `num_sentences`
    highest, best first (ties keep document order). query_embeddings [queries, hidden]; the candidate pieces are
    scored over sharded piece matrices, split over every device of `mesh` (default: all devices)."""
    query_embeddings = np.asarray(query_embeddings, np.float32)
    passage_embeddings = {(d, i): pieces[d].passages[i] for d in pieces for i in range(len(pieces[d].passages))}
    sentence_embeddings = {(d, i): pieces[d].sentences[i] for d in pieces for i in range(len(pieces[d].sentences))}
    documents = [tuple(document_negatives_[qid]) for qid in query_ids]
    passage_pools = [_passage_candidates(docs, pieces) for docs in documents]
    passage_scores = _score_candidates(query_embeddings, passage_pools, passage_embeddings, mesh)
    chosen_passages = [[pool[i] for i in _top(scores, num_passages)]
                       for pool, scores in zip(passage_pools, passage_scores)]
    sentence_pools = [_sentence_candidates(chosen, pieces) for chosen in chosen_passages]
    sentence_scores = _score_candidates(query_embeddings, sentence_pools, sentence_embeddings, mesh)
    return {qid: QueryNegatives(docs, tuple(passages), tuple(pool[i] for i in _top(scores, num_sentences)))
            for qid, docs, passages, pool, scores in zip(query_ids, documents, chosen_passages, sentence_pools,
                                                          sentence_scores)}


def data_digest(documents: Mapping[str, str], queries: Mapping[str, str],
                qrels: Mapping[str, Mapping[str, int]]) -> str:
    """sha256 of the corpus texts, the queries and the judgements (in a canonical order)."""
    digest = hashlib.sha256()
    for name, part in (("documents", documents), ("queries", queries), ("qrels", qrels)):
        digest.update(json.dumps([name, sorted(part.items())], ensure_ascii=False, sort_keys=True).encode() + b"\n")
    return digest.hexdigest()


def fingerprint(student: str, data: str, options: Mapping[str, Any]) -> dict[str, str]:
    """What a negatives file must match: the student's identity, the data digest and the mining options."""
    return {"student": student, "data": data, "format": FORMAT_VERSION,
            **{f"option.{key}": str(value) for key, value in sorted(options.items())}}


def write_negatives(path: str | os.PathLike, negatives: Mapping[str, QueryNegatives],
                    fingerprint_: Mapping[str, str]) -> None:
    """The file described in the module docstring, written to a temporary name and renamed."""
    with formats.atomic_write(path) as handle:
        handle.write(json.dumps({"format": FORMAT_VERSION, "fingerprint": dict(fingerprint_)}, sort_keys=True) + "\n")
        for qid, entry in negatives.items():
            handle.write(json.dumps({"query_id": qid, "documents": list(entry.documents),
                                     "passages": [list(p) for p in entry.passages],
                                     "sentences": [list(s) for s in entry.sentences]}, ensure_ascii=False) + "\n")


def read_fingerprint(path: str | os.PathLike) -> dict[str, str]:
    """The fingerprint on a negatives file's first line (FormatError naming the file when it is not one)."""
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    try:
        header = json.loads(first)
        if header.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {header.get('format')!r}, expected {FORMAT_VERSION!r}")
        return {str(k): str(v) for k, v in header["fingerprint"].items()}
    except (ValueError, KeyError, AttributeError, TypeError) as error:
        raise formats.FormatError(path, 1, f"not an FGD negatives file ({error})") from None


def check_fingerprint(path: str | os.PathLike, expected: Mapping[str, str]) -> None:
    """StaleNegativesError unless the file at `path` was mined from exactly the `expected` inputs."""
    stored = read_fingerprint(path)
    if stored != dict(expected):
        details = describe_differences(stored, dict(expected), "file")
        raise StaleNegativesError(f"{path}: these negatives were mined from other inputs ({details}); delete the "
                                  "file or choose another output to mine again")


def read_negatives(path: str | os.PathLike,
                   expected_fingerprint: Mapping[str, str] | None = None) -> dict[str, QueryNegatives]:
    """query id -> QueryNegatives from a file; refuses a stale one when `expected_fingerprint` is given."""
    if expected_fingerprint is None:
        read_fingerprint(path)
    else:
        check_fingerprint(path, expected_fingerprint)
    negatives = {}
    with open(path, encoding="utf-8") as handle:
        next(handle)
        for line_number, line in enumerate(handle, start=2):
            try:
                record = json.loads(line)
                entry = QueryNegatives(tuple(str(d) for d in record["documents"]),
                                       tuple((str(d), int(i)) for d, i in record["passages"]),
                                       tuple((str(d), int(i)) for d, i in record["sentences"]))
                negatives[str(record["query_id"])] = entry
            except (ValueError, KeyError, TypeError) as error:
                raise formats.FormatError(path, line_number, f"not a negatives record ({error})") from None
    return negatives
