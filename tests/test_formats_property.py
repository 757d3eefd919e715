"""Property tests of every reader in data/formats.py: random bytes and random mutations of valid files.

Whatever the bytes, a reader returns a result or raises FormatError naming the file it read; never any other
exception. What a BEIR or run reader returns is valid: its writer writes it back and the reader reads the
same again. A UTF-8 byte-order mark and CRLF line endings change nothing.
"""
import gzip
import json
import pathlib
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill_ret.data import formats
from distill_ret.data.formats import BeirDataset, Document, FormatError

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
IDS = st.text(alphabet="abcxyz0189_-:.", min_size=1, max_size=6)
TEXTS = st.text(max_size=30)
GAINS = st.integers(min_value=-1, max_value=3)
SCORES = st.floats(allow_nan=False, allow_infinity=False, width=64)

# Replacements for a token of a valid file: huge, not-a-number and otherwise strange numbers and ids.
STRANGE_TOKENS = [
    b"9" * 5000, b"-" + b"9" * 30, b"1e400", b"-1e309", b"NaN", b"nan", b"inf", b"-Infinity", b"1_0", b"+3",
    b"\xd9\xa3", b"0x1f", b"", b" ", b"\t", b"\"", b"{", b"[" * 5000, b"null", b"true", b"\\ud800", b"\"\\udc80\"",
    b"\xef\xbb\xbf", b"\x00", b"\xc3", b"\xed\xa0\x80", b"\xff\xfe", b"\r", b"\x1c", b"\xc2\xa0", b"\xc2\x85",
]
# Replacements for a value of a JSON line: huge, deep, not-a-number, wrongly typed and unpaired-surrogate values.
STRANGE_JSON_VALUES = [
    b"1" + b"0" * 5000, b"-" + b"9" * 30, b"1e400", b"NaN", b"-Infinity", b"[" * 5000 + b"]" * 5000, b"{}", b"[]",
    b"null", b"true", b"0", b"-5", b'"\\ud800"', b'"a\\udc80"', b'"\\ud83d\\ude00"', b'" a b "', b'""', b'"\\u0000"',
]


# ------------------------------------------------------------------------------------------ valid files


@st.composite
def beir_datasets(draw) -> BeirDataset:
    doc_ids = draw(st.lists(IDS, min_size=1, max_size=4, unique=True))
    corpus = {doc_id: Document(doc_id, draw(TEXTS), draw(TEXTS)) for doc_id in doc_ids}
    query_ids = draw(st.lists(IDS, min_size=1, max_size=3, unique=True))
    queries = {query_id: draw(TEXTS) for query_id in query_ids}
    judged = st.dictionaries(st.sampled_from(doc_ids), GAINS, max_size=3)
    qrels = {"test": {query_id: draw(judged) for query_id in query_ids}}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


@st.composite
def runs(draw) -> dict[str, dict[str, float]]:
    return draw(st.dictionaries(IDS, st.dictionaries(IDS, SCORES, min_size=1, max_size=4), max_size=3))


TSV_TEXTS = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\t\n\r"), max_size=20)


def tsv_bytes(rows) -> bytes:
    return "".join("\t".join(row) + "\n" for row in rows).encode("utf-8")


@st.composite
def msmarco_collections(draw) -> bytes:
    ids = draw(st.lists(IDS, min_size=1, max_size=4, unique=True))
    return tsv_bytes([(pid, draw(TSV_TEXTS)) for pid in ids])


@st.composite
def msmarco_docs(draw) -> bytes:
    ids = draw(st.lists(IDS, min_size=1, max_size=4, unique=True))
    return tsv_bytes([(doc_id, "http://x.example/", draw(TSV_TEXTS), draw(TSV_TEXTS)) for doc_id in ids])


