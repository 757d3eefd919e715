"""FGD objective (eq. 13): hand-computed fine-grained KL on a fixture, and each Table 2 switch changes exactly the term
it names (the other terms of the metric dict are unchanged); multi-vector scores by hand."""
import numpy as np
import pytest

from distill_ret.fgd import objective

LAYOUT = objective.Layout(num_documents=2, num_passages=2, num_sentences=1, passage_negatives=1,
                          sentence_negatives=2)  # rows: 2 passage rows + 2 sentence rows


def _fixture():
    """One query with 1-D embeddings: every score is q * embedding = 1 * value."""
    queries = np.array([[1.0]], np.float32)  # [1, 1]
    documents = np.array([[[2.0], [1.0]]], np.float32)  # [1, docs, 1]: s(d+) = 2, s(d-) = 1
    pieces = np.zeros((1, 2, 4, 1), np.float32)  # [1, docs, rows, 1]
    pieces[0, 0, :, 0] = [1.0, 0.0, 3.0, 0.0]  # d+: passages 1, 0; sentence 3; (row 3 unused)
    pieces[0, 1, :, 0] = [0.5, 0.0, 1.0, 2.0]  # d-: negative passage 0.5 at row 0; negative sentences at rows 2, 3
    batch = {
        "document_valid": np.array([[True, True]]),
        "passage_valid": np.array([[True, True]]),
        "sentence_valid": np.array([[True]]),
        "passage_negatives": np.array([[[1, 0]]], np.int32), "passage_negative_valid": np.array([[True]]),
        "sentence_negatives": np.array([[[1, 2], [1, 3]]], np.int32),
        "sentence_negative_valid": np.array([[True, False]]),  # the second sentence negative is padding
        "teacher_passages": np.array([[0.0, 2.0]], np.float32),
        "teacher_passage_negatives": np.array([[0.0]], np.float32),
        "teacher_sentences": np.array([[1.0]], np.float32),
        "teacher_sentence_negatives": np.array([[5.0, 7.0]], np.float32),
        "teacher_documents": np.array([[0.0, 1.0]], np.float32),
        "distill": np.array([True]),
    }
    return queries, documents, pieces, batch


def _kl(teacher, student):
    p = np.exp(teacher) / np.exp(teacher).sum()
    q = np.exp(student) / np.exp(student).sum()
    return float(np.sum(p * np.log(p / q)))


def _terms(switches):
    loss, metrics = objective.fgd_loss(*_fixture(), LAYOUT, switches)
    values = {name: float(total) / float(count) for name, (total, count) in metrics.items()}
    return float(loss[0]) / float(loss[1]), values


def test_fine_grained_loss_equals_hand_values():
    loss, terms = _terms(objective.FgdSwitches(contrastive_weight=0.5, document_distillation=True))
    contrastive = -np.log(np.exp(2.0) / (np.exp(2.0) + np.exp(1.0)))
    passage = (_kl([0.0, 0.0], [1.0, 0.5]) + _kl([2.0, 0.0], [0.0, 0.5])) / 2  # two positive passages
    sentence = _kl([1.0, 5.0], [3.0, 1.0])  # the padded negative is left out
    document = _kl([0.0, 1.0], [2.0, 1.0])
    assert terms["contrastive"] == pytest.approx(contrastive, abs=1e-6)
    assert terms["passage_kl"] == pytest.approx(passage, abs=1e-6)
    assert terms["sentence_kl"] == pytest.approx(sentence, abs=1e-6)
    assert terms["document_kl"] == pytest.approx(document, abs=1e-6)
    assert terms["accuracy"] == 1.0
    assert loss == pytest.approx(0.5 * contrastive + passage + sentence + document, abs=1e-5)


@pytest.mark.parametrize("switch,removed", [("passage_distillation", "passage_kl"),
                                            ("sentence_distillation", "sentence_kl")])
