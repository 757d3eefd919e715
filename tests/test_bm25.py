"""BM25: scores equal the Lucene BM25 formula computed by hand, search semantics, the bm25 mode, Cranfield figures."""
import importlib.util
import json
import math
import pathlib

import pytest

from distill_ret import bm25, evaluation
from distill_ret.data import formats
from distill_ret.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# No stop words and no words shorter than two letters, so the tokens are exactly the whitespace-split words.
CORPUS = {
    "a": formats.Document("a", "wing flutter", "flutter of a swept wing at high speed"),
    "b": formats.Document("b", "", "boundary layer transition on a flat plate"),
    "c": formats.Document("c", "heat transfer", "heat transfer in laminar boundary layer flow with heat sources"),
    "d": formats.Document("d", "plate vibration", "vibration of thin plate"),
}
STOP = {"of", "a", "at", "on", "in", "with"}


def _tokens(text):
    return [word for word in text.lower().split() if word not in STOP]


def _lucene_bm25(query, corpus, k1=1.5, b=0.75):
    """Lucene BM25: sum over query terms of
    ln(1 + (N - df + 0.5) / (df + 0.5)) * tf / (tf + k1 (1 - b + b dl/avgdl))."""
    docs = {doc_id: _tokens(bm25.document_text(doc)) for doc_id, doc in corpus.items()}
    avgdl = sum(map(len, docs.values())) / len(docs)
    scores = {}
    for doc_id, tokens in docs.items():
        score = 0.0
        for term in set(_tokens(query)):
            df = sum(term in other for other in docs.values())
            tf = tokens.count(term)
            if tf:
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                score += idf * tf / (tf + k1 * (1 - b + b * len(tokens) / avgdl))
        if score > 0:
            scores[doc_id] = score
    return scores


@pytest.mark.parametrize("query", ["heat boundary layer", "plate", "wing flutter speed", "thin plate vibration heat"])
@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (0.9, 0.4)])
def test_scores_equal_lucene_formula(query, k1, b):
    index = bm25.Bm25Index.build(CORPUS, bm25.Bm25Params(k1=k1, b=b))
    run = index.search({"q": query}, k=10)
    expected = _lucene_bm25(query, CORPUS, k1, b)
    assert run["q"] == pytest.approx(expected, rel=1e-5)
    assert list(run["q"]) == sorted(expected, key=lambda doc_id: (-expected[doc_id], doc_id))


def test_titles_are_indexed():
    run = bm25.Bm25Index.build(CORPUS).search({"q": "vibration"}, k=10)
    assert list(run["q"]) == ["d"]
    run = bm25.Bm25Index.build(CORPUS).search({"q": "transfer"}, k=10)
    assert list(run["q"]) == ["c"]


def test_top_k_truncates_and_unmatched_queries_are_empty():
    index = bm25.Bm25Index.build(CORPUS)
    run = index.search({"all": "plate boundary wing heat", "stop": "of the a", "unknown": "zeppelin"}, k=2)
    full = index.search({"all": "plate boundary wing heat"}, k=100)["all"]
    assert len(full) == 4
    assert run["all"] == dict(list(full.items())[:2])
    assert run["stop"] == {} and run["unknown"] == {}


def test_equal_scores_are_ordered_by_document_id():
    corpus = {doc_id: formats.Document(doc_id, "", "same words here") for doc_id in ["z", "m", "b"]}
    run = bm25.Bm25Index.build(corpus).search({"q": "words"}, k=3)
    assert list(run["q"]) == ["b", "m", "z"]


def test_stop_words_are_configurable():
    kept = bm25.Bm25Index.build(CORPUS, bm25.Bm25Params(stopwords="")).search({"q": "of"}, k=10)
    assert set(kept["q"]) == {"a", "d"}
    assert bm25.Bm25Index.build(CORPUS).search({"q": "of"}, k=10)["q"] == {}


