"""FGD retrieval: single-vector runs are exact inner products; multi-vector adds γ·(max passage + max sentence) over the
valid pieces only, which can reorder documents, the same on 8 devices as on 1 and in chunks of any size."""
import re
import types

import jax
import ml_collections
import numpy as np
import pytest

from distill_ret.errors import ConfigError
from distill_ret.fgd import mining, retrieval
from distill_ret.training import partitioning


def _mesh(num_devices: int):
    return partitioning.create_mesh({"data": -1, "fsdp": 1, "model": 1}, jax.devices()[:num_devices])


def _document(document, passages, passage_valid, sentences, sentence_valid):
    return mining.DocumentPieces(np.asarray(document, np.float32), np.asarray(passages, np.float32).reshape(-1, 2),
                                 np.asarray(passage_valid, bool), np.asarray(sentences, np.float32).reshape(-1, 2),
                                 np.asarray(sentence_valid, bool), np.zeros(len(sentences), np.int32))


CORPUS = {
    "a": _document([1.0, 0.0], [[0.5, 0.0]], [True], [[0.2, 0.0], [9.0, 0.0]], [True, False]),  # 9.0: truncated
    "b": _document([0.8, 0.0], [[2.0, 0.0], [1.0, 0.0]], [True, True], [[1.5, 0.0]], [True]),
    "c": _document([0.0, 1.0], [], [], [], []),  # no pieces: multi-vector adds nothing
}
QUERIES = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)


def test_single_vector_run_is_the_document_inner_product():
    run = retrieval.retrieval_run(["q1", "q2"], QUERIES, CORPUS, k=2)
    assert list(run["q1"]) == ["a", "b"] and run["q1"]["a"] == 1.0 and run["q1"]["b"] == np.float32(0.8)
    assert list(run["q2"])[0] == "c" and run["q2"]["c"] == 2.0


def test_multi_vector_run_by_hand():
    run = retrieval.retrieval_run(["q1", "q2"], QUERIES, CORPUS, k=3, gamma=0.5)
    assert list(run["q1"]) == ["b", "a", "c"]  # the pieces reorder a and b
    np.testing.assert_allclose([run["q1"][d] for d in "bac"], [0.8 + 0.5 * (2.0 + 1.5), 1.0 + 0.5 * (0.5 + 0.2), 0.0],
                               rtol=1e-6)
    assert run["q2"]["c"] == 2.0 and run["q2"]["a"] == 0.0


def test_multi_vector_run_on_8_devices_equals_1_device_and_a_brute_force(monkeypatch):
    """17 documents with 0-4 passages and 0-6 sentences (some truncated away), over 8 devices and over 1, in one chunk
    per device and in chunks of 2 documents: the same documents in the same order, scores within 1e-6 of each other
    and equal to a float64 computation by hand."""
    rng = np.random.RandomState(5)
    corpus = {}
    for doc in range(17):
        passages, sentences = rng.randint(0, 5), rng.randint(0, 7)
        corpus[f"d{doc}"] = mining.DocumentPieces(
            rng.randn(4).astype(np.float32), rng.randn(passages, 4).astype(np.float32), rng.rand(passages) < 0.7,
            rng.randn(sentences, 4).astype(np.float32), rng.rand(sentences) < 0.7, np.zeros(sentences, np.int32))
    queries = rng.randn(3, 4).astype(np.float32)
    runs = [retrieval.retrieval_run(["a", "b", "c"], queries, corpus, k=10, gamma=0.4, mesh=_mesh(devices))
            for devices in (8, 1)]
    vectors = 1 + max(len(p.passages) for p in corpus.values()) + max(len(p.sentences) for p in corpus.values())
    monkeypatch.setattr(retrieval, "MULTI_VECTOR_SCORES", 2 * retrieval.QUERY_CHUNK * vectors)  # 2 documents a chunk
    runs += [retrieval.retrieval_run(["a", "b", "c"], queries, corpus, k=10, gamma=0.4, mesh=_mesh(devices))
             for devices in (8, 1)]
    for qid, query in zip("abc", queries.astype(np.float64)):
        expected = {}
        for doc_id, pieces in corpus.items():
            best = [max((float(e.astype(np.float64) @ query) for e, ok in zip(embeddings, valid) if ok), default=0.0)
                    for embeddings, valid in ((pieces.passages, pieces.passage_valid),
                                              (pieces.sentences, pieces.sentence_valid))]
            expected[doc_id] = float(pieces.document.astype(np.float64) @ query) + 0.4 * sum(best)
        top = sorted(expected, key=lambda d: -expected[d])[:10]
        for run in runs:
            assert list(run[qid]) == top
            np.testing.assert_allclose([run[qid][d] for d in top], [expected[d] for d in top], rtol=1e-5, atol=1e-6)
        for run in runs[1:]:
            np.testing.assert_allclose(list(run[qid].values()), list(runs[0][qid].values()), rtol=0, atol=1e-6)


@pytest.mark.parametrize("gamma,message", [
    (-0.5, "config.evals.dev.gamma=-0.5: must be a finite number >= 0 (0 = single-vector)"),
    (float("inf"), "config.evals.dev.gamma=inf: must be a finite number >= 0"),
    (float("nan"), "config.evals.dev.gamma=nan: must be a finite number >= 0"),
    ("0.4", "config.evals.dev.gamma='0.4': must be a finite number >= 0"),
])
def test_the_dense_evaluator_refuses_a_gamma_that_is_not_a_finite_number_at_least_zero(gamma, message):
    section = ml_collections.ConfigDict({"kind": "fgd_dense", "every": 1, "split": "dev", "depth": 10, "gamma": gamma,
                                         "measures": "MRR@10", "relevance_level": 1, "batch_size": 4})
    inputs_ = types.SimpleNamespace(documents=types.SimpleNamespace(dataset=types.SimpleNamespace(
        qrels={"dev": {"q1": {"a": 1}}})))
    with pytest.raises(ConfigError, match=re.escape(message)):
        retrieval.build_dense_evaluator("dev", section, inputs_, mesh=None)
