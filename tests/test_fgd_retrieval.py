"""FGD retrieval: single-vector runs are exact inner products; multi-vector adds γ·(max passage + max sentence) over the
valid pieces only, which can reorder documents."""
import numpy as np

from distill_ret.fgd import mining, retrieval


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
