"""BM25 of any text with a corpus's statistics: equal to bm25s's scores for the corpus's own documents (every
variant), to the Lucene formula by hand for a text the corpus does not hold, and the `bm25` teacher built from a
BEIR directory that reads documents whole."""
import math

import ml_collections
import numpy as np
import pytest

from distill_ret import bm25
from distill_ret.data import formats
from distill_ret.errors import ConfigError
from distill_ret.teachers.base import TeacherQuery
from distill_ret.teachers.loader import load_teacher

CORPUS = {
    "a": formats.Document("a", "wing flutter", "flutter of a swept wing at high speed wing"),
    "b": formats.Document("b", "", "boundary layer transition on a flat plate"),
    "c": formats.Document("c", "heat transfer", "heat transfer in laminar boundary layer flow with heat sources"),
    "d": formats.Document("d", "plate vibration", "vibration of thin plate flutter flutter"),
    "e": formats.Document("e", "", "the and of"),  # only stop words
}


@pytest.mark.parametrize("method", bm25.METHODS)
@pytest.mark.parametrize("query", ["wing flutter flutter", "boundary layer heat", "plate unknownword vibration"])
def test_scores_of_the_corpus_documents_equal_the_index(method, query):
    params = bm25.Bm25Params(method=method, k1=1.2, b=0.6)
    run = bm25.Bm25Index.build(CORPUS, params).search({"q": query}, k=10)["q"]
    scores = bm25.Bm25Scorer.build(CORPUS, params).score(query, [bm25.document_text(d) for d in CORPUS.values()])
    reference = [run.get(doc_id, 0.0) for doc_id in CORPUS]  # the index leaves out scores <= 0
    np.testing.assert_allclose(scores, reference, rtol=1e-6, atol=1e-6)


def test_a_text_outside_the_corpus_scores_by_the_lucene_formula():
    # Statistics (stop words of, a, at, on, in, with, the, and removed): N = 5 documents of lengths 8, 5, 10, 7 and 1
    # (bm25s keeps one empty term for a document of stop words only, as its index does), avgdl = 31 / 5;
    # df(flutter) = 2 (a, d), df(wing) = 1 (a). The text "wing flutter wing tests" has 4 terms.
    scorer = bm25.Bm25Scorer.build(CORPUS)
    k1, b, avgdl, length = 1.5, 0.75, 31 / 5, 4

    def term(df, tf):
        return math.log(1 + (5 - df + 0.5) / (df + 0.5)) * tf / (tf + k1 * (1 - b + b * length / avgdl))

    expected = 2 * term(2, 1) + term(1, 2)  # "flutter" twice in the query, "wing" once, "speed" absent
    assert scorer.score("flutter wing flutter speed", ["wing flutter wing tests"])[0] == pytest.approx(expected,
                                                                                                   rel=1e-12)
    assert scorer.score("unknownword the", ["wing"]).tolist() == [0.0]
    assert scorer.score("wing", []).shape == (0,)


def _beir(directory, corpus):
    formats.write_beir(formats.BeirDataset(corpus=corpus, queries={"q": "wing"}, qrels={"test": {"q": {"a": 1}}}),
                       directory)
    return str(directory)


def _section(path, **bm25_fields):
    section = ml_collections.ConfigDict({"kind": "bm25", "path": path})
    if bm25_fields:
        section.bm25 = ml_collections.ConfigDict({"k1": 1.5, "b": 0.75, "delta": 0.5, "method": "lucene",
                                                  "stopwords": "english", "stemmer": "", **bm25_fields})
    return section


def test_the_teacher_reads_documents_whole_and_its_fingerprint_follows_statistics_and_settings(tmp_path):
    path = _beir(tmp_path / "beir", CORPUS)
    teacher = load_teacher(_section(path))
    long_text = " ".join(["boundary"] * 600 + ["flutter"])  # the query term comes after 600 words
    candidates = (formats.Document("x", "", long_text), formats.Document("y", "", "boundary layer"),
                  CORPUS["a"])
    scores = teacher.score_batch([TeacherQuery("q", "flutter", candidates)])[0]
    expected = bm25.Bm25Scorer.build(CORPUS).score("flutter", [long_text, "boundary layer",
                                                               bm25.document_text(CORPUS["a"])])
    np.testing.assert_array_equal(scores, expected)
    assert scores[0] > 0 and scores[1] == 0 and teacher.rank(TeacherQuery("q", "flutter", candidates)).ranked_ids()[
        0] == "a"
    assert teacher.fingerprint() == load_teacher(_section(path, k1=1.5)).fingerprint()
    assert teacher.fingerprint() != load_teacher(_section(path, k1=0.9)).fingerprint()
    other = _beir(tmp_path / "other", {**CORPUS, "f": formats.Document("f", "", "wing")})
    assert teacher.fingerprint() != load_teacher(_section(other)).fingerprint()


def test_the_teacher_refuses_a_path_without_a_corpus_and_names_its_bm25_fields(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"config.teacher.path='.*empty': a bm25 teacher needs a BEIR directory"):
        load_teacher(_section(str(tmp_path / "empty")))
    path = _beir(tmp_path / "beir", CORPUS)
    with pytest.raises(ConfigError, match=r"config.guide.bm25.k1=-1.0: must be a finite number >= 0"):
        load_teacher(_section(path, k1=-1.0), name="guide")


def test_an_empty_path_takes_the_jobs_corpus_and_is_refused_without_one(tmp_path):
    path = _beir(tmp_path / "beir", CORPUS)
    assert load_teacher(_section(""), corpus=CORPUS).fingerprint() == load_teacher(_section(path)).fingerprint()
    with pytest.raises(ConfigError, match="config.teacher.path='': this mode has no corpus of its own"):
        load_teacher(_section(""))
