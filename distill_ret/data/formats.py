"""Retrieval file formats: BEIR layout, MS MARCO TSV, TREC qrels and TREC run files.

Readers validate as they go and raise `FormatError` naming the file and the 1-based line of the first
problem (malformed rows, duplicate ids, unknown query or document ids, non-UTF-8 bytes, empty corpora,
unreadable files, corrupt gzip data), and no other exception whatever the bytes. Ids hold no whitespace;
integers are ASCII and fit in 64 bits; a UTF-8 byte-order mark at the start of a file is skipped.
Every writer writes through `atomic_write`, so an output file is either complete or absent (or, when it
existed before, unchanged). Files whose name ends in `.gz` are read through gzip transparently.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import math
import os
import pathlib
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping

from distill_ret.errors import UserError

QRELS_HEADER = ("query-id", "corpus-id", "score")
UTF8_BOM = b"\xef\xbb\xbf"
INT64_RANGE = (-(2**63), 2**63 - 1)
_INTEGER = re.compile(r"[+-]?[0-9]+")


class FormatError(UserError, ValueError):
    """A data file is malformed; the message names the file and, when known, the 1-based line number."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        location = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{location}: {message}")


@dataclasses.dataclass(frozen=True)
class Document:
    """One retrievable unit (a passage or a document)."""

    doc_id: str
    title: str
    text: str


@dataclasses.dataclass(frozen=True)
class BeirDataset:
    """A BEIR-layout data set; `qrels` maps split -> query id -> document id -> gain."""

    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, dict[str, int]]]


# ----------------------------------------------------------------------------------------------- writing