@st.composite
def trec_qrels(draw) -> bytes:
    pairs = draw(st.lists(st.tuples(IDS, IDS), min_size=1, max_size=5, unique=True))
    return "".join(f"{qid} 0 {docid} {draw(GAINS)}\n" for qid, docid in pairs).encode("utf-8")


def corpus_bytes(dataset: BeirDataset) -> bytes:
    records = ({"_id": doc.doc_id, "title": doc.title, "text": doc.text} for doc in dataset.corpus.values())
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def queries_bytes(dataset: BeirDataset) -> bytes:
    return "".join(json.dumps({"_id": qid, "text": text}) + "\n" for qid, text in dataset.queries.items()).encode()


def qrels_bytes(dataset: BeirDataset) -> bytes:
    rows = [("query-id", "corpus-id", "score")]
    rows += [(qid, did, str(gain)) for qid, judged in dataset.qrels["test"].items() for did, gain in judged.items()]
    return tsv_bytes(rows)


def run_bytes(run) -> bytes:
    lines = []
    for qid, scores in run.items():
        lines += [f"{qid} Q0 {did} {rank} {score!r} tag\n" for rank, (did, score) in enumerate(scores.items(), 1)]
    return "".join(lines).encode("utf-8")


# ------------------------------------------------------------------------------------------ mutations


def split_lines(content: bytes) -> list[bytes]:
    return content.split(b"\n")


def flip_byte(content: bytes, position: int, mask: int) -> bytes:
    return content[:position] + bytes([content[position] ^ mask]) + content[position + 1 :]


@st.composite
def mutated(draw, content: bytes) -> bytes:
    """`content` after 1-3 random edits: truncation, line edits, byte flips, strange tokens, BOM, CRLF, emptying."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(
            ["truncate", "insert_line", "delete_line", "duplicate_line", "flip", "invalid_utf8", "token",
             "columns", "bom", "crlf", "empty", "random_line", "insert", "json_value"]
        ))
        lines = split_lines(content)
        index = draw(st.integers(0, max(len(lines) - 1, 0)))
        if kind == "truncate":
            content = content[: draw(st.integers(0, len(content)))]
        elif kind == "insert_line":
            lines.insert(index, draw(st.sampled_from(lines)))
            content = b"\n".join(lines)
        elif kind == "delete_line":
            del lines[index]
            content = b"\n".join(lines)
        elif kind == "duplicate_line":
            lines.insert(index, lines[index])
            content = b"\n".join(lines)
        elif kind == "flip" and content:
            position = draw(st.integers(0, len(content) - 1))
            content = flip_byte(content, position, draw(st.integers(1, 255)))
        elif kind == "invalid_utf8":
            position = draw(st.integers(0, len(content)))
            invalid = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"]))
            content = content[:position] + invalid + content[position:]
        elif kind == "token":
            separator = draw(st.sampled_from([b"\t", b" ", b"\"", b":", b","]))
            tokens = lines[index].split(separator)
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(st.sampled_from(STRANGE_TOKENS))
            lines[index] = separator.join(tokens)
            content = b"\n".join(lines)
        elif kind == "columns":
            separator = draw(st.sampled_from([b"\t", b" "]))
            if draw(st.booleans()):
                lines[index] += separator + draw(st.sampled_from([b"x", b"", b"1"]))
            else:
                lines[index] = lines[index].replace(separator, b"", 1)
            content = b"\n".join(lines)
        elif kind == "bom":
            content = b"\xef\xbb\xbf" + content
        elif kind == "crlf":
            content = content.replace(b"\n", b"\r\n")
        elif kind == "empty":
            content = draw(st.sampled_from([b"", b"\n", b"\r\n", b" \n\n"]))
        elif kind == "random_line":
            lines.insert(index, draw(st.binary(max_size=40)))
            content = b"\n".join(lines)
        elif kind == "insert":
            position = draw(st.integers(0, len(content)))
            content = content[:position] + draw(st.sampled_from(STRANGE_TOKENS)) + content[position:]
        elif kind == "json_value":
            lines[index] = with_strange_json_value(draw, lines[index])
            content = b"\n".join(lines)
    return content


def with_strange_json_value(draw, line: bytes) -> bytes:
    """A JSON-object line with one key's value (an existing or a new key) replaced by a strange JSON value."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return line
    if not isinstance(record, dict):
        return line
    key = draw(st.sampled_from(sorted(record) + ["_id", "text", "title", "extra"]))
    raw = {name: json.dumps(value).encode() for name, value in record.items()}
    raw[key] = draw(st.sampled_from(STRANGE_JSON_VALUES))
    return b"{" + b", ".join(json.dumps(name).encode() + b": " + value for name, value in raw.items()) + b"}"


