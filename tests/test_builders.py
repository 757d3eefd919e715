"""TFDS builders: schema and contents on small fixtures and Cranfield, judgement propagation, determinism."""
import gzip
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import ml_collections
import pytest

from distill_ret.data import builders, formats
from distill_ret.data.builders import common, long_docs, pydocs
from distill_ret.data.formats import BeirDataset, Document, FormatError
from distill_ret.errors import ConfigError

SMALL = BeirDataset(
    corpus={f"p{i}": Document(f"p{i}", f"title {i}" if i % 3 else "", f"text of passage {i}.") for i in range(10)},
    queries={"q1": "first query", "q2": "second query", "q3": "third query", "q4": "unjudged query"},
    qrels={
        "train": {"q1": {"p0": 2, "p1": 1, "p9": 0}, "q2": {"p5": 1}},
        "test": {"q3": {"p2": 3, "p3": 1, "p4": 2}},
    },
)


def data_config(**fields) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"data": {"raw_dir": "", "data_dir": "", **fields}})


def text(value: bytes) -> str:
    return value.decode("utf-8")


def array_record_bytes(root: pathlib.Path) -> dict[str, bytes]:
    """Relative path -> bytes of every array_record file under root."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*.array_record-*"))}


@pytest.fixture
def small_beir(tmp_path) -> pathlib.Path:
    formats.write_beir(SMALL, tmp_path / "small")
    return tmp_path / "small"


# ------------------------------------------------------------------------------------------ beir


def test_beir_builder_schema_and_contents(small_beir, tmp_path):
    config = data_config(name="beir", raw_dir=str(small_beir))
    sources = builders.load_data_sources(config, str(tmp_path / "work"))
    assert sorted(sources) == ["corpus", "test", "train"]
    corpus = sources["corpus"]
    assert [text(corpus[i]["doc_id"]) for i in range(len(corpus))] == list(SMALL.corpus)  # source order kept
    assert corpus[1] == {"doc_id": b"p1", "title": b"title 1", "text": b"text of passage 1."}
    first = sources["train"][0]
    assert text(first["query_id"]) == "q1" and text(first["text"]) == "first query"
    assert [text(d) for d in first["doc_ids"]] == ["p0", "p1", "p9"]
    assert [int(g) for g in first["gains"]] == [2, 1, 0]
    assert len(sources["test"]) == 1  # q4 has no judgements: in no split


def test_beir_export_round_trip(small_beir, tmp_path):
    config = data_config(name="beir", raw_dir=str(small_beir))
    loaded = builders.load_beir_from_config(config, str(tmp_path / "work"))
    judged = {qid: text for qid, text in SMALL.queries.items() if qid != "q4"}
    assert loaded.corpus == SMALL.corpus
    assert loaded.queries == judged
    assert loaded.qrels == SMALL.qrels
    exported = builders.beir_dir(config, str(tmp_path / "work"))
    assert exported.parent == tmp_path / "work/tfds/beir_layout/beir"
    assert re.fullmatch(r"small_[0-9a-f]{12}", exported.name)  # the raw directory's name + the inputs' fingerprint


def test_build_is_idempotent_and_byte_identical(small_beir, tmp_path):
    config = data_config(name="long_docs", raw_dir=str(small_beir), passages_per_doc=(2, 3), seed=1)
    first = builders.build_from_config(config, str(tmp_path / "a"))
    files = array_record_bytes(tmp_path / "a")
    mtimes = {path: path.stat().st_mtime_ns for path in (tmp_path / "a").rglob("*") if path.is_file()}
    assert builders.build_from_config(config, str(tmp_path / "a")) == first  # second build: no-op
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "a").rglob("*") if path.is_file()} == mtimes
    builders.build_from_config(config, str(tmp_path / "b"))
    assert array_record_bytes(tmp_path / "b") == files
    assert len(files) == 3  # corpus, test, train


def tree(root: pathlib.Path) -> dict[str, bytes | None]:
    """Relative path -> bytes (None for a directory) of everything under root."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def test_bad_input_fails_cleanly_and_removes_only_what_it_created(tmp_path):
    raw = tmp_path / "bad"
    formats.write_beir(SMALL, raw)
    (raw / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tnot-a-doc\t1\n")
    config = data_config(name="beir", raw_dir=str(raw))
    with pytest.raises(FormatError, match="unknown document id 'not-a-doc'") as excinfo:
        builders.build_from_config(config, str(tmp_path / "work"))
    assert excinfo.value.path.endswith("dev.tsv") and excinfo.value.line == 2
    assert not (tmp_path / "work").exists()  # no empty directories, no staging left behind
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "notes.txt").write_text("mine")
    config.data.data_dir = str(tmp_path / "shared")
    with pytest.raises(FormatError):
        builders.build_from_config(config, str(tmp_path / "work"))
    assert tree(tmp_path / "shared") == {"notes.txt": b"mine"}  # the existing root keeps exactly what it had