def current_umask() -> int:
    """The process umask, read without changing it (Linux reports it in /proc); falls back to set-and-restore."""
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def output_mode(*, directory: bool = False) -> int:
    """The permissions a file (0o666) or directory (0o777) created by an ordinary tool gets under the umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Yields a temporary file beside `path`; renames it onto `path` on success, removes it on error.

    Text modes write UTF-8 with "\\n" line endings. Missing parent directories are created. The file gets the
    permissions the umask gives new files (mkstemp alone would make it private).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', got {mode!r}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": "\n"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), output_mode())
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields an empty staging directory beside `path`; on success it becomes `path`, on error it is removed.

    `path` must not exist (FileExistsError otherwise): nothing already there is replaced. The directory gets the
    permissions the umask gives new directories (mkdtemp alone would make it private).
    """
    path = pathlib.Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield staging
        os.chmod(staging, output_mode(directory=True))
        if path.exists():
            raise FileExistsError(f"{path} appeared while it was being written")
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _check_field(value: str, what: str, *, allow_tab: bool = False) -> str:
    """Rejects values that would break a line-oriented format (newlines; tabs where columns are tab-separated)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}: {value!r}")
    forbidden = ("\n", "\r") if allow_tab else ("\n", "\r", "\t")
    if any(char in value for char in forbidden):
        raise ValueError(f"{what} {value!r} contains a tab or newline and cannot be written")
    return value


def _check_id(value: str, what: str) -> str:
    _check_field(value, what)
    if not value or value != value.strip() or " " in value:
        raise ValueError(f"{what} {value!r} must be non-empty and contain no whitespace")
    return value


def write_corpus(corpus: Mapping[str, Document], path: str | os.PathLike) -> None:
    """Writes BEIR `corpus.jsonl` (`_id`, `title`, `text`), one document per line, in mapping order."""
    with atomic_write(path) as handle:
        for doc_id, doc in corpus.items():
            if doc_id != doc.doc_id:
                raise ValueError(f"corpus key {doc_id!r} differs from its document's doc_id {doc.doc_id!r}")
            _check_id(doc_id, "document id")
            record = {"_id": doc.doc_id, "title": doc.title, "text": doc.text}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_queries(queries: Mapping[str, str], path: str | os.PathLike) -> None:
    """Writes BEIR `queries.jsonl` (`_id`, `text`), one query per line, in mapping order."""
    with atomic_write(path) as handle:
        for query_id, text in queries.items():
            _check_id(query_id, "query id")
            if not isinstance(text, str):
                raise ValueError(f"query {query_id!r} text must be a string, got {type(text).__name__}")
            handle.write(json.dumps({"_id": query_id, "text": text}, ensure_ascii=False) + "\n")


def write_qrels(qrels: Mapping[str, Mapping[str, int]], path: str | os.PathLike) -> None:
    """Writes a BEIR qrels TSV with its `query-id corpus-id score` header."""
    with atomic_write(path) as handle:
        handle.write("\t".join(QRELS_HEADER) + "\n")
        for query_id, judged in qrels.items():
            _check_id(query_id, "query id")
            for doc_id, gain in judged.items():
                _check_id(doc_id, "document id")
                if isinstance(gain, bool) or not isinstance(gain, int):
                    raise ValueError(f"gain of ({query_id!r}, {doc_id!r}) must be an int, got {gain!r}")
                handle.write(f"{query_id}\t{doc_id}\t{gain}\n")


def write_beir(dataset: BeirDataset, directory: str | os.PathLike) -> None:
    """Writes `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv` under `directory`."""
    directory = pathlib.Path(directory)
    write_corpus(dataset.corpus, directory / "corpus.jsonl")
    write_queries(dataset.queries, directory / "queries.jsonl")
    for split, qrels in dataset.qrels.items():
        _check_id(split, "split name")
        write_qrels(qrels, directory / "qrels" / f"{split}.tsv")


def _format_score(score: float) -> str:
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"run scores must be finite, got {score}")
    return repr(score)


def write_run(
    run: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    *,
    tag: str = "distill_ret",
    depth: int | None = None,
) -> None:
    """Writes a TREC run (`qid Q0 docid rank score tag`); per query, rank 1 is the highest score.

    Ties are broken by document id (ascending), so the output is deterministic. `depth` keeps the top
    `depth` documents of each query. Queries appear in mapping order.
    """
    _check_id(tag, "run tag")
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be a positive integer or None, got {depth}")
    with atomic_write(path) as handle:
        for query_id, scores in run.items():
            _check_id(query_id, "query id")
            ranked = sorted(scores.items(), key=lambda item: (-float(item[1]), item[0]))
            for rank, (doc_id, score) in enumerate(ranked[:depth], start=1):
                _check_id(doc_id, "document id")
                handle.write(f"{query_id} Q0 {doc_id} {rank} {_format_score(score)} {tag}\n")


# ----------------------------------------------------------------------------------------------- reading


def _lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, decoded line without its line ending); splits on "\\n" only.

    A UTF-8 byte-order mark at the start of the file is skipped. Unreadable files and corrupt or truncated gzip
    data are reported as FormatError.
    """
    path = pathlib.Path(path)
    number = 0
    try:
        if not path.is_file():
            raise FormatError(path, None, "file not found" if not path.exists() else "not a regular file")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = (raw.removeprefix(UTF8_BOM) if number == 1 else raw).decode("utf-8")
                except UnicodeDecodeError as error:
                    raise FormatError(path, number, f"invalid UTF-8 at byte {error.start} of the line") from None
                yield number, line.removesuffix("\n").removesuffix("\r")
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise FormatError(path, None, f"corrupt or truncated gzip data after line {number}: {error}") from None
    except OSError as error:
        raise FormatError(path, None, f"cannot read the file: {error.strerror or error}") from None