def garbage_or_mutation(valid: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.binary(max_size=200), valid.flatmap(mutated))


@st.composite
def gzip_inputs(draw, valid: st.SearchStrategy) -> bytes:
    """Gzip-compressed valid or mutated content, possibly cut or corrupted after compression, or plain garbage."""
    content = gzip.compress(draw(st.one_of(valid, valid.flatmap(mutated))), mtime=0)
    kind = draw(st.sampled_from(["intact", "truncate", "flip", "garbage", "uncompressed"]))
    if kind == "truncate":
        return content[: draw(st.integers(0, len(content) - 1))]
    if kind == "flip":
        return flip_byte(content, draw(st.integers(0, len(content) - 1)), draw(st.integers(1, 255)))
    if kind == "garbage":
        return draw(st.binary(max_size=100))
    if kind == "uncompressed":
        return draw(valid)
    return content


# ------------------------------------------------------------------------------------------ the property


@pytest.fixture(scope="module")
def scratch() -> pathlib.Path:
    with tempfile.TemporaryDirectory() as directory:
        yield pathlib.Path(directory)


def read_or_error(reader, path: pathlib.Path, content: bytes, **kwargs):
    """reader(path) on `content`; None when it raised a FormatError naming `path` (any other exception fails)."""
    path.write_bytes(content)
    try:
        return reader(path, **kwargs)
    except FormatError as error:
        assert error.path == str(path) and str(path) in str(error)
        assert "\n" not in str(error)
        return None


def materialise(reader):
    """Readers that stream give a list, so every row is read."""
    return lambda path, **kwargs: list(reader(path, **kwargs))


@SETTINGS
@given(content=garbage_or_mutation(beir_datasets().map(corpus_bytes)))
def test_corpus_reader(scratch, content):
    path = scratch / "corpus.jsonl"
    corpus = read_or_error(formats.read_corpus, path, content)
    assert (corpus is None) == (read_or_error(materialise(formats.iter_corpus), path, content) is None)
    if corpus is not None:
        formats.write_corpus(corpus, scratch / "rewritten.jsonl")
        assert formats.read_corpus(scratch / "rewritten.jsonl") == corpus


@SETTINGS
@given(content=garbage_or_mutation(beir_datasets().map(queries_bytes)))
def test_queries_reader(scratch, content):
    queries = read_or_error(formats.read_queries, scratch / "queries.jsonl", content)
    if queries is not None:
        formats.write_queries(queries, scratch / "rewritten.jsonl")
        assert formats.read_queries(scratch / "rewritten.jsonl") == queries


@SETTINGS
@given(dataset=beir_datasets(), data=st.data())
def test_qrels_reader(scratch, dataset, data):
    content = data.draw(st.one_of(st.binary(max_size=200), mutated(qrels_bytes(dataset))))
    path = scratch / "test.tsv"
    qrels = read_or_error(formats.read_qrels, path, content)
    read_or_error(formats.read_qrels, path, content, queries=dataset.queries, corpus=dataset.corpus)
    if qrels is not None:
        formats.write_qrels(qrels, scratch / "rewritten.tsv")
        assert formats.read_qrels(scratch / "rewritten.tsv") == qrels