def test_same_directory_name_with_other_contents_is_another_build(tmp_path):
    first, second = tmp_path / "a" / "small", tmp_path / "b" / "small"
    formats.write_beir(SMALL, first)
    other = BeirDataset({"x": Document("x", "", "another corpus")}, {"q": "query"}, {"test": {"q": {"x": 1}}})
    formats.write_beir(other, second)
    work = str(tmp_path / "work")
    loaded_first = builders.load_beir_from_config(data_config(name="beir", raw_dir=str(first)), work)
    loaded_second = builders.load_beir_from_config(data_config(name="beir", raw_dir=str(second)), work)
    assert loaded_first.corpus == SMALL.corpus and loaded_second.corpus == other.corpus
    assert len(list((tmp_path / "work" / "tfds" / "beir").iterdir())) == 4  # two variants x two parts


def test_edited_input_is_rebuilt_and_identical_input_is_found_again(small_beir, tmp_path):
    work = str(tmp_path / "work")
    config = data_config(name="long_docs", raw_dir=str(small_beir), passages_per_doc=(2, 3), seed=1)
    before = builders.beir_dir(config, work)
    builders.build_from_config(config, work)
    edited = BeirDataset({**SMALL.corpus, "p0": Document("p0", "", "an edited passage")}, SMALL.queries, SMALL.qrels)
    formats.write_beir(edited, small_beir)
    after = builders.beir_dir(config, work)
    assert after != before
    config.data.level = "passages"
    assert builders.load_beir_from_config(config, work).corpus["p0"].text == "an edited passage"
    config.data.seed = 2  # options are part of the key too
    assert builders.beir_dir(config, work).parent != after.parent
    formats.write_beir(SMALL, small_beir)  # the original contents again: the first build is found, not rebuilt
    config.data.seed, config.data.level = 1, "documents"
    assert builders.beir_dir(config, work) == before


def test_a_chosen_name_is_refused_for_other_inputs(small_beir, tmp_path):
    work = str(tmp_path / "work")
    config = data_config(name="beir", raw_dir=str(small_beir), config_name="mine")
    first = builders.build_from_config(config, work)
    assert first["corpus"].parent.name == "mine_corpus"
    assert common.built_fingerprint(first["corpus"]) == configs_fingerprint(config)
    assert builders.build_from_config(config, work) == first  # same inputs: a no-op
    formats.write_beir(BeirDataset(SMALL.corpus, SMALL.queries, {"test": SMALL.qrels["test"]}), small_beir)
    (small_beir / "qrels" / "train.tsv").unlink()
    snapshot = tree(tmp_path / "work")
    with pytest.raises(ConfigError, match=r"config.data.config_name='mine': .* built from other inputs"):
        builders.build_from_config(config, work)
    assert tree(tmp_path / "work") == snapshot


def configs_fingerprint(config) -> str:
    return builders.part_configs(config.data)["corpus"].description.removeprefix(common.FINGERPRINT_PREFIX)