def _json_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yields (line, object) for each non-blank line of a JSON-lines file."""
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise FormatError(path, number, f"malformed JSON: {error.msg} at column {error.colno}") from None
        except ValueError as error:  # a number of more digits than Python converts
            raise FormatError(path, number, f"malformed JSON: {str(error).split(':')[0]}") from None
        except RecursionError:
            raise FormatError(path, number, "malformed JSON: arrays or objects nested too deeply") from None
        if not isinstance(record, dict):
            raise FormatError(path, number, f"expected a JSON object, got {type(record).__name__}")
        yield number, record


def _id_field(path, number: int, record: dict, key: str = "_id") -> str:
    if key not in record:
        raise FormatError(path, number, f"missing {key!r}")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FormatError(path, number, f"{key!r} must be a string or integer, got {value!r}")
    return _valid_id(path, number, _unicode_text(path, number, key, str(value)), repr(key))


def _valid_id(path, number: int, value: str, what: str) -> str:
    """An id is non-empty, has no whitespace and no byte-order mark (U+FEFF, left inside by concatenated files)."""
    if not value or any(char.isspace() for char in value):
        raise FormatError(path, number, f"{what} {value!r} must be non-empty and contain no whitespace")
    if "\ufeff" in value:
        raise FormatError(path, number, f"{what} {value!r} holds a byte-order mark (U+FEFF): concatenated files?")
    return value


def _unicode_text(path, number: int, key: str, value: str) -> str:
    """`value`, unless a JSON escape left an unpaired surrogate in it (not text: it cannot be encoded)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        surrogate = ord(value[error.start])
        raise FormatError(path, number, f"{key!r} holds an unpaired surrogate escape \\u{surrogate:04x}") from None
    return value


def _text_field(path, number: int, record: dict, key: str, *, required: bool) -> str:
    if key not in record:
        if required:
            raise FormatError(path, number, f"missing {key!r}")
        return ""
    value = record[key]
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise FormatError(path, number, f"{key!r} must be a string, got {type(value).__name__}")
    return _unicode_text(path, number, key, value)


class _UniqueIds:
    """Remembers the line each id was first seen on and reports duplicates."""

    def __init__(self, path, what: str):
        self._path, self._what, self._first_line = path, what, {}

    def add(self, key, number: int) -> None:
        first = self._first_line.setdefault(key, number)
        if first != number:
            raise FormatError(self._path, number, f"duplicate {self._what} {key!r} (first on line {first})")


def iter_corpus(path: str | os.PathLike) -> Iterator[Document]:
    """Streams BEIR `corpus.jsonl` documents in file order, validating each line (see `read_corpus`)."""
    seen = _UniqueIds(path, "document id")
    count = 0
    for number, record in _json_records(path):
        doc_id = _id_field(path, number, record)
        seen.add(doc_id, number)
        title = _text_field(path, number, record, "title", required=False)
        text = _text_field(path, number, record, "text", required=True)
        count += 1
        yield Document(doc_id, title, text)
    if count == 0:
        raise FormatError(path, None, "empty corpus: no documents")


def read_corpus(path: str | os.PathLike) -> dict[str, Document]:
    """Reads BEIR `corpus.jsonl` (`_id`, optional `title`, `text`) keeping file order."""
    return {doc.doc_id: doc for doc in iter_corpus(path)}


def read_queries(path: str | os.PathLike) -> dict[str, str]:
    """Reads BEIR `queries.jsonl` (`_id`, `text`) keeping file order; extra keys are ignored."""
    seen = _UniqueIds(path, "query id")
    queries = {}
    for number, record in _json_records(path):
        query_id = _id_field(path, number, record)
        seen.add(query_id, number)
        queries[query_id] = _text_field(path, number, record, "text", required=True)
    if not queries:
        raise FormatError(path, None, "no queries")
    return queries


def _check_known(path, number: int, query_id: str, doc_id: str, queries, corpus) -> None:
    if queries is not None and query_id not in queries:
        raise FormatError(path, number, f"unknown query id {query_id!r}")
    if corpus is not None and doc_id not in corpus:
        raise FormatError(path, number, f"unknown document id {doc_id!r}")


def _parse_int(path, number: int, value: str, what: str) -> int:
    """An ASCII decimal integer (optional sign) that fits in 64 bits, as trec_eval and the TFDS builders need."""
    if len(value) <= 18 and value.isascii() and value.isdigit():  # the common case, checked fast
        return int(value)
    if not _INTEGER.fullmatch(value):
        raise FormatError(path, number, f"{what} must be an integer, got {value[:40]!r}")
    parsed = int(value) if len(value) <= 20 else None
    if parsed is None or not INT64_RANGE[0] <= parsed <= INT64_RANGE[1]:
        raise FormatError(path, number, f"{what} {value[:40]!r} is out of the 64-bit integer range")
    return parsed