@SETTINGS
@given(dataset=beir_datasets(), data=st.data())
def test_beir_directory_reader(scratch, dataset, data):
    directory = scratch / "beir"
    formats.write_beir(dataset, directory)
    target = data.draw(st.sampled_from(["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"]))
    valid = (directory / target).read_bytes()
    (directory / target).write_bytes(data.draw(st.one_of(st.binary(max_size=100), mutated(valid))))
    try:
        loaded = formats.read_beir(directory)
    except FormatError as error:
        assert pathlib.Path(error.path).parent in (directory, directory / "qrels")
        return
    formats.write_beir(loaded, scratch / "rewritten")
    assert formats.read_beir(scratch / "rewritten") == loaded


@SETTINGS
@given(run=runs(), data=st.data())
def test_run_reader(scratch, run, data):
    content = data.draw(st.one_of(st.binary(max_size=200), mutated(run_bytes(run))))
    path = scratch / "run.trec"
    loaded = read_or_error(formats.read_run, path, content)
    read_or_error(formats.read_run, path, content, queries={q: None for q in run}, corpus={"a": None})
    if loaded is not None:
        formats.write_run(loaded, scratch / "rewritten.trec")
        assert formats.read_run(scratch / "rewritten.trec") == loaded


@SETTINGS
@given(content=garbage_or_mutation(trec_qrels()))
def test_trec_qrels_reader(scratch, content):
    read_or_error(formats.read_trec_qrels, scratch / "qrels.txt", content)


@SETTINGS
@given(content=garbage_or_mutation(msmarco_collections()))
def test_msmarco_collection_and_queries_readers(scratch, content):
    read_or_error(formats.read_msmarco_collection, scratch / "collection.tsv", content)
    read_or_error(materialise(formats.iter_msmarco_collection), scratch / "collection.tsv", content)
    read_or_error(formats.read_msmarco_queries, scratch / "queries.tsv", content)


@SETTINGS
@given(content=garbage_or_mutation(msmarco_docs()))
def test_msmarco_docs_reader(scratch, content):
    read_or_error(formats.read_msmarco_docs, scratch / "docs.tsv", content)
    read_or_error(materialise(formats.iter_msmarco_docs), scratch / "docs.tsv", content)


GZIP_CASES = [
    (formats.read_corpus, beir_datasets().map(corpus_bytes)),
    (formats.read_queries, beir_datasets().map(queries_bytes)),
    (formats.read_qrels, beir_datasets().map(qrels_bytes)),
    (formats.read_run, runs().map(run_bytes)),
    (formats.read_trec_qrels, trec_qrels()),
    (formats.read_msmarco_collection, msmarco_collections()),
    (formats.read_msmarco_queries, msmarco_collections()),
    (formats.read_msmarco_docs, msmarco_docs()),
]


@pytest.mark.parametrize("reader, valid", GZIP_CASES, ids=[reader.__name__ for reader, _ in GZIP_CASES])
def test_gzip_inputs(scratch, reader, valid):
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(content=gzip_inputs(valid))
    def check(content):
        read_or_error(reader, scratch / "input.gz", content)

    check()


# ------------------------------------------------------------------------------------------ benign edits


def with_bom_and_crlf(content: bytes, bom: bool, crlf: bool) -> bytes:
    content = content.replace(b"\n", b"\r\n") if crlf else content
    return b"\xef\xbb\xbf" + content if bom else content


BENIGN_CASES = [
    (formats.read_corpus, beir_datasets().map(corpus_bytes)),
    (formats.read_queries, beir_datasets().map(queries_bytes)),
    (formats.read_qrels, beir_datasets().map(qrels_bytes)),
    (formats.read_run, runs().filter(bool).map(run_bytes)),
    (formats.read_trec_qrels, trec_qrels()),
    (formats.read_msmarco_collection, msmarco_collections()),
    (formats.read_msmarco_queries, msmarco_collections()),
    (formats.read_msmarco_docs, msmarco_docs()),
]


