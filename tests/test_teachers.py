"""Teacher interface, run-file teacher (with its fallback), cross-encoder and dense teachers."""
import dataclasses

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


# ------------------------------------------------------------------------------------------- cross-encoder teacher

def test_cross_encoder_teacher_matches_pytorch_with_sharded_bucketed_batches(tmp_path):
    import jax

    from distill_ret.teachers.cross_encoder import CrossEncoderTeacher
    from tests.teacher_helpers import DOCS, torch_scores, write_torch_cross_encoder

    model = write_torch_cross_encoder(tmp_path / "ce")
    teacher = CrossEncoderTeacher.from_hf(tmp_path / "ce", max_length=24, batch_size=5, bucket_step=8,
                                          show_progress=False)
    assert len(jax.devices()) == 8 and teacher.scorer.batch_size == 8  # rounded up to the 8 batch shards
    requests = [TeacherQuery("q1", "wing lift", tuple(DOCS.values())[:11]),
                TeacherQuery("q2", "heat", tuple(DOCS.values())[5:])]
    rankings = teacher.rank_batch(requests)
    for request, ranking in zip(requests, rankings):
        passages = [f"{doc.title} {doc.text}" for doc in request.candidates]
        expected = torch_scores(model, teacher.scorer.tokenizer, [request.text] * len(passages), passages, 24)
        np.testing.assert_allclose(ranking.scores, expected, atol=1e-5)
        assert np.all(np.diff(ranking.scores[ranking.order]) <= 0)  # rank list = descending teacher scores
    # One compiled program per padded length: at most one per bucket (8, 16, 24), however many batches ran.
    assert teacher.scorer._score._cache_size() <= 3
    print_ = teacher.fingerprint()
    assert print_["kind"] == "cross_encoder" and print_["max_length"] == "24" and len(print_["params_sha256"]) == 64


def test_cross_encoder_scores_give_the_teacher_no_gradient():
    import jax
    import jax.numpy as jnp

    from distill_ret.models.heads import CrossEncoder
    from distill_ret.teachers.cross_encoder import cross_encoder_scores
    from tests.bert_helpers import padded_batch, random_params, tiny_config

    config = tiny_config()
    ids, mask, types = padded_batch()
    params = random_params(CrossEncoder(config), ids, mask, types)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def distillation_loss(teacher_params, student_scores):
        teacher = cross_encoder_scores(teacher_params, config, batch)  # [batch]
        return jnp.sum((student_scores - teacher) ** 2)

    student = jnp.arange(3, dtype=jnp.float32)
    teacher_grads, student_grads = jax.grad(distillation_loss, argnums=(0, 1))(params, student)
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree.leaves(teacher_grads))
    assert float(jnp.abs(student_grads).max()) > 0.0


# ------------------------------------------------------------------------------------------------- dense teacher

def test_dense_teacher_equals_pytorch_mean_pooled_cosine_and_retrieves(tmp_path):
    import torch
    import transformers

    from distill_ret.teachers.dense import DenseTeacher
    from tests.teacher_helpers import DOCS, write_tokenizer

    tokenizer = write_tokenizer(tmp_path / "bert")
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64)).eval()
    model.save_pretrained(tmp_path / "bert", safe_serialization=True)
    teacher = DenseTeacher.from_hf(tmp_path / "bert", max_length=32, batch_size=4)

    def reference(texts):
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"][..., None].float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()

    candidates = tuple(DOCS.values())[:6]
    ranking = teacher.rank(TeacherQuery("q1", "wing lift", candidates))
    expected = reference([f"{d.title} {d.text}" for d in candidates]) @ reference(["wing lift"])[0]
    np.testing.assert_allclose(ranking.scores, expected, atol=1e-5)
    run = teacher.retrieve({"q1": "wing lift"}, DOCS, k=3)
    every = teacher.rank(TeacherQuery("q1", "wing lift", tuple(DOCS.values())))
    assert list(run["q1"]) == every.ranked_ids()[:3]
    assert teacher.fingerprint()["kind"] == "dense"
    # The passage cache is keyed by text: the same id with another text (a title-less copy) is encoded anew.
    first = candidates[0]
    untitled = dataclasses.replace(first, title="")
    scores = teacher.score_batch([TeacherQuery("q1", "wing lift", (first, untitled)),
                                  TeacherQuery("q2", "wing lift", (untitled,))])
    expected = reference([f"{first.title} {first.text}", first.text]) @ reference(["wing lift"])[0]
    np.testing.assert_allclose(np.concatenate(scores), [*expected, expected[1]], atol=1e-5)
