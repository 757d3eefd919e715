"""sources.load_long_docs: long documents keep their passages and boundaries; judgements at both levels; checks."""
import pathlib
import types

import ml_collections
import pytest

from distill_ret.data import formats, sources
from distill_ret.data.builders import common, long_docs, pydocs
from distill_ret.data.formats import BeirDataset, Document, FormatError
from distill_ret.errors import ConfigError

SMALL = BeirDataset(
    corpus={f"p{i}": Document(f"p{i}", f"title {i}" if i % 3 else "", f"Text of passage {i}. It has two sentences.")
            for i in range(11)},
    queries={"q1": "first query", "q2": "second query", "q3": "third query", "q4": "unjudged query"},
    qrels={
        "train": {"q1": {"p0": 2, "p1": 1, "p9": 0}, "q2": {"p5": 1, "p6": 3}},
        "test": {"q3": {"p2": 3, "p3": 1, "p4": 2}},
    },
)


def data_config(**fields) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"data": {"raw_dir": "", "data_dir": "", "beir_dir": "", **fields}})


def max_gains(judged: dict[str, int], owner: dict[str, str]) -> dict[str, int]:
    """Document gains computed here, independently of the builder: the maximum over each document's passages."""
    gains: dict[str, int] = {}
    for passage_id, gain in judged.items():
        gains[owner[passage_id]] = max(gains.get(owner[passage_id], gain), gain)
    return gains


def check_against_source(dataset: sources.LongDocsDataset, original: BeirDataset) -> None:
    """Every source passage is in exactly one document at its boundaries; judgements match the source's."""
    owner = {}
    for doc_id, document in dataset.documents.items():
        assert document.doc_id == doc_id
        for span in document.passages:
            passage = original.corpus[span.passage_id]
            assert (span.title, span.text) == (passage.title, passage.text)
            assert document.text[span.start : span.end] == common.passage_segment(passage)
            owner[span.passage_id] = doc_id
        assert dataset.passage_chars(doc_id) == [(span.start, span.end) for span in document.passages]
    assert sorted(owner) == sorted(original.corpus) and dataset.passage_document == owner
    assert dataset.passage_qrels == original.qrels
    judged_queries = {qid for qrels in original.qrels.values() for qid in qrels}
    assert dataset.queries == {qid: text for qid, text in original.queries.items() if qid in judged_queries}
    for split, qrels in original.qrels.items():
        assert dataset.qrels[split] == {qid: max_gains(judged, owner) for qid, judged in qrels.items()}


@pytest.fixture
def small_beir(tmp_path) -> pathlib.Path:
    formats.write_beir(SMALL, tmp_path / "small")
    return tmp_path / "small"


def test_long_docs_keep_every_passage_at_its_boundaries(small_beir, tmp_path):
    config = data_config(name="long_docs", raw_dir=str(small_beir), passages_per_doc=(2, 4), seed=3)
    dataset, where = sources.load_long_docs(config, str(tmp_path / "work"))
    expected = long_docs.build_long_documents(SMALL.corpus, 2, 4, seed=3)
    assert list(dataset.documents.values()) == expected  # what the builder made, in build order
    assert pathlib.Path(where).is_dir() and pathlib.Path(where).is_relative_to(tmp_path / "work" / "tfds")
    check_against_source(dataset, SMALL)
    # Hand-checked on this fixture: q2 judges p5 (1) and p6 (3); when they share a document its gain is 3.
    owner = dataset.passage_document
    shared = owner["p5"] == owner["p6"]
    assert dataset.qrels["train"]["q2"] == ({owner["p5"]: 3} if shared else {owner["p5"]: 1, owner["p6"]: 3})
    assert sources.load_long_docs(config, str(tmp_path / "work"))[0] == dataset  # a second load reads the same build


def test_cranfield_long_documents(cranfield_dir, tmp_path):
    config = data_config(name="long_docs", raw_dir=str(cranfield_dir), passages_per_doc=(4, 8), seed=0)
    dataset, _ = sources.load_long_docs(config, str(tmp_path))
    original = formats.read_beir(cranfield_dir)
    check_against_source(dataset, original)
    sizes = [len(document.passages) for document in dataset.documents.values()]
    assert sum(sizes) == 1400 and all(4 <= size <= 8 for size in sizes[:-1])


