"""Teacher interface, run-file teacher (with its fallback), cross-encoder and dense teachers."""
import numpy as np
import pytest

from distill_ret.data import formats
from distill_ret.teachers import RunFileTeacher, TeacherQuery, rank_order, rerank_run

CORPUS = {doc_id: formats.Document(doc_id, f"title {doc_id}", f"text of {doc_id}") for doc_id in ("a", "b", "c", "d", "e")}
QUERIES = {"q1": "first query", "q2": "second query"}


def query(query_id, *doc_ids):
    return TeacherQuery(query_id, QUERIES[query_id], tuple(CORPUS[doc_id] for doc_id in doc_ids))


def test_rank_order_sorts_by_score_then_doc_id():
    assert rank_order([1.0, 3.0, 3.0, 2.0], ["w", "z", "y", "x"]) == [2, 1, 3, 0]
    with pytest.raises(ValueError, match="3 scores for 2 candidates"):
        rank_order([1.0, 2.0, 3.0], ["a", "b"])


def test_run_file_teacher_scores_from_the_file_and_ranks_absent_candidates_last(tmp_path):
    path = tmp_path / "teacher.trec"
    formats.write_run({"q1": {"a": 5.0, "b": 7.0, "c": 2.5}, "q2": {"e": 1.0}}, path)
    teacher = RunFileTeacher.from_file(path)
    ranking = teacher.rank(query("q1", "d", "a", "c", "e", "b"))
    # d and e are absent from the run: score = lowest run score of q1 (2.5) - 1, ranked after c, tie by doc id.
    np.testing.assert_array_equal(ranking.scores, [1.5, 5.0, 2.5, 1.5, 7.0])
    assert ranking.ranked_ids() == ["b", "a", "c", "d", "e"]
    assert list(ranking.order) == [4, 1, 2, 0, 3]
    assert ranking.as_run() == {"b": 7.0, "a": 5.0, "c": 2.5, "d": 1.5, "e": 1.5}
    with pytest.raises(KeyError, match="teacher.trec: the teacher run ranks no document for query 'q3'"):
        teacher.rank(TeacherQuery("q3", "x", (CORPUS["a"],)))


def test_run_file_teacher_fingerprint_follows_the_file(tmp_path):
    first, second = tmp_path / "1.trec", tmp_path / "2.trec"
    formats.write_run({"q1": {"a": 1.0}}, first)
    formats.write_run({"q1": {"a": 2.0}}, second)
    assert RunFileTeacher.from_file(first).fingerprint() == RunFileTeacher.from_file(first).fingerprint()
    assert RunFileTeacher.from_file(first).fingerprint() != RunFileTeacher.from_file(second).fingerprint()
    assert RunFileTeacher({"q1": {"a": 1.0}}).fingerprint()["kind"] == "run_file"


def test_rerank_run_keeps_the_top_depth_candidates_in_teacher_order():
    candidates = {"q1": {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}, "q2": {}}
    teacher = RunFileTeacher({"q1": {"c": 9.0, "a": 1.0, "b": 5.0}})
    reranked = rerank_run(teacher, candidates, QUERIES, CORPUS, depth=3)
    assert reranked == {"q1": {"c": 9.0, "b": 5.0, "a": 1.0}, "q2": {}}
    full = rerank_run(teacher, candidates, QUERIES, CORPUS)
    assert list(full["q1"]) == ["c", "b", "a", "d"] and full["q1"]["d"] == 0.0
    with pytest.raises(ValueError, match="document 'zz' for query 'q1'"):
        rerank_run(teacher, {"q1": {"zz": 1.0}}, QUERIES, CORPUS)
    with pytest.raises(ValueError, match="query 'q9'"):
        rerank_run(teacher, {"q9": {"a": 1.0}}, QUERIES, CORPUS)
