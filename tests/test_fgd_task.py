"""The fgd task's loss on a hand-built batch: each representation switch of Table 2 changes exactly what it names
(FG pooling and Separate Pieces change the piece terms and leave the contrastive term; All pooling mean-pools the
documents too), and the student takes its architecture from the MiniLM folder and its compute fields (dtype,
remat) from the config."""
import jax
import numpy as np
import pytest

from bert_helpers import random_params, tiny_config
from configs import common, fgd as fgd_config
from distill_ret.data.segment import SegmentedDocument
from distill_ret.fgd import objective, spans, task
from distill_ret.models import heads
from distill_ret.models.bert import Bert

LAYOUT = objective.Layout(num_documents=2, num_passages=2, num_sentences=2, passage_negatives=1,
                          sentence_negatives=1)
CONFIG = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _document(length, passage_spans, sentence_spans, owners, seed):
    ids = np.random.RandomState(seed).randint(3, 100, size=length).astype(np.int32)
    ids[0], ids[-1] = 1, 2
    return SegmentedDocument(ids, np.asarray(passage_spans, np.int32), np.asarray(sentence_spans, np.int32),
                             np.asarray(owners, np.int32), (), ())


@pytest.fixture(scope="module")
def batch():
    positive = _document(14, [(1, 7), (7, 13)], [(1, 4), (4, 7), (7, 13)], [0, 0, 1], seed=0)
    negative = _document(11, [(1, 5), (5, 10)], [(1, 5), (5, 10)], [0, 1], seed=1)
    documents = spans.batch_documents([positive, negative], length=16, num_passages=LAYOUT.passage_rows,
                                      num_sentences=LAYOUT.sentence_rows, passages=[None, [1]],
                                      sentences=[None, [1]],
                                      separate=spans.PieceShape(3, 8, 3, 8))
    query = np.zeros((1, 8), np.int32)
    query[0, :5] = [1, 17, 23, 42, 2]
    example = {
        "query_input_ids": query, "query_attention_mask": (query > 0).astype(np.int32),
        "document_input_ids": documents.input_ids[None], "document_attention_mask": documents.attention_mask[None],
        "span_mask": documents.span_mask[None], "document_valid": np.array([[True, True]]),
        "passage_valid": documents.piece_valid[None, 0, :2], "sentence_valid": documents.piece_valid[None, 0, 2:],
        "passage_negatives": np.array([[[1, 0]]], np.int32), "passage_negative_valid": np.array([[True]]),
        "sentence_negatives": np.array([[[1, 2]]], np.int32), "sentence_negative_valid": np.array([[True]]),
        "teacher_passages": np.array([[1.0, -1.0]], np.float32), "teacher_passage_negatives": np.array([[0.5]]),
        "teacher_sentences": np.array([[2.0, 0.0]], np.float32), "teacher_sentence_negatives": np.array([[1.0]]),
        "teacher_documents": np.array([[1.0, 0.0]], np.float32), "distill": np.array([True]),
        **{f"separate_{name}": value[None] for name, value in documents.separate.arrays().items()},
    }
    return {name: np.asarray(value) for name, value in example.items()}


@pytest.fixture(scope="module")
def params():
    bert = random_params(Bert(CONFIG), np.ones((1, 4), np.int32), np.ones((1, 4), np.int32), seed=4, scale=0.2)
    return heads.bi_encoder_params({"bert": bert})


def _metrics(batch, params, representation, pooling="cls"):
    model = heads.BiEncoder(CONFIG, pooling=pooling)
    loss_fn = task.make_loss_fn(model, LAYOUT, objective.FgdSwitches(document_distillation=True), representation)
    _, metrics = loss_fn(params, batch, jax.random.PRNGKey(0))
    return {name: float(total) / float(count) for name, (total, count) in metrics.items()}


@pytest.mark.parametrize("representation", ["fg_pooling", "separate"])
def test_piece_representation_switches_change_only_the_piece_terms(batch, params, representation):
    reference = _metrics(batch, params, "global")
    ablated = _metrics(batch, params, representation)
    assert set(ablated) == set(reference)
    for name in ("contrastive", "accuracy", "document_kl"):  # the document embedding is the same [CLS]
        assert ablated[name] == pytest.approx(reference[name], abs=1e-6)
    for name in ("passage_kl", "sentence_kl"):
        assert abs(ablated[name] - reference[name]) > 1e-4


def test_all_pooling_mean_pools_documents_and_pieces(batch, params):
    reference = _metrics(batch, params, "fg_pooling")
    all_pooling = _metrics(batch, params, "all_pooling", pooling="mean")
    for name in ("contrastive", "document_kl"):  # the documents are mean-pooled now
        assert abs(all_pooling[name] - reference[name]) > 1e-4
    model = heads.BiEncoder(CONFIG, pooling="mean")
    queries = model.apply({"params": params}, batch["query_input_ids"], batch["query_attention_mask"],
                          method=heads.BiEncoder.encode_queries)
    documents = model.apply({"params": params}, batch["document_input_ids"][0], batch["document_attention_mask"][0],
                            method=heads.BiEncoder.encode_documents)
    scores = np.asarray(queries @ documents.T)[0]  # [2]
    expected = -np.log(np.exp(scores[0]) / np.exp(scores).sum())
    assert all_pooling["contrastive"] == pytest.approx(float(expected), abs=1e-5)


def test_the_student_takes_the_architecture_from_minilm_and_the_compute_fields_from_the_config():
    config = fgd_config.get_config("pydocs")
    config.model.update(init_from=common.minilm_dir(), dtype="bfloat16", remat=True, hidden_size=8)
    student = task.inputs.student(config)
    bert = student.model.config
    assert (bert.hidden_size, bert.num_hidden_layers, bert.dtype, bert.remat) == (384, 6, "bfloat16", True)
    assert "remat" not in student.record.config  # the saved Hugging Face config