def test_pydocs_modules_keep_their_docstring_passages(tmp_path):
    config = data_config(name="pydocs", packages=("json",))
    dataset, _ = sources.load_long_docs(config, str(tmp_path))
    collected = pydocs.collect(pydocs.stdlib_dir(), packages=("json",))
    assert list(dataset.documents.values()) == collected.documents
    assert "json.decoder" in dataset.documents
    for query_id, passage_id in collected.passage_of.items():
        split = next(split for split, qrels in dataset.passage_qrels.items() if query_id in qrels)
        assert dataset.passage_qrels[split][query_id] == {passage_id: 1}
        assert dataset.qrels[split][query_id] == {dataset.passage_document[passage_id]: 1}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "long_docs", "beir_dir": "/some/beir"}, "config.data.beir_dir='/some/beir': a BEIR directory has no"),
        ({"name": "beir", "raw_dir": "/some/beir"},
         r"config.data.name='beir': .*\['long_docs', 'msmarco_doc_long', 'pydocs'\]"),
        ({"name": "msmarco_doc", "raw_dir": "/x"}, "config.data.name='msmarco_doc'"),
    ],
)
def test_data_without_passages_is_refused(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message):
        sources.load_long_docs(data_config(**fields), str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # refused before anything was built


# ------------------------------------------------------------------------------------------ checks on read


class FakeSource(list):
    """A data source of records held in memory, stored as `shards` array_record files of the given sizes."""

    def __init__(self, records, split: str, shards: tuple[int, ...]):
        super().__init__(records)
        self.split = split
        instructions = []
        for number, take in enumerate(shards):
            name = f"/data/long_docs-{split}.array_record-{number:05d}-of-{len(shards):05d}"
            instructions.append(types.SimpleNamespace(filename=name, skip=0, take=take))
        splits = {split: types.SimpleNamespace(file_instructions=instructions)}
        self.dataset_info = types.SimpleNamespace(splits=splits, data_dir="/data")


def encode(value):
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [encode(item) for item in value]
    return value


def corpus_record(doc_id, text, passages):
    """A corpus record as TFDS returns it; passages are (id, title, text, start, end)."""
    columns = dict(zip(("passage_id", "title", "text", "start", "end"), map(list, zip(*passages))))
    return encode({"doc_id": doc_id, "title": "", "text": text, "passages": columns})


GOOD = [
    corpus_record("d0", "T\nalpha\n\nbeta", [("a", "T", "alpha", 0, 7), ("b", "", "beta", 9, 13)]),
    corpus_record("d1", "gamma", [("c", "", "gamma", 0, 5)]),
]


def query_record(query_id, doc_ids, gains, passage_ids, passage_gains):
    return encode({"query_id": query_id, "text": "q", "doc_ids": doc_ids, "gains": gains,
                   "passage_ids": passage_ids, "passage_gains": passage_gains})


def test_read_long_docs_from_records():
    queries = FakeSource([query_record("q", ["d0", "d1"], [2, 0], ["a", "b", "c"], [1, 2, 0])], "test", (1,))
    dataset = sources.read_long_docs(FakeSource(GOOD, "corpus", (2,)), {"test": queries})
    assert dataset.passage_chars("d0") == [(0, 7), (9, 13)]
    assert dataset.documents["d0"].passages[1] == common.PassageSpan("b", "", "beta", 9, 13)
    assert dataset.qrels == {"test": {"q": {"d0": 2, "d1": 0}}}
    assert dataset.passage_qrels == {"test": {"q": {"a": 1, "b": 2, "c": 0}}}
    assert dataset.passage_document == {"a": "d0", "b": "d0", "c": "d1"}


def test_empty_passages_are_kept():
    # Cranfield has passages with neither title nor text: their segment is empty, e.g. [0, 0).
    document = common.assemble_document("d", "", [Document("e", "", ""), Document("o", "Om", "omega")])
    spans = [(span.passage_id, span.title, span.text, span.start, span.end) for span in document.passages]
    assert spans == [("e", "", "", 0, 0), ("o", "Om", "omega", 2, 10)]
    dataset = sources.read_long_docs(FakeSource([corpus_record("d", document.text, spans)], "corpus", (1,)), {})
    assert dataset.documents == {"d": document}


@pytest.mark.parametrize(
    "record, message",
    [
        (corpus_record("d2", "delta", [("e", "", "delta", 0, 6)]), r"'e' at \[0, 6\) is not inside the 5 characters"),
        (corpus_record("d2", "delta", [("e", "", "delta", 4, 3)]), r"'e' at \[4, 3\) is not inside"),
        (corpus_record("d2", "delta", [("e", "", "", 0, 0), ("f", "", "", -1, 0)]), r"'f' at \[-1, 0\) is not inside"),
        (corpus_record("d2", "ab", [("e", "", "ab", 0, 2), ("f", "", "b", 1, 2)]), "after the previous passage"),
        (corpus_record("d2", "delta", [("e", "", "delta", 0, 4)]), r"'e': text\[0:4\] is not its title and text"),
        (corpus_record("d2", "delta", [("e", "Title", "delta", 0, 5)]), r"'e': text\[0:5\] is not its title"),
        (corpus_record("d2", "gamma", [("c", "", "gamma", 0, 5)]), "passage 'c' is also in document 'd1'"),
        (corpus_record("d0", "gamma", [("e", "", "gamma", 0, 5)]), "duplicate document id 'd0'"),
        (encode({"doc_id": "d2", "title": "", "text": "x"}), "no passages"),
    ],
)
def test_bad_corpus_records_name_the_file_and_record(record, message):
    corpus = FakeSource([*GOOD, record], "corpus", (2, 1))  # the bad record is record 0 of the second file
    with pytest.raises(FormatError, match=message) as excinfo:
        sources.read_long_docs(corpus, {})
    assert excinfo.value.path == "/data/long_docs-corpus.array_record-00001-of-00002"
    assert str(excinfo.value).startswith(f"{excinfo.value.path}: record 0: ")


@pytest.mark.parametrize(
    "record, message",
    [
        (query_record("q", ["d9"], [1], ["a"], [1]), "unknown document 'd9'"),
        (query_record("q", ["d0"], [1], ["zz"], [1]), "unknown passage 'zz'"),
        (query_record("q", ["d0"], [1], ["a", "b"], [1, 2]), r"document gains \{'d0': 1\} are not the maximum"),
        (query_record("q", ["d0"], [2], ["a", "c"], [2, 0]), "are not the maximum gains"),
    ],
)
def test_bad_judgements_name_the_file_and_record(record, message):
    queries = FakeSource([query_record("ok", ["d1"], [1], ["c"], [1]), record], "dev", (2,))
    with pytest.raises(FormatError, match=message) as excinfo:
        sources.read_long_docs(FakeSource(GOOD, "corpus", (2,)), {"dev": queries})
    assert excinfo.value.path == "/data/long_docs-dev.array_record-00000-of-00001"
    assert "record 1: " in str(excinfo.value)
