"""FGD mining: document negatives exclude every judged-relevant document; piece negatives come only from negative
documents (passages) and from the chosen negative passages (sentences), by the student's scores, the same on 8 devices
as on 1; the negatives file round-trips and a stale one is refused."""
import jax
import numpy as np
import pytest

from bert_helpers import random_params, tiny_config
from distill_ret.data.segment import SegmentedDocument
from distill_ret.fgd import mining, spans
from distill_ret.models import heads
from distill_ret.models.bert import Bert
from distill_ret.training import partitioning


def test_document_negatives_never_include_a_judged_relevant_document():
    rng = np.random.RandomState(0)
    queries, documents = rng.randn(5, 8).astype(np.float32), rng.randn(40, 8).astype(np.float32)
    doc_ids = [f"d{i}" for i in range(40)]
    order = np.argsort(-(queries @ documents.T), axis=1, kind="stable")  # [5, 40] brute force
    qrels = {"q0": {doc_ids[order[0, 0]]: 2, doc_ids[order[0, 2]]: 1, doc_ids[order[0, 3]]: 0},
             "q1": {doc_ids[i]: 1 for i in order[1, :6]}, "q3": {"d39": 0}}
    negatives = mining.document_negatives([f"q{i}" for i in range(5)], queries, doc_ids, documents, qrels, 4)
    assert negatives["q0"] == [doc_ids[i] for i in order[0, [1, 3, 4, 5]]]  # gain 0 is not relevant: kept
    assert negatives["q1"] == [doc_ids[i] for i in order[1, 6:10]]
    assert negatives["q2"] == [doc_ids[i] for i in order[2, :4]]
    for qid, docs in negatives.items():
        assert len(docs) == 4 and not set(docs) & mining.relevant(qrels.get(qid, {}))


def _pieces(passages, passage_valid, sentences, sentence_valid, owners):
    return mining.DocumentPieces(np.zeros(2, np.float32), np.asarray(passages, np.float32), np.asarray(passage_valid),
                                 np.asarray(sentences, np.float32), np.asarray(sentence_valid),
                                 np.asarray(owners, np.int32))


def test_piece_negatives_are_hierarchical_by_hand():
    query = np.array([1.0, 0.0], np.float32)  # score = first coordinate
    pieces = {
        "pos": _pieces([[9, 0]], [True], [[9, 0]], [True], [0]),
        "a": _pieces([[3, 0], [5, 0], [8, 0]], [True, True, False],  # passage 2 truncated away: never chosen
                     [[1, 0], [7, 0], [2, 0], [6, 0], [9, 0]], [True, True, True, True, True], [0, 1, 1, 2, 2]),
        "b": _pieces([[4, 0], [1, 0]], [True, True], [[9, 0], [3, 0], [8, 0]], [True, True, False], [1, 0, 0]),
    }
    passages, sentences = mining.piece_negatives(query, ["a", "b"], pieces, num_passages=2, num_sentences=3)
    assert passages == [("a", 1), ("b", 0)]
    # sentences of a's passage 1 (a1: 7, a2: 2) and b's passage 0 (b1: 3; b2 invalid); b0 (9) is in passage 1
    assert sentences == [("a", 1), ("b", 1), ("a", 2)]
    passages, sentences = mining.piece_negatives(query, ["b"], pieces, num_passages=5, num_sentences=5)
    assert passages == [("b", 0), ("b", 1)] and sentences == [("b", 0), ("b", 1)]


def test_hierarchical_negatives_use_the_student_span_scores():
    config = tiny_config()
    rng = np.random.RandomState(3)

    def document(length, passage_spans, sentence_spans, owners):
        ids = rng.randint(3, 100, size=length).astype(np.int32)
        ids[0], ids[-1] = 1, 2
        return SegmentedDocument(ids, np.asarray(passage_spans, np.int32), np.asarray(sentence_spans, np.int32),
                                 np.asarray(owners, np.int32), (), ())

    segmented = {"a": document(12, [(1, 6), (6, 11)], [(1, 3), (3, 6), (6, 11)], [0, 0, 1]),
                 "b": document(9, [(1, 8)], [(1, 4), (4, 8)], [0, 0]),
                 "c": document(10, [(1, 5), (5, 9)], [(1, 5), (5, 9)], [0, 1])}
    model = heads.BiEncoder(config)
    params = heads.bi_encoder_params({"bert": random_params(Bert(config), np.ones((1, 4), np.int32),
                                                            np.ones((1, 4), np.int32), seed=2, scale=0.2)})
    pieces = mining.document_piece_embeddings(model, params, segmented, length=16, batch_size=2)
    batch = spans.batch_documents([segmented["a"]], length=16, num_passages=2, num_sentences=3)
    _, direct = spans.batch_embeddings(model, params, batch)
    np.testing.assert_allclose(pieces["a"].passages, np.asarray(direct[0, :2]), atol=1e-5)
    np.testing.assert_allclose(pieces["a"].sentences, np.asarray(direct[0, 2:]), atol=1e-5)
    reference = model.apply({"params": params}, batch.input_ids, batch.attention_mask,
                            method=heads.BiEncoder.encode_documents)
    np.testing.assert_allclose(pieces["a"].document, np.asarray(reference[0]), atol=1e-5)
    query = rng.randn(1, config.hidden_size).astype(np.float32)
    negatives = mining.hierarchical_negatives(["q"], query, {"q": ["a", "c"]}, pieces, num_passages=2,
                                              num_sentences=2)["q"]
    assert negatives.documents == ("a", "c")
    scored = sorted(((float(pieces[d].passages[i] @ query[0]), (d, i)) for d in "ac" for i in range(2)),
                    key=lambda item: -item[0])
    assert list(negatives.passages) == [piece for _, piece in scored[:2]]
    for doc_id, sentence in negatives.sentences:
        assert (doc_id, int(pieces[doc_id].sentence_passage[sentence])) in set(negatives.passages)


