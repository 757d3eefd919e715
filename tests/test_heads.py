"""Bi-encoder (tied/untied towers, [CLS]/mean pooling, normalisation, spans) and cross-encoder shapes."""
import jax.numpy as jnp
import numpy as np
import pytest

from bert_helpers import max_abs_diff, padded_batch, random_params, tiny_config
from distill_ret.models import heads
from distill_ret.models.bert import Bert


@pytest.fixture(scope="module")
def batch():
    return padded_batch(seed=4)


@pytest.fixture(scope="module")
def bert_params(batch):
    ids, mask, _ = batch
    return random_params(Bert(tiny_config()), ids, mask, seed=3)


def test_masked_mean_and_normalisation_by_hand():
    hidden = jnp.array([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]]])  # [1, 3, 2]
    np.testing.assert_allclose(heads.masked_mean(hidden, jnp.array([[1, 1, 0]])), [[2.0, 4.0]])
    np.testing.assert_allclose(heads.masked_mean(hidden, jnp.array([[0, 0, 0]])), [[0.0, 0.0]])
    np.testing.assert_allclose(heads.l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_tied_bi_encoder_pools_the_bert_output(batch, bert_params, pooling):
    ids, mask, _ = batch
    model = heads.BiEncoder(tiny_config(), pooling=pooling, normalize=True)
    params = heads.bi_encoder_params({"bert": bert_params})
    assert sorted(params) == ["encoder"]
    queries, documents = model.apply({"params": params}, ids, mask, ids, mask)
    hidden = np.asarray(Bert(tiny_config()).apply({"params": bert_params}, ids, mask).last_hidden_state)
    if pooling == "cls":
        expected = hidden[:, 0]
    else:
        expected = np.stack([hidden[row, : mask[row].sum()].mean(0) for row in range(len(ids))])
    expected = expected / np.linalg.norm(expected, axis=-1, keepdims=True)
    assert max_abs_diff(documents, expected) < 1e-5
    assert max_abs_diff(queries, documents) == 0.0
    assert queries.dtype == jnp.float32


def test_untied_towers_are_separate(batch, bert_params):
    ids, mask, _ = batch
    model = heads.BiEncoder(tiny_config(), tied=False)
    params = heads.bi_encoder_params({"bert": bert_params, "pooler": {}}, tied=False)
    assert sorted(params) == ["document_encoder", "query_encoder"]
    queries, documents = model.apply({"params": params}, ids, mask, ids, mask)
    assert max_abs_diff(queries, documents) == 0.0  # both towers start from the same checkpoint
    params["query_encoder"] = random_params(Bert(tiny_config()), ids, mask, seed=9)
    queries, documents_again = model.apply({"params": params}, ids, mask, ids, mask)
    assert max_abs_diff(queries, documents) > 1e-2 and max_abs_diff(documents_again, documents) == 0.0
    assert heads.bert_params_from_bi_encoder(params, "query")["bert"] is params["query_encoder"]
    assert heads.bert_params_from_bi_encoder(params, "document")["bert"] is params["document_encoder"]
    with pytest.raises(ValueError, match="tower must be one of"):
        heads.bert_params_from_bi_encoder(params, "passage")


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_document_spans_share_one_encoding(batch, bert_params, pooling):
    ids, mask, _ = batch
    model = heads.BiEncoder(tiny_config(), pooling=pooling, normalize=False)
    params = heads.bi_encoder_params({"bert": bert_params})
    span = np.zeros((3, 2, ids.shape[1]), bool)
    span[:, 0] = mask.astype(bool)
    span[:, 1, 1:3] = True
    documents, spans = model.apply({"params": params}, ids, mask, span,
                                   method=heads.BiEncoder.encode_documents_with_spans)
    assert spans.shape == (3, 2, 32) and spans.dtype == jnp.float32
    assert max_abs_diff(spans[:, 0], documents) < 1e-5
    assert max_abs_diff(documents,
                        model.apply({"params": params}, ids, mask, method=heads.BiEncoder.encode_documents)) == 0.0
    if pooling == "mean":
        hidden = np.asarray(Bert(tiny_config()).apply({"params": bert_params}, ids, mask).last_hidden_state)
        assert max_abs_diff(spans[:, 1], hidden[:, 1:3].mean(1)) < 1e-5
    else:
        assert max_abs_diff(spans[:, 1], documents) > 1e-2


def test_cross_encoder_scores_shape(batch):
    ids, mask, types = batch
    model = heads.CrossEncoder(tiny_config(), num_labels=1)
    params = random_params(model, ids, mask, types)
    assert sorted(params) == ["bert", "classifier", "pooler"]
    scores = model.apply({"params": params}, ids, mask, types)
    assert scores.shape == (3, 1) and scores.dtype == jnp.float32


def test_bad_pooling_is_rejected(batch):
    ids, mask, _ = batch
    with pytest.raises(ValueError, match="pooling must be one of"):
        heads.BiEncoder(tiny_config(), pooling="max").init({}, ids, mask, ids, mask)
