"""Flax BERT: padding invariance, dropout switch, bfloat16, remat, config validation and FGD span embeddings
(eq. 7)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_helpers import random_params, max_abs_diff, padded_batch, tiny_config
from remat_helpers import saved_activations
from distill_ret.models.bert import Bert, BertConfig


@pytest.fixture(scope="module")
def model_and_params():
    config = tiny_config()
    ids, mask, types = padded_batch()
    return Bert(config), random_params(Bert(config), ids, mask, types, seed=11)


def _span_embeddings(model, params, last_layer_input, mask, span_mask):
    return model.apply({"params": params}, last_layer_input, jnp.asarray(mask), jnp.asarray(span_mask),
                       method=Bert.span_embeddings)


def test_padding_does_not_change_valid_positions(model_and_params):
    model, params = model_and_params
    ids, mask, types = padded_batch()
    reference = model.apply({"params": params}, ids, mask, types).last_hidden_state  # [batch, len, hidden]
    valid = mask.astype(bool)[..., None]
    rng = np.random.RandomState(1)
    noisy_ids = np.where(mask == 1, ids, rng.randint(1, 100, size=ids.shape))  # padded positions hold real tokens
    noisy_types = np.where(mask == 1, types, 1)
    noisy = model.apply({"params": params}, noisy_ids, mask, noisy_types).last_hidden_state
    assert max_abs_diff(np.where(valid, noisy, 0), np.where(valid, reference, 0)) < 1e-5
    assert max_abs_diff(noisy, reference) > 1e-2  # the padded positions themselves did change
    wider = model.apply({"params": params}, np.pad(ids, ((0, 0), (0, 4))), np.pad(mask, ((0, 0), (0, 4))),
                        np.pad(types, ((0, 0), (0, 4)))).last_hidden_state
    assert max_abs_diff(np.where(valid, wider[:, :12], 0), np.where(valid, reference, 0)) < 1e-5


def test_last_layer_input_feeds_the_last_layer(model_and_params):
    model, params = model_and_params
    ids, mask, types = padded_batch()
    output = model.apply({"params": params}, ids, mask, types)
    one_layer = Bert(tiny_config(num_hidden_layers=1))
    shallow = one_layer.apply({"params": {"embeddings": params["embeddings"], "layers_0": params["layers_0"]}},
                              ids, mask, types)
    assert max_abs_diff(output.last_layer_input, shallow.last_hidden_state) < 1e-6
    assert max_abs_diff(output.last_hidden_state, output.last_layer_input) > 1e-2


def test_span_equal_to_the_input_reproduces_the_document_cls(model_and_params):
    model, params = model_and_params
    ids, mask, types = padded_batch()
    output = model.apply({"params": params}, ids, mask, types)
    whole = np.repeat(mask[:, None, :].astype(bool), 3, axis=1)  # [batch, spans, len]
    spans = _span_embeddings(model, params, output.last_layer_input, mask, whole)
    assert spans.shape == (3, 3, 32)
    assert max_abs_diff(spans, np.repeat(output.last_hidden_state[:, None, 0], 3, axis=1)) < 1e-5


def test_subset_span_differs_and_matches_a_manual_recomputation(model_and_params):
    model, params = model_and_params
    ids, mask, types = padded_batch()
    output = model.apply({"params": params}, ids, mask, types)
    span = np.zeros((3, 3, ids.shape[1]), bool)
    span[:, 0, 1:3] = True  # tokens 1..2 of every document
    span[:, 1, :] = mask.astype(bool)
    span[:, 2, 0:3] = True
    spans = _span_embeddings(model, params, output.last_layer_input, mask, span)
    assert max_abs_diff(spans[:, 0], output.last_hidden_state[:, 0]) > 1e-2
    assert max_abs_diff(spans[:, 1], output.last_hidden_state[:, 0]) < 1e-5
    assert max_abs_diff(spans[:, 2], spans[:, 0]) > 1e-2  # adding [CLS] to the span changes it
    # Manual eq. 7 for the subset span: the last layer's softmax over tokens 1..2 only.
    layer = params["layers_1"]
    h = np.asarray(output.last_layer_input, np.float64)  # [batch, len, hidden]
    project = lambda x, name: (x @ np.asarray(layer["attention"][name]["kernel"])
                               + np.asarray(layer["attention"][name]["bias"]))
    q = project(h[:, :1], "query").reshape(3, 1, 4, 8)
    k = project(h[:, 1:3], "key").reshape(3, 2, 4, 8)
    v = project(h[:, 1:3], "value").reshape(3, 2, 4, 8)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    attended = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(3, 1, 32)

    def norm(x, name):
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
        return x * np.asarray(layer[name]["scale"]) + np.asarray(layer[name]["bias"])

    x = norm(h[:, :1] + project(attended, "out"), "attention_norm")
    inner = x @ np.asarray(layer["intermediate"]["kernel"]) + np.asarray(layer["intermediate"]["bias"])
    gelu = np.asarray(jax.nn.gelu(jnp.asarray(inner), approximate=False), np.float64)
    expected = norm(x + gelu @ np.asarray(layer["output"]["kernel"]) + np.asarray(layer["output"]["bias"]),
                    "output_norm")
    assert max_abs_diff(spans[:, 0], expected[:, 0]) < 1e-5


def test_padding_never_contributes_to_spans(model_and_params):
    model, params = model_and_params
    ids, mask, types = padded_batch()
    output = model.apply({"params": params}, ids, mask, types)
    padding = ~mask.astype(bool)
    span = np.zeros((3, 3, ids.shape[1]), bool)
    span[:, 0, :3] = True
    span[:, 1] = mask.astype(bool)
    reference = _span_embeddings(model, params, output.last_layer_input, mask, span)
    garbage = np.where(padding[..., None], 100.0, np.asarray(output.last_layer_input))  # padded rows overwritten
    span_with_padding = span | padding[:, None, :]  # spans that also mark padded positions
    perturbed = _span_embeddings(model, params, jnp.asarray(garbage, jnp.float32), mask, span_with_padding)
    assert max_abs_diff(perturbed[:, :2], reference[:, :2]) < 1e-6
    # The third span is empty except for padding: it attends to [CLS] alone, whatever the padding holds.
    assert np.all(np.isfinite(np.asarray(perturbed[:, 2])))
    cls_only = np.zeros_like(span)
    cls_only[:, :, 0] = True
    expected = _span_embeddings(model, params, output.last_layer_input, mask, cls_only)
    assert max_abs_diff(perturbed[:, 2], expected[:, 0]) < 1e-6


def test_dropout_only_when_not_deterministic():
    config = tiny_config()
    ids, mask, types = padded_batch()
    params = random_params(Bert(config), ids, mask, types)
    apply = lambda seed, deterministic: Bert(config).apply(
        {"params": params}, ids, mask, types, deterministic=deterministic, rngs={"dropout": jax.random.PRNGKey(seed)}
    ).last_hidden_state
    assert max_abs_diff(apply(0, True), apply(1, True)) == 0.0
    assert max_abs_diff(apply(0, False), apply(1, False)) > 1e-2
    no_dropout = Bert(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    assert max_abs_diff(no_dropout.apply({"params": params}, ids, mask, types, deterministic=False,
                                         rngs={"dropout": jax.random.PRNGKey(0)}).last_hidden_state,
                        apply(0, True)) < 1e-6


def test_bfloat16_compute_is_close_to_float32(model_and_params):
    model, params = model_and_params
    ids, mask, types = padded_batch()
    f32 = model.apply({"params": params}, ids, mask, types).last_hidden_state
    bf16 = Bert(tiny_config(dtype="bfloat16")).apply({"params": params}, ids, mask, types).last_hidden_state
    assert bf16.dtype == jnp.bfloat16
    cosine = jnp.sum(f32 * bf16, -1) / (jnp.linalg.norm(f32, axis=-1)
                                        * jnp.linalg.norm(bf16.astype(jnp.float32), axis=-1))
    assert float(jnp.min(cosine)) > 0.99



def test_remat_changes_memory_not_parameters_outputs_or_gradients():
    config = tiny_config()
    ids, mask, types = padded_batch()
    params = random_params(Bert(config), ids, mask, types, seed=3)
    remat = config.replace(remat=True)
    shapes = lambda model: jax.tree.map(lambda leaf: leaf.shape, jax.eval_shape(
        model.init, jax.random.PRNGKey(0), jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))["params"])
    assert shapes(Bert(remat)) == shapes(Bert(config))  # same names: HF mapping and checkpoints are unchanged

    def loss(model_config, params):  # documents and spans (eq. 7), with dropout: the remat path draws the same masks
        model = Bert(model_config)
        rngs = {"dropout": jax.random.PRNGKey(5)}
        output = model.apply({"params": params}, ids, mask, types, deterministic=False, rngs=rngs)
        spans = model.apply({"params": params}, output.last_layer_input, jnp.asarray(mask),
                            jnp.asarray(mask[:, None, :] * np.array([1, 0] * 6)), deterministic=False, rngs=rngs,
                            method=Bert.span_embeddings)  # [batch, 1, hidden]: every other token
        return jnp.sum(output.last_hidden_state[:, 0] ** 2) + jnp.sum(jnp.tanh(spans))

    value, grads = jax.jit(jax.value_and_grad(functools.partial(loss, config)))(params)
    remat_value, remat_grads = jax.jit(jax.value_and_grad(functools.partial(loss, remat)))(params)
    assert float(jnp.abs(value - remat_value)) < 1e-5
    assert max(jax.tree.leaves(jax.tree.map(max_abs_diff, grads, remat_grads))) < 1e-5
    saved = lambda model_config: saved_activations(functools.partial(loss, model_config), params)
    assert saved(remat) < saved(config) / 2  # most activations are recomputed, not kept for the backward pass
    assert BertConfig.from_hf(remat.to_hf()) == config  # a compute field: not part of the Hugging Face config
    assert "remat" not in remat.to_hf().to_dict()

def test_config_validation():
    with pytest.raises(ValueError, match="hidden_act"):
        tiny_config(hidden_act="swish")
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(num_attention_heads=5)
    with pytest.raises(ValueError, match="compute dtype"):
        tiny_config(dtype="float16")
    config = tiny_config(max_position_embeddings=8)
    ids = np.ones((1, 9), np.int32)
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=8"):
        Bert(config).init(jax.random.PRNGKey(0), ids, ids)
    assert isinstance(hash(config), int) and jax.tree_util.tree_leaves(config) == []
    assert BertConfig.from_hf(config.to_hf()) == config