@pytest.mark.parametrize("reader, valid", BENIGN_CASES, ids=[reader.__name__ for reader, _ in BENIGN_CASES])
def test_bom_and_crlf_change_nothing(scratch, reader, valid):
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(content=valid, bom=st.booleans(), crlf=st.booleans())
    def check(content, bom, crlf):
        path = scratch / "input.txt"
        path.write_bytes(content)
        expected = reader(path)
        path.write_bytes(with_bom_and_crlf(content, bom, crlf))
        assert reader(path) == expected

    check()


# ------------------------------------------------------------------------------------------ inputs the properties found

HEADER = b"query-id\tcorpus-id\tscore\n"
FOUND = [
    (formats.read_corpus, "c.jsonl", b'{"_id": 1' + b"0" * 5000 + b', "text": "x"}\n', "malformed JSON: Exceeds"),
    (formats.read_corpus, "c.jsonl", b"[" * 100000 + b"\n", "nested too deeply"),
    (formats.read_corpus, "c.jsonl", b'{"_id": "a", "text": "x\\ud800"}\n', "unpaired surrogate escape \\\\ud800"),
    (formats.read_queries, "q.jsonl", b'{"_id": "\\udc80", "text": "x"}\n', "unpaired surrogate escape \\\\udc80"),
    (formats.read_qrels, "t.tsv", HEADER + b"q1\td1\t1_0\n", "score must be an integer, got '1_0'"),
    (formats.read_qrels, "t.tsv", HEADER + "q1\td1\t٣\n".encode(), "score must be an integer"),
    (formats.read_qrels, "t.tsv", HEADER + b"q1\td1\t" + b"9" * 40 + b"\n", "out of the 64-bit integer range"),
    (formats.read_qrels, "t.tsv", HEADER + b"q 1\td1\t1\n", "query id 'q 1' must be non-empty and"),
    (formats.read_msmarco_queries, "q.tsv", b"1 2\ttext\n", "must be non-empty and contain no whitespace"),
    (formats.read_run, "r.trec", b"q Q0 d 1 1_0 t\n", "score must be a decimal number, got '1_0'"),
    (formats.read_run, "r.trec", "q Q0 d 1 ٣ t\n".encode(), "score must be a decimal number"),
    (formats.read_run, "r.trec", b"q Q0 d 1 1.0 t\n\xef\xbb\xbfq Q0 e 2 0.5 t\n", "byte-order mark"),
    (formats.read_trec_qrels, "q.txt", b"q 0 d " + b"9" * 5000 + b"\n", "out of the 64-bit integer range"),
    (formats.read_corpus, "c.jsonl.gz", gzip.compress(b'{"_id": "a", "text": "x"}\n', mtime=0)[:-9],
     "Compressed file ended"),
    (formats.read_corpus, "c.jsonl.gz", b'{"_id": "a", "text": "x"}\n', "corrupt or truncated gzip data"),
    (formats.read_run, "r.gz", gzip.compress(b"q Q0 d 1 1.0 t\n", mtime=0)[:-8] + b"\0" * 8, "CRC check failed"),
]


@pytest.mark.parametrize("reader, name, content, message", FOUND)
def test_inputs_the_properties_found(scratch, reader, name, content, message):
    path = scratch / name
    path.write_bytes(content)
    with pytest.raises(FormatError, match=message) as excinfo:
        reader(path)
    assert excinfo.value.path == str(path)


def test_unreadable_file_is_a_format_error(scratch, monkeypatch):
    path = scratch / "run.trec"
    path.write_bytes(b"q Q0 d 1 1.0 t\n")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(formats, "open", refuse, raising=False)
    with pytest.raises(FormatError, match="cannot read the file: Permission denied") as excinfo:
        formats.read_run(path)
    assert excinfo.value.path == str(path)