def test_stemming_matches_inflections():
    unstemmed = bm25.Bm25Index.build(CORPUS).search({"q": "plates vibrations"}, k=10)["q"]
    stemmed = bm25.Bm25Index.build(CORPUS, bm25.Bm25Params(stemmer="english")).search(
        {"q": "plates vibrations"}, k=10
    )["q"]
    assert unstemmed == {}
    assert list(stemmed)[0] == "d" and set(stemmed) == {"b", "d"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "bm26"}, r"config.bm25.method='bm26': must be one of"),
        ({"b": 1.5}, r"config.bm25.b=1.5: must be in \[0, 1\]"),
        ({"k1": -1.0}, r"config.bm25.k1=-1.0: must be a finite number >= 0"),
        ({"delta": float("nan")}, r"config.bm25.delta=nan"),
        ({"stemmer": "klingon"}, r"config.bm25.stemmer='klingon': not a PyStemmer language"),
        ({"stopwords": "klingon"}, r"config.bm25.stopwords='klingon': not a bm25s stop-word list"),
    ],
)
def test_bad_parameters_name_the_config_field(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        bm25.Bm25Params(**kwargs)


def test_bad_search_input():
    with pytest.raises(ValueError, match="empty corpus"):
        bm25.Bm25Index.build({})
    with pytest.raises(ValueError, match="k must be a positive integer"):
        bm25.Bm25Index.build(CORPUS).search({"q": "plate"}, k=0)


def _config(beir_dir, split):
    spec = importlib.util.spec_from_file_location("bm25_config", REPO_ROOT / "configs" / "bm25.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("cranfield")
    config.data.beir_dir, config.data.split = str(beir_dir), split
    return config


def _write_fixture(directory):
    queries = {"q1": "heat boundary layer", "q2": "wing flutter", "q3": "zeppelin"}
    qrels = {"test": {"q1": {"c": 2, "b": 1}, "q2": {"a": 1}}}
    formats.write_beir(formats.BeirDataset(CORPUS, queries, qrels), directory)
    return directory


def test_bm25_mode_writes_run_and_metrics(tmp_path):
    beir = _write_fixture(tmp_path / "beir")
    outcome = bm25.run_from_config(_config(beir, "test"), str(tmp_path / "work"))
    run = formats.read_run(tmp_path / "work" / "bm25-test.trec")
    assert set(run) == {"q1", "q2"}
    assert run["q1"] == pytest.approx(_lucene_bm25("heat boundary layer", CORPUS))
    expected = evaluation.evaluate(run, {"q1": {"c": 2, "b": 1}, "q2": {"a": 1}}, evaluation.DEFAULT_MEASURES)
    metrics = json.loads((tmp_path / "work" / "bm25-test.metrics.json").read_text())
    assert metrics["measures"] == pytest.approx(expected.aggregate) == outcome.metrics
    assert metrics["bm25"]["k1"] == 1.5


def test_bm25_mode_on_all_queries_writes_a_run_only(tmp_path):
    beir = _write_fixture(tmp_path / "beir")
    outcome = bm25.run_from_config(_config(beir, ""), str(tmp_path / "work"))
    assert outcome.metrics is None
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["bm25-all.trec"]
    assert set(formats.read_run(tmp_path / "work" / "bm25-all.trec")) == {"q1", "q2"}  # q3 matches nothing


@pytest.mark.parametrize(
    ("section", "field", "value", "message"),
    [
        ("bm25", "top_k", 0, r"config.bm25.top_k=0: must be an integer >= 1"),
        ("bm25", "stemmer", "klingon", r"config.bm25.stemmer='klingon'"),
        ("eval", "measures", "nDCG@10,FOO", r"config.eval.measures='nDCG@10,FOO': unknown measure 'FOO'"),
        ("eval", "measures", "R@0", r"config.eval.measures='R@0': measure 'R@0': cutoff must be a positive integer"),
        ("eval", "relevance_level", 0, r"config.eval.relevance_level=0: must be an integer >= 1"),
    ],
)
def test_bm25_mode_refuses_bad_values_before_writing(tmp_path, section, field, value, message):
    beir = _write_fixture(tmp_path / "beir")
    config = _config(beir, "test")
    config[section][field] = value
    with pytest.raises(ConfigError, match=message):
        bm25.run_from_config(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_bm25_mode_writes_nothing_when_the_split_has_no_judgements_or_nothing_is_found(tmp_path):
    beir = _write_fixture(tmp_path / "beir")
    (beir / "qrels" / "empty.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(formats.FormatError, match=r"empty.tsv: no judgements"):
        bm25.run_from_config(_config(beir, "empty"), str(tmp_path / "work"))
    # "zeppelin" matches nothing
    (beir / "qrels" / "unmatched.tsv").write_text("query-id\tcorpus-id\tscore\nq3\ta\t1\n")
    with pytest.raises(evaluation.NothingToEvaluate, match="ranks no document"):
        bm25.run_from_config(_config(beir, "unmatched"), str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_bm25_mode_labels_the_data_it_read(tmp_path, capsys):
    beir = _write_fixture(tmp_path / "beir")
    bm25.run_from_config(_config(beir, "test"), str(tmp_path / "work"))  # the cranfield preset, another directory
    printed = capsys.readouterr().out
    assert "bm25 beir/test" in printed and "cranfield" not in printed


def test_bm25_mode_unknown_split(tmp_path):
    beir = _write_fixture(tmp_path / "beir")
    with pytest.raises(ConfigError, match=r"split='dev' has no qrels"):
        bm25.run_from_config(_config(beir, "dev"), str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


# Measured with `distill-ret bm25 --config=configs/bm25.py:cranfield` (k1=1.5, b=0.75, lucene, English stop words).
CRANFIELD_TEST = {"nDCG@10": 0.2967, "MRR@10": 0.4060, "R@100": 0.7006}


def test_cranfield_test_figures(cranfield_dir):
    dataset = formats.read_beir(cranfield_dir)
    qrels = dataset.qrels["test"]
    run = bm25.Bm25Index.build(dataset.corpus).search({qid: dataset.queries[qid] for qid in qrels}, k=1000)
    result = evaluation.evaluate(run, qrels, list(CRANFIELD_TEST))
    assert result.missing_queries == ()
    for name, value in CRANFIELD_TEST.items():
        assert result.aggregate[name] == pytest.approx(value, abs=0.01), name