def test_each_distillation_switch_removes_exactly_its_term(switch, removed):
    full_loss, full = _terms(objective.FgdSwitches())
    loss, ablated = _terms(objective.FgdSwitches(**{switch: False}))
    assert set(full) - set(ablated) == {removed}
    assert {name: full[name] for name in ablated} == ablated
    assert loss == pytest.approx(full_loss - full[removed], abs=1e-6)


def test_document_distillation_adds_exactly_eq5_and_no_distillation_leaves_contrastive():
    full_loss, full = _terms(objective.FgdSwitches())
    loss, with_document = _terms(objective.FgdSwitches(document_distillation=True))
    assert set(with_document) - set(full) == {"document_kl"}
    assert {name: with_document[name] for name in full} == full
    assert loss == pytest.approx(full_loss + with_document["document_kl"], abs=1e-6)
    none_loss, none = _terms(objective.FgdSwitches(passage_distillation=False, sentence_distillation=False))
    assert set(none) == {"contrastive", "accuracy"} and none_loss == pytest.approx(full["contrastive"], abs=1e-6)
    only_document, terms = _terms(objective.FgdSwitches(passage_distillation=False, sentence_distillation=False,
                                                        document_distillation=True))
    assert set(terms) == {"contrastive", "accuracy", "document_kl"}
    assert only_document == pytest.approx(full["contrastive"] + with_document["document_kl"], abs=1e-6)


def test_teacher_temperature_changes_only_the_distillation_terms():
    _, full = _terms(objective.FgdSwitches(document_distillation=True))
    _, sharp = _terms(objective.FgdSwitches(document_distillation=True, teacher_temperature=0.5))
    assert sharp["contrastive"] == full["contrastive"] and sharp["accuracy"] == full["accuracy"]
    assert sharp["document_kl"] == pytest.approx(_kl([0.0, 2.0], [2.0, 1.0]), abs=1e-6)  # teacher (0, 1) / 0.5
    assert sharp["sentence_kl"] == pytest.approx(_kl([2.0, 10.0], [3.0, 1.0]), abs=1e-6)
    passage = (_kl([0.0, 0.0], [1.0, 0.5]) + _kl([4.0, 0.0], [0.0, 0.5])) / 2
    assert sharp["passage_kl"] == pytest.approx(passage, abs=1e-6)


def test_undistilled_examples_add_only_their_contrastive_term():
    """fgd.distill_visible_only: an example with distill False keeps L_cl and drops every distillation term."""
    switches = objective.FgdSwitches(contrastive_weight=0.5, document_distillation=True)
    _, one = _terms(switches)
    queries, documents, pieces, batch = _fixture()
    pair = {name: np.concatenate([value, value]) for name, value in batch.items()}  # the example twice
    pair["distill"] = np.array([True, False])
    (total, count), metrics = objective.fgd_loss(np.concatenate([queries] * 2), np.concatenate([documents] * 2),
                                                 np.concatenate([pieces] * 2), pair, LAYOUT, switches)
    distilled = one["passage_kl"] + one["sentence_kl"] + one["document_kl"]
    assert float(count) == 2.0
    assert float(total) == pytest.approx(2 * 0.5 * one["contrastive"] + distilled, abs=1e-5)
    assert {name: float(metrics[name][1]) for name in ("contrastive", "passage_kl", "sentence_kl", "document_kl")} == {
        "contrastive": 2.0, "passage_kl": 1.0, "sentence_kl": 1.0, "document_kl": 1.0}


def test_multi_vector_scores_by_hand():
    scores = objective.multi_vector_scores(
        np.array([1.0, 2.0]), np.array([[0.5, 3.0], [1.0, 9.0]]), np.array([[True, True], [True, False]]),
        np.array([[2.0], [4.0]]), np.array([[True], [False]]), 0.4)
    np.testing.assert_allclose(scores, [1.0 + 0.4 * (3.0 + 2.0), 2.0 + 0.4 * 1.0], rtol=1e-6)