def test_negatives_file_round_trips_and_a_stale_one_is_refused(tmp_path):
    path = tmp_path / "inputs" / "negatives.jsonl"
    negatives = {"q1": mining.QueryNegatives(("d2", "d3"), (("d2", 0),), (("d2", 1), ("d2", 0))),
                 "q 2": mining.QueryNegatives(("d1",))}
    digest = mining.data_digest({"d1": "text"}, {"q1": "query"}, {"q1": {"d1": 1}})
    assert digest != mining.data_digest({"d1": "text!"}, {"q1": "query"}, {"q1": {"d1": 1}})
    expected = mining.fingerprint("params-abc", digest, {"num_negatives": 2})
    mining.write_negatives(path, negatives, expected)
    assert mining.read_negatives(path, expected) == negatives
    assert sorted(p.name for p in path.parent.iterdir()) == ["negatives.jsonl"]  # no temporary file left
    other = mining.fingerprint("params-xyz", digest, {"num_negatives": 2})
    with pytest.raises(mining.StaleNegativesError, match=r"negatives.jsonl: .*student: file has 'params-abc'"):
        mining.read_negatives(path, other)
    (tmp_path / "bad.jsonl").write_text('{"format": "other"}\n')
    with pytest.raises(mining.formats.FormatError, match="bad.jsonl"):
        mining.read_negatives(tmp_path / "bad.jsonl")


def _mesh(num_devices: int):
    return partitioning.create_mesh({"data": -1, "fsdp": 1, "model": 1}, jax.devices()[:num_devices])


def test_hierarchical_negatives_on_8_devices_equal_1_device_and_a_brute_force():
    """Random pieces (some truncated away) of 9 documents; every query's pools scored over the sharded piece
    matrices give the same choice on 8 devices as on 1, and the same as a float64 sort of the pools by hand."""
    rng = np.random.RandomState(7)
    pieces = {}
    for doc in range(9):
        passages, sentences = rng.randint(1, 5), rng.randint(1, 9)
        pieces[f"d{doc}"] = mining.DocumentPieces(
            rng.randn(6).astype(np.float32), rng.randn(passages, 6).astype(np.float32), rng.rand(passages) < 0.8,
            rng.randn(sentences, 6).astype(np.float32), rng.rand(sentences) < 0.8,
            rng.randint(0, passages, size=sentences).astype(np.int32))
    query_ids = [f"q{i}" for i in range(5)]
    queries = rng.randn(5, 6).astype(np.float32)
    negatives = {qid: [f"d{i}" for i in rng.choice(9, size=3, replace=False)] for qid in query_ids}
    results = [mining.hierarchical_negatives(query_ids, queries, negatives, pieces, 3, 4, mesh=_mesh(devices))
               for devices in (8, 1)]
    assert results[0] == results[1]
    for qid, query in zip(query_ids, queries.astype(np.float64)):
        pool = [(d, i) for d in negatives[qid] for i in np.flatnonzero(pieces[d].passage_valid)]
        scored = sorted(pool, key=lambda p: -(pieces[p[0]].passages[p[1]].astype(np.float64) @ query))
        assert list(results[0][qid].passages) == scored[:3]
        chosen = set(scored[:3])
        pool = [(d, i) for d in dict.fromkeys(d for d, _ in scored[:3])
                for i in np.flatnonzero(pieces[d].sentence_valid) if (d, int(pieces[d].sentence_passage[i])) in chosen]
        scored = sorted(pool, key=lambda p: -(pieces[p[0]].sentences[p[1]].astype(np.float64) @ query))
        assert list(results[0][qid].sentences) == scored[:4]
        assert results[0][qid].documents == tuple(negatives[qid])