def _parse_score(path, number: int, value: str) -> float:
    """A finite ASCII decimal number, as trec_eval reads it (Python's float also takes `1_0` and non-ASCII digits)."""
    try:
        parsed = float(value)
    except ValueError:
        raise FormatError(path, number, f"score must be a number, got {value[:40]!r}") from None
    if not math.isfinite(parsed):
        raise FormatError(path, number, f"score must be finite, got {value[:40]!r}")
    if not value.isascii() or "_" in value:
        raise FormatError(path, number, f"score must be a decimal number, got {value[:40]!r}")
    return parsed


def _plain_id(path, number: int, value: str, what: str) -> str:
    """A column holding an id: surrounding whitespace is dropped, then it must be a valid id (see `_valid_id`)."""
    return _valid_id(path, number, value.strip(), what)


def _add_pair(path, number, table, seen, query_id, doc_id, value, queries, corpus) -> None:
    """table[query_id][doc_id] = value for a (query, document) pair of a qrels or run file: once per file, and
    only for known ids when `queries` / `corpus` are given."""
    seen.add((query_id, doc_id), number)
    _check_known(path, number, query_id, doc_id, queries, corpus)
    table.setdefault(query_id, {})[doc_id] = value


def read_qrels(
    path: str | os.PathLike,
    *,
    queries: Mapping[str, object] | None = None,
    corpus: Mapping[str, object] | None = None,
) -> dict[str, dict[str, int]]:
    """Reads a BEIR qrels TSV (header `query-id corpus-id score`); ids are checked against `queries`/`corpus`."""
    qrels: dict[str, dict[str, int]] = {}
    seen = _UniqueIds(path, "judgement (query id, document id)")
    header_seen = False
    for number, line in _lines(path):
        if not header_seen:
            if tuple(line.split("\t")) != QRELS_HEADER:
                raise FormatError(path, number, f"expected the header {chr(9).join(QRELS_HEADER)!r}, got {line!r}")
            header_seen = True
            continue
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 3:
            raise FormatError(path, number, f"expected 3 tab-separated columns, got {len(columns)}")
        query_id = _plain_id(path, number, columns[0], "query id")
        doc_id = _plain_id(path, number, columns[1], "document id")
        gain = _parse_int(path, number, columns[2].strip(), "score")
        _add_pair(path, number, qrels, seen, query_id, doc_id, gain, queries, corpus)
    if not header_seen:
        raise FormatError(path, 1, f"empty file: expected the header {chr(9).join(QRELS_HEADER)!r}")
    return qrels


def read_beir(directory: str | os.PathLike) -> BeirDataset:
    """Reads a BEIR-layout directory; its splits are the `qrels/*.tsv` files present (sorted by name)."""
    directory = pathlib.Path(directory)
    corpus = read_corpus(directory / "corpus.jsonl")
    queries = read_queries(directory / "queries.jsonl")
    qrels_files = sorted((directory / "qrels").glob("*.tsv"))
    if not qrels_files:
        raise FormatError(directory / "qrels", None, "no qrels files (expected qrels/<split>.tsv)")
    qrels = {file.stem: read_qrels(file, queries=queries, corpus=corpus) for file in qrels_files}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def read_run(
    path: str | os.PathLike,
    *,
    queries: Mapping[str, object] | None = None,
    corpus: Mapping[str, object] | None = None,
) -> dict[str, dict[str, float]]:
    """Reads a TREC run (`qid Q0 docid rank score tag`, whitespace-separated) into qid -> docid -> score."""
    run: dict[str, dict[str, float]] = {}
    seen = _UniqueIds(path, "(query id, document id) pair")
    for number, (query_id, _, doc_id, rank, score, _) in _whitespace_rows(path, 6, "qid Q0 docid rank score tag"):
        _parse_int(path, number, rank, "rank")
        _add_pair(path, number, run, seen, query_id, doc_id, _parse_score(path, number, score), queries, corpus)
    return run


