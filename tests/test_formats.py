"""Round trips and bad-input errors of the BEIR, MS MARCO, TREC qrels and TREC run formats."""
import gzip
import json
import os
import re

import pytest

from distill_ret.data import formats
from distill_ret.data.formats import BeirDataset, Document, FormatError

CORPUS = {
    "d1": Document("d1", "First title", "Some text with unicode: café, naïve, 東京."),
    "d2": Document("d2", "", 'Quotes " and \\ backslashes\tand a tab'),
    "10": Document("10", "Ten", "ten"),
}
QUERIES = {"q1": "what is café", "q2": "second query"}
QRELS = {"q1": {"d1": 2, "10": 0}, "q2": {"d2": 1}}


def write_text(path, text: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def assert_error(excinfo, path, line):
    """The message names the file and, when given, the 1-based line."""
    message = str(excinfo.value)
    assert excinfo.value.path == str(path)
    assert excinfo.value.line == line
    assert str(path) in message
    if line is not None:
        assert f"{path}:{line}:" in message


def no_temp_files(directory):
    return [name for name in os.listdir(directory) if name.endswith(".tmp")] == []


# ------------------------------------------------------------------------------------------ round trips


def test_beir_round_trip(tmp_path):
    dataset = BeirDataset(corpus=CORPUS, queries=QUERIES, qrels={"test": QRELS, "train": {"q2": {"d1": 3}}})
    formats.write_beir(dataset, tmp_path / "beir")
    loaded = formats.read_beir(tmp_path / "beir")
    assert loaded == dataset
    assert list(loaded.corpus) == ["d1", "d2", "10"]  # file order kept
    assert list(loaded.qrels) == ["test", "train"]
    assert (tmp_path / "beir" / "qrels" / "test.tsv").read_text().splitlines()[0] == "query-id\tcorpus-id\tscore"


def test_corpus_title_optional_and_integer_ids(tmp_path):
    path = write_text(tmp_path / "corpus.jsonl",
                      '{"_id": 7, "text": "a"}\n\n{"_id": "b", "title": null, "text": "b"}\n')
    assert formats.read_corpus(path) == {"7": Document("7", "", "a"), "b": Document("b", "", "b")}


def test_run_round_trip_ranks_by_score_then_docid(tmp_path):
    run = {"q2": {"b": 1.5, "a": 1.5, "c": 3.25, "d": -0.1}, "q1": {"x": 0.1 + 0.2}}
    path = tmp_path / "run.txt"
    formats.write_run(run, path, tag="bm25")
    lines = path.read_text().splitlines()
    assert lines == [
        "q2 Q0 c 1 3.25 bm25",
        "q2 Q0 a 2 1.5 bm25",
        "q2 Q0 b 3 1.5 bm25",
        "q2 Q0 d 4 -0.1 bm25",
        "q1 Q0 x 1 0.30000000000000004 bm25",
    ]
    assert formats.read_run(path) == run  # scores survive exactly


def test_run_depth_truncates_per_query(tmp_path):
    path = tmp_path / "run.txt"
    formats.write_run({"q": {"a": 1.0, "b": 2.0, "c": 3.0}}, path, depth=2)
    assert formats.read_run(path) == {"q": {"c": 3.0, "b": 2.0}}


def test_msmarco_passage_files(tmp_path):
    collection = write_text(tmp_path / "collection.tsv",
                            "0\tThe presence of communication.\n1\tManhattan \"project\"\n")
    queries = write_text(tmp_path / "queries.dev.tsv", "1048585\twhat is paula deen's brother\n2\tq two\n")
    qrels = write_text(tmp_path / "qrels.dev.tsv", "1048585\t0\t1\t1\n2\t0\t0\t1\n")
    corpus = formats.read_msmarco_collection(collection)
    assert corpus == {"0": Document("0", "", "The presence of communication."),
                      "1": Document("1", "", 'Manhattan "project"')}
    loaded_queries = formats.read_msmarco_queries(queries)
    assert loaded_queries == {"1048585": "what is paula deen's brother", "2": "q two"}
    assert formats.read_trec_qrels(qrels, queries=loaded_queries, corpus=corpus) == {"1048585": {"1": 1}, "2": {"0": 1}}


def test_msmarco_docs_and_gzip(tmp_path):
    text = "D1\thttp://a.example/\tA title\tbody one\nD2\thttp://b.example/\t\tbody two\n"
    path = tmp_path / "msmarco-docs.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    assert formats.read_msmarco_docs(path) == {
        "D1": Document("D1", "A title", "body one"),
        "D2": Document("D2", "", "body two"),
    }