def test_build_outputs_follow_the_umask(small_beir, tmp_path):
    previous = os.umask(0o027)
    try:
        builders.build_from_config(data_config(name="beir", raw_dir=str(small_beir)), str(tmp_path / "work"))
    finally:
        os.umask(previous)
    for path in (tmp_path / "work").rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o750 if path.is_dir() else 0o640), path


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config.data.name='nope': must be one of"):
        builders.build_from_config(data_config(name="nope"), str(tmp_path))
    with pytest.raises(ConfigError, match="raw_dir is required"):
        builders.build_from_config(data_config(name="beir"), str(tmp_path))
    with pytest.raises(ConfigError, match="config.data.raw_dir=.*absent': not a directory"):
        builders.build_from_config(data_config(name="beir", raw_dir=str(tmp_path / "absent")), str(tmp_path))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "long_docs", "passages_per_doc": (3, 2)}, r"config.data.passages_per_doc=\(3, 2\): needs integers"),
        ({"name": "long_docs", "passages_per_doc": 0}, "config.data.passages_per_doc=0"),
        ({"name": "long_docs", "seed": -1}, "config.data.seed=-1"),
        ({"name": "beir", "level": "sentences"}, "config.data.level='sentences'"),
        ({"name": "beir", "config_name": "My Name"}, "config.data.config_name='My Name'"),
        ({"name": "beir", "data_dir": "FILE"}, "config.data.data_dir=.*is not a directory"),
        ({"name": "pydocs", "raw_dir": "", "dev_fraction": 1.5}, "config.data.dev_fraction=1.5"),
        ({"name": "pydocs", "raw_dir": "", "dev_fraction": 0.6, "test_fraction": 0.6}, "must be at most 1"),
        ({"name": "pydocs", "raw_dir": "", "packages": ("no_such_package",)},
         r"config.data.packages=.*no_such_package"),
    ],
)
def test_bad_data_configs_are_refused_before_anything_is_written(small_beir, tmp_path, fields, message):
    (tmp_path / "FILE").write_text("x")
    fields = {"raw_dir": str(small_beir), **fields}
    if fields.get("data_dir") == "FILE":
        fields["data_dir"] = str(tmp_path / "FILE")
    with pytest.raises(ConfigError, match=message):
        builders.build_from_config(data_config(**fields), str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_cranfield_through_beir(cranfield_dir, tmp_path):
    config = data_config(name="beir", raw_dir=str(cranfield_dir))
    sources = builders.load_data_sources(config, str(tmp_path))
    assert {split: len(source) for split, source in sources.items()} == {
        "corpus": 1400,
        "dev": 45,
        "test": 45,
        "train": 135,
    }
    assert builders.load_beir_from_config(config, str(tmp_path)) == formats.read_beir(cranfield_dir)


# ------------------------------------------------------------------------------------------ msmarco


def write_lines(path: pathlib.Path, lines: list[str], *, gz: bool = False) -> None:
    content = "".join(line + "\n" for line in lines)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wt", encoding="utf-8") as handle:
            handle.write(content)
    else:
        path.write_text(content, encoding="utf-8")


def test_msmarco_passage_official_files(tmp_path):
    raw = tmp_path / "msmarco"
    raw.mkdir()
    write_lines(raw / "collection.tsv",
                ["0\tThe presence of communication amid minds.", "1\tThe Manhattan Project.", "2\tcafé"])
    write_lines(raw / "queries.train.tsv", ["121352\tdefine extreme", "634306\tunjudged"])
    write_lines(raw / "qrels.train.tsv", ["121352\t0\t2\t1", "121352\t0\t0\t1"], gz=True)
    write_lines(raw / "queries.dev.tsv", ["1048585\twhat is paula deen's brother"])
    write_lines(raw / "qrels.dev.tsv", ["1048585\t0\t1\t1"])
    write_lines(raw / "queries.eval.tsv", ["9\tno qrels, no split"])
    sources = builders.load_data_sources(data_config(name="msmarco_passage", raw_dir=str(raw)), str(tmp_path / "w"))
    assert sorted(sources) == ["corpus", "dev", "train"]
    assert [sources["corpus"][i] for i in range(3)][2] == {"doc_id": b"2", "title": b"", "text": "café".encode()}
    assert len(sources["train"]) == 1
    train = sources["train"][0]
    assert (train["query_id"], train["doc_ids"], [int(g) for g in train["gains"]]) == (b"121352", [b"2", b"0"], [1, 1])
    assert sources["dev"][0]["text"] == b"what is paula deen's brother"


def test_msmarco_passage_qrels_must_name_known_queries(tmp_path):
    raw = tmp_path / "msmarco"
    raw.mkdir()
    write_lines(raw / "collection.tsv", ["0\tx"])
    write_lines(raw / "queries.dev.tsv", ["1\tq"])
    write_lines(raw / "qrels.dev.tsv", ["1\t0\t0\t1", "2\t0\t0\t1"])
    with pytest.raises(FormatError, match="unknown query id '2'") as excinfo:
        builders.build_from_config(data_config(name="msmarco_passage", raw_dir=str(raw)), str(tmp_path / "w"))
    assert excinfo.value.line == 2


def test_msmarco_doc_official_files(tmp_path):
    raw = tmp_path / "msmarco_docs"
    raw.mkdir()
    write_lines(
        raw / "msmarco-docs.tsv",
        ["D1555982\thttps://answers.yahoo.com/\tThe hot glowing surfaces of stars\tBody one.",
         "D301595\thttp://x/\t\tBody two."],
        gz=True,
    )
    write_lines(raw / "msmarco-doctrain-queries.tsv", ["1185869\t)what was the immediate impact", "5\tother"])
    write_lines(raw / "msmarco-doctrain-qrels.tsv", ["1185869 0 D1555982 1"])
    write_lines(raw / "msmarco-docdev-queries.tsv", ["174249\tdoes xpress bet charge"])
    write_lines(raw / "msmarco-docdev-qrels.tsv", ["174249 0 D301595 1"], gz=True)
    config = data_config(name="msmarco_doc", raw_dir=str(raw))
    loaded = builders.load_beir_from_config(config, str(tmp_path / "w"))
    assert loaded.corpus == {
        "D1555982": Document("D1555982", "The hot glowing surfaces of stars", "Body one."),
        "D301595": Document("D301595", "", "Body two."),
    }
    assert loaded.queries == {"174249": "does xpress bet charge", "1185869": ")what was the immediate impact"}
    assert loaded.qrels == {"dev": {"174249": {"D301595": 1}}, "train": {"1185869": {"D1555982": 1}}}


# ------------------------------------------------------------------------------------------ long_docs


def test_group_passages_partitions_with_sizes_in_range():
    ids = [f"p{i}" for i in range(103)]
    groups = long_docs.group_passages(ids, 4, 8, seed=3)
    assert sorted(pid for group in groups for pid in group) == sorted(ids)
    assert all(4 <= len(group) <= 8 for group in groups[:-1]) and 1 <= len(groups[-1]) <= 8
    assert groups == long_docs.group_passages(ids, 4, 8, seed=3)
    assert groups != long_docs.group_passages(ids, 4, 8, seed=4)
    with pytest.raises(ValueError, match="min_passages <= max_passages"):
        long_docs.group_passages(ids, 5, 4, seed=0)


def test_assemble_document_boundaries():
    doc = common.assemble_document(
        "d", "", [Document("a", "Title A", "alpha text"), Document("b", "", "beta"), Document("c", "T", "γ")]
    )
    assert doc.text == "Title A\nalpha text\n\nbeta\n\nT\nγ"
    assert [(span.passage_id, span.start, span.end) for span in doc.passages] == [("a", 0, 18), ("b", 20, 24),
                                                                                 ("c", 26, 29)]
    assert [doc.text[span.start : span.end] for span in doc.passages] == ["Title A\nalpha text", "beta", "T\nγ"]


def test_propagate_gains_takes_max_of_judged_passages():
    qrels = {"q1": {"p1": 1, "p2": 3, "p3": 0}, "q2": {"p3": 0, "p4": 2, "p1": 0}}
    owner = {"p1": "A", "p2": "A", "p3": "B", "p4": "B", "p5": "A"}
    assert common.propagate_gains(qrels, owner) == {"q1": {"A": 3, "B": 0}, "q2": {"B": 2, "A": 0}}


def test_long_docs_judgements_carried_up(small_beir, tmp_path):
    config = data_config(name="long_docs", raw_dir=str(small_beir), passages_per_doc=(3, 3), seed=0)
    sources = builders.load_data_sources(config, str(tmp_path))
    owner, documents = {}, {}
    for record in sources["corpus"]:
        doc_text = text(record["text"])
        spans = record["passages"]
        for pid, title, body, start, end in zip(
            spans["passage_id"], spans["title"], spans["text"], spans["start"], spans["end"]
        ):
            passage = SMALL.corpus[text(pid)]
            assert (text(title), text(body)) == (passage.title, passage.text)
            assert doc_text[int(start) : int(end)] == common.passage_segment(passage)
            owner[passage.doc_id] = text(record["doc_id"])
        documents[text(record["doc_id"])] = len(spans["passage_id"])
    assert sorted(owner) == sorted(SMALL.corpus) and list(documents.values()) == [3, 3, 3, 1]
    for split, qrels in SMALL.qrels.items():
        for record in sources[split]:
            judged = qrels[text(record["query_id"])]
            expected: dict[str, int] = {}
            for pid, gain in judged.items():
                expected[owner[pid]] = max(expected.get(owner[pid], gain), gain)
            got = {text(d): int(g) for d, g in zip(record["doc_ids"], record["gains"])}
            assert got == expected
            assert {text(p): int(g) for p, g in zip(record["passage_ids"], record["passage_gains"])} == judged


def test_long_docs_on_cranfield(cranfield_dir, tmp_path):
    config = data_config(name="long_docs", raw_dir=str(cranfield_dir), passages_per_doc=(4, 8), seed=0)
    original = formats.read_beir(cranfield_dir)
    sources = builders.load_data_sources(config, str(tmp_path))
    owner, sizes = {}, []
    for record in sources["corpus"]:
        spans = record["passages"]
        sizes.append(len(spans["passage_id"]))
        for pid, start, end in zip(spans["passage_id"], spans["start"], spans["end"]):
            segment = text(record["text"])[int(start) : int(end)]
            assert segment == common.passage_segment(original.corpus[text(pid)])
            owner[text(pid)] = text(record["doc_id"])
    assert sorted(owner) == sorted(original.corpus) and sum(sizes) == 1400
    assert all(4 <= size <= 8 for size in sizes[:-1])
    documents = builders.load_beir_from_config(config, str(tmp_path))
    config.data.level = "passages"
    passages = builders.load_beir_from_config(config, str(tmp_path))
    assert passages.corpus == original.corpus and passages.qrels == original.qrels
    assert list(documents.corpus) == sorted(set(owner.values()))
    for split, qrels in original.qrels.items():
        for qid, judged in qrels.items():
            expected: dict[str, int] = {}
            for pid, gain in judged.items():
                expected[owner[pid]] = max(expected.get(owner[pid], gain), gain)
            assert documents.qrels[split][qid] == expected


# ------------------------------------------------------------------------------------------ pydocs


FAKE_STDLIB = {
    "alpha.py": '''
        """Module docstring (not a passage)."""

        def greet(name):
            """Return a friendly greeting for the given name.

            The greeting is composed of a salutation and the name, separated by a space character.
            """

        def short():
            """Too short to keep.

            Only four words.
            """

        class Box:
            """A container that holds one value
            for later retrieval.

            Boxes are mutable: the value can be replaced at any time by calling the put method again.
            """

            def put(self, value):
                """Store a new value in the box.

                Any previously stored value is discarded and cannot be recovered by the caller afterwards.
                """
                def inner():
                    """Nested helper functions are never collected as passages by the builder at all.

                    Because their qualified names would need a locals marker that nobody could search for.
                    """

        def greet(name):
            """Redefined later, so the first definition wins here.

            This text must not appear in the corpus because the qualified name was already used above.
            """
        ''',
    "pkg/__init__.py": '''
        def helper():
            """Help the package initialise itself correctly.

            It reads the configuration and prepares the caches used by the submodules of the package.
            """
        ''',
    "pkg/test/test_x.py": '''
        def test_it():
            """Tests are skipped by the builder entirely.

            Even though this docstring is long enough to pass the size filter of the builder easily.
            """
        ''',
    "broken.py": "def oops(:\n    pass\n",
    "site-packages/thirdparty.py": '''
        def f():
            """Third-party code is not part of the standard library.

            So this docstring must never show up, no matter how long its remaining text happens to be.
            """
        ''',
}


@pytest.fixture
def fake_stdlib(tmp_path) -> pathlib.Path:
    root = tmp_path / "stdlib"
    for relative, source in FAKE_STDLIB.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


def test_pydocs_collect_on_fake_stdlib(fake_stdlib):
    corpus = pydocs.collect(fake_stdlib)
    assert [doc.doc_id for doc in corpus.documents] == ["alpha", "pkg"]
    alpha = corpus.documents[0]
    assert [(span.passage_id, span.title) for span in alpha.passages] == [
        ("alpha.greet", "alpha.greet"),
        ("alpha.Box", "alpha.Box"),
        ("alpha.Box.put", "alpha.Box.put"),
    ]
    assert alpha.passages[0].text == ("The greeting is composed of a salutation and the name, "
                                      "separated by a space character.")
    assert alpha.text.startswith("alpha.greet\nThe greeting is composed")
    assert corpus.queries == {
        "q:alpha.greet": "Return a friendly greeting for the given name.",
        "q:alpha.Box": "A container that holds one value for later retrieval.",
        "q:alpha.Box.put": "Store a new value in the box.",
        "q:pkg.helper": "Help the package initialise itself correctly.",
    }
    assert corpus.skipped_files == [str(fake_stdlib / "broken.py")]
    assert all(summary not in doc.text for doc in corpus.documents for summary in corpus.queries.values())
    assert pydocs.collect(fake_stdlib, packages=("pkg",)).queries == {"q:pkg.helper": corpus.queries["q:pkg.helper"]}


def test_pydocs_splits_are_hash_based():
    names = [f"module.function_{i}" for i in range(2000)]
    splits = [pydocs.split_for(name, 0.1, 0.2) for name in names]
    assert splits == [pydocs.split_for(name, 0.1, 0.2) for name in names]
    assert 0.15 < splits.count("test") / 2000 < 0.25 and 0.06 < splits.count("dev") / 2000 < 0.14
    # Pinned values: a salted or platform-dependent hash would move them between runs and machines.
    pinned = {"json.loads": "test", "os.path.join": "train", "textwrap.indent": "test", "csv.reader": "train"}
    assert {name: pydocs.split_for(name, 0.1, 0.1) for name in pinned} == pinned
    assert pydocs.split_for("json.loads", 0.9, 0.0) == "dev"


def test_pydocs_builder_qrels(fake_stdlib, tmp_path):
    config = data_config(name="pydocs", raw_dir=str(fake_stdlib), dev_fraction=0.0, test_fraction=0.0)
    documents = builders.load_beir_from_config(config, str(tmp_path))
    config.data.level = "passages"
    passages = builders.load_beir_from_config(config, str(tmp_path))
    assert documents.qrels["train"] == {
        "q:alpha.greet": {"alpha": 1},
        "q:alpha.Box": {"alpha": 1},
        "q:alpha.Box.put": {"alpha": 1},
        "q:pkg.helper": {"pkg": 1},
    }
    assert passages.qrels["train"] == {qid: {qid.removeprefix("q:"): 1} for qid in documents.qrels["train"]}
    assert sorted(documents.qrels) == ["train"]  # the empty dev and test splits are left out
    assert list(passages.corpus) == ["alpha.greet", "alpha.Box", "alpha.Box.put", "pkg.helper"]


def test_pydocs_name_follows_the_sources(fake_stdlib, tmp_path):
    config = data_config(name="pydocs", raw_dir=str(fake_stdlib))
    before = builders.beir_dir(config, str(tmp_path))
    builders.build_from_config(config, str(tmp_path))
    source = fake_stdlib / "pkg" / "__init__.py"
    source.write_text(source.read_text().replace("correctly", "properly"))
    assert builders.beir_dir(config, str(tmp_path)) != before
    assert "q:pkg.helper" in builders.load_beir_from_config(config, str(tmp_path)).queries
    assert builders.load_beir_from_config(config, str(tmp_path)).queries["q:pkg.helper"].endswith("properly.")


def test_pydocs_real_stdlib_deterministic(tmp_path):
    config = data_config(name="pydocs", packages=("json", "email"))
    builders.build_from_config(config, str(tmp_path / "a"))
    builders.build_from_config(config, str(tmp_path / "b"))
    files = array_record_bytes(tmp_path / "a")
    assert len(files) == 4 and files == array_record_bytes(tmp_path / "b")
    loaded = builders.load_beir_from_config(config, str(tmp_path / "a"))
    assert "json.decoder" in loaded.corpus and "email.message" in loaded.corpus
    assert sum(len(qrels) for qrels in loaded.qrels.values()) == len(loaded.queries) > 50


def test_pydocs_independent_of_python_hash_seed(tmp_path):
    script = (
        "import sys; from distill_ret.data.builders import pydocs; "
        "c = pydocs.collect(pydocs.stdlib_dir(), ('json',)); "
        "print(sorted(c.split_of.items()), [d.text for d in c.documents])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True,
            check=True
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