def _whitespace_rows(path: str | os.PathLike, columns: int, names: str) -> Iterator[tuple[int, list[str]]]:
    """Yields (line, fields) for each non-blank line of a whitespace-separated file with exactly `columns` fields.

    Fields never hold whitespace (they are split on it) nor a byte-order mark (see `_valid_id`)."""
    for number, line in _lines(path):
        fields = line.split()
        if not fields:
            continue
        if "\ufeff" in line:
            raise FormatError(path, number, "a byte-order mark (U+FEFF) inside the line: concatenated files?")
        if len(fields) != columns:
            raise FormatError(path, number, f"expected {columns} columns '{names}', got {len(fields)}")
        yield number, fields


def _tsv_rows(path: str | os.PathLike, columns: int, names: str) -> Iterator[tuple[int, list[str]]]:
    """Yields (line, fields) for each non-empty line of a headerless TSV with exactly `columns` columns."""
    for number, line in _lines(path):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != columns:
            raise FormatError(path, number, f"expected {columns} tab-separated columns ({names}), got {len(fields)}")
        if not fields[0].strip():
            raise FormatError(path, number, "empty id in the first column")
        fields[0] = _plain_id(path, number, fields[0], "id in the first column")
        yield number, fields


def _collect_documents(path, rows: Iterable[tuple[int, Document]]) -> Iterator[Document]:
    seen = _UniqueIds(path, "document id")
    count = 0
    for number, doc in rows:
        seen.add(doc.doc_id, number)
        count += 1
        yield doc
    if count == 0:
        raise FormatError(path, None, "empty corpus: no documents")


def iter_msmarco_collection(path: str | os.PathLike) -> Iterator[Document]:
    """Streams the MS MARCO passage collection (`pid<TAB>text`) as documents with an empty title."""
    rows = ((number, Document(pid, "", text)) for number, (pid, text) in _tsv_rows(path, 2, "pid, text"))
    return _collect_documents(path, rows)


def read_msmarco_collection(path: str | os.PathLike) -> dict[str, Document]:
    """Reads the MS MARCO passage collection (`pid<TAB>text`); titles are empty."""
    return {doc.doc_id: doc for doc in iter_msmarco_collection(path)}


def iter_msmarco_docs(path: str | os.PathLike) -> Iterator[Document]:
    """Streams the MS MARCO document collection (`docid<TAB>url<TAB>title<TAB>body`); the url is dropped."""
    rows = (
        (number, Document(doc_id, title, body))
        for number, (doc_id, _url, title, body) in _tsv_rows(path, 4, "docid, url, title, body")
    )
    return _collect_documents(path, rows)


def read_msmarco_docs(path: str | os.PathLike) -> dict[str, Document]:
    """Reads the MS MARCO document collection (`docid<TAB>url<TAB>title<TAB>body`)."""
    return {doc.doc_id: doc for doc in iter_msmarco_docs(path)}


def read_msmarco_queries(path: str | os.PathLike) -> dict[str, str]:
    """Reads MS MARCO queries (`qid<TAB>text`) keeping file order."""
    seen = _UniqueIds(path, "query id")
    queries = {}
    for number, (query_id, text) in _tsv_rows(path, 2, "qid, text"):
        seen.add(query_id, number)
        queries[query_id] = text
    return queries


def read_trec_qrels(
    path: str | os.PathLike,
    *,
    queries: Mapping[str, object] | None = None,
    corpus: Mapping[str, object] | None = None,
) -> dict[str, dict[str, int]]:
    """Reads TREC qrels (`qid 0 docid rel`, whitespace-separated, no header), as MS MARCO ships them."""
    qrels: dict[str, dict[str, int]] = {}
    seen = _UniqueIds(path, "judgement (query id, document id)")
    for number, (query_id, _, doc_id, relevance) in _whitespace_rows(path, 4, "qid iteration docid relevance"):
        gain = _parse_int(path, number, relevance, "relevance")
        _add_pair(path, number, qrels, seen, query_id, doc_id, gain, queries, corpus)
    return qrels