def test_unicode_line_separators_do_not_split_lines(tmp_path):
    path = write_text(tmp_path / "collection.tsv", "0\tone\u2028two\x85three\n")
    assert formats.read_msmarco_collection(path)["0"].text == "one\u2028two\x85three"


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "content, line, pattern",
    [
        ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n', 2, "malformed JSON"),
        ('{"_id": "a", "text": "x"}\n["a"]\n', 2, "expected a JSON object"),
        ('{"_id": "a", "text": "x"}\n{"title": "t", "text": "y"}\n', 2, "missing '_id'"),
        ('{"_id": "a", "title": "t"}\n', 1, "missing 'text'"),
        ('{"_id": "a", "text": 3}\n', 1, "'text' must be a string"),
        ('{"_id": "a b", "text": "x"}\n', 1, "no whitespace"),
        ('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n{"_id": "a", "text": "z"}\n', 3,
         "duplicate document id 'a' \\(first on line 1\\)"),
    ],
)
def test_corpus_errors(tmp_path, content, line, pattern):
    path = write_text(tmp_path / "corpus.jsonl", content)
    with pytest.raises(FormatError, match=pattern) as excinfo:
        formats.read_corpus(path)
    assert_error(excinfo, path, line)


def test_non_utf8_reports_line(tmp_path):
    path = write_text(tmp_path / "corpus.jsonl", b'{"_id": "a", "text": "x"}\n{"_id": "b", "text": "\xff"}\n')
    with pytest.raises(FormatError, match="invalid UTF-8") as excinfo:
        formats.read_corpus(path)
    assert_error(excinfo, path, 2)


def test_missing_file_and_empty_corpus(tmp_path):
    with pytest.raises(FormatError, match="file not found") as excinfo:
        formats.read_corpus(tmp_path / "absent.jsonl")
    assert_error(excinfo, tmp_path / "absent.jsonl", None)
    empty = write_text(tmp_path / "corpus.jsonl", "\n")
    with pytest.raises(FormatError, match="empty corpus") as excinfo:
        formats.read_corpus(empty)
    assert_error(excinfo, empty, None)
    with pytest.raises(FormatError, match="empty corpus"):
        formats.read_msmarco_collection(write_text(tmp_path / "collection.tsv", ""))


def test_queries_errors(tmp_path):
    path = write_text(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n')
    with pytest.raises(FormatError, match="duplicate query id 'q1'") as excinfo:
        formats.read_queries(path)
    assert_error(excinfo, path, 2)
    path = write_text(tmp_path / "queries2.jsonl", '{"_id": "q1"}\n')
    with pytest.raises(FormatError, match="missing 'text'") as excinfo:
        formats.read_queries(path)
    assert_error(excinfo, path, 1)


@pytest.mark.parametrize(
    "content, line, pattern",
    [
        ("q\td\t1\n", 1, "expected the header"),
        ("", 1, "empty file"),
        ("query-id\tcorpus-id\tscore\nq1\td1\n", 2, "expected 3 tab-separated columns, got 2"),
        ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", 2, "score must be an integer"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td1\t1\nq1\td1\t2\n", 4, "duplicate judgement"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n", 3, "unknown query id 'q9'"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tnope\t1\n", 3, "unknown document id 'nope'"),
    ],
)
def test_qrels_errors(tmp_path, content, line, pattern):
    path = write_text(tmp_path / "test.tsv", content)
    with pytest.raises(FormatError, match=pattern) as excinfo:
        formats.read_qrels(path, queries=QUERIES, corpus={"d1": None, "d2": None})
    assert_error(excinfo, path, line)


@pytest.mark.parametrize(
    "content, line, pattern",
    [
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0\n", 2, "expected 6 columns"),
        ("q1 Q0 d1 one 2.0 t\n", 1, "rank must be an integer"),
        ("q1 Q0 d1 1 2.0 t\n\nq1 Q0 d2 2 high t\n", 3, "score must be a number"),
        ("q1 Q0 d1 1 nan t\n", 1, "score must be finite"),
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n", 2, "duplicate \\(query id, document id\\) pair"),
        ("q1 Q0 d1 1 2.0 t\nqx Q0 d1 1 2.0 t\n", 2, "unknown query id 'qx'"),
        ("q1 Q0 d1 1 2.0 t\nq1 Q0 dx 2 1.0 t\n", 2, "unknown document id 'dx'"),
    ],
)
def test_run_errors(tmp_path, content, line, pattern):
    path = write_text(tmp_path / "run.txt", content)
    with pytest.raises(FormatError, match=pattern) as excinfo:
        formats.read_run(path, queries=QUERIES, corpus=CORPUS)
    assert_error(excinfo, path, line)


@pytest.mark.parametrize(
    "reader, content, line, pattern",
    [
        (formats.read_msmarco_collection, "0\ta\n1\tb\tc\n", 2, "expected 2 tab-separated columns"),
        (formats.read_msmarco_collection, "0\ta\n0\tb\n", 2, "duplicate document id '0'"),
        (formats.read_msmarco_queries, "1\ta\n1\tb\n", 2, "duplicate query id '1'"),
        (formats.read_msmarco_queries, "1\ta\n\tb\n", 2, "empty id"),
        (formats.read_msmarco_docs, "D1\turl\ttitle\n", 1, "expected 4 tab-separated columns"),
        (formats.read_trec_qrels, "1 0 d 1\n2 0 d\n", 2, "expected 4 columns"),
        (formats.read_trec_qrels, "1 0 d one\n", 1, "relevance must be an integer"),
        (formats.read_trec_qrels, "1 0 d 1\n1 0 d 0\n", 2, "duplicate judgement"),
    ],
)
def test_msmarco_errors(tmp_path, reader, content, line, pattern):
    path = write_text(tmp_path / "file.tsv", content)
    with pytest.raises(FormatError, match=pattern) as excinfo:
        reader(path)
    assert_error(excinfo, path, line)


def test_trec_qrels_unknown_ids(tmp_path):
    path = write_text(tmp_path / "qrels.tsv", "q1 0 d1 1\nq1 0 zz 1\n")
    with pytest.raises(FormatError, match="unknown document id 'zz'") as excinfo:
        formats.read_trec_qrels(path, queries=QUERIES, corpus=CORPUS)
    assert_error(excinfo, path, 2)


def test_read_beir_checks_ids_and_requires_qrels(tmp_path):
    directory = tmp_path / "beir"
    formats.write_corpus(CORPUS, directory / "corpus.jsonl")
    formats.write_queries(QUERIES, directory / "queries.jsonl")
    with pytest.raises(FormatError, match="no qrels files"):
        formats.read_beir(directory)
    write_text(directory / "qrels" / "dev.tsv", "query-id\tcorpus-id\tscore\nq1\tmissing\t1\n")
    with pytest.raises(FormatError, match="unknown document id 'missing'") as excinfo:
        formats.read_beir(directory)
    assert_error(excinfo, directory / "qrels" / "dev.tsv", 2)


# ------------------------------------------------------------------------------------------ atomic writes


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "out" / "corpus.jsonl"
    bad = {"a": Document("a", "", "x"), "b c": Document("b c", "", "y")}
    with pytest.raises(ValueError, match="no whitespace"):
        formats.write_corpus(bad, path)
    assert not path.exists()
    assert no_temp_files(path.parent)


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "run.txt"
    formats.write_run({"q": {"d": 1.0}}, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="finite"):
        formats.write_run({"q": {"a": 2.0, "b": float("inf")}}, path)
    with pytest.raises(ValueError, match="tab or newline"):
        formats.write_qrels({"q": {"a": 1, "b\tc": 1}}, path)
    with pytest.raises(ValueError, match="must be an int"):
        formats.write_qrels({"q": {"a": 1.5}}, path)
    assert path.read_bytes() == before
    assert no_temp_files(tmp_path)


def test_atomic_write_is_invisible_until_success(tmp_path):
    path = tmp_path / "f.txt"
    with formats.atomic_write(path) as handle:
        handle.write("partial")
        assert not path.exists()
    assert path.read_text() == "partial"
    with pytest.raises(RuntimeError):
        with formats.atomic_write(path) as handle:
            handle.write("replacement")
            raise RuntimeError("interrupted")
    assert path.read_text() == "partial"
    assert no_temp_files(tmp_path)


def test_written_corpus_is_valid_jsonl(tmp_path):
    path = tmp_path / "corpus.jsonl"
    formats.write_corpus(CORPUS, path)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert records[1] == {"_id": "d2", "title": "", "text": CORPUS["d2"].text}
    assert re.search("café", path.read_text(encoding="utf-8"))  # written as UTF-8, not escaped
