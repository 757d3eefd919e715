"""The Flax T5 on its own: position buckets against transformers, cache == full decoding, cache maps for beams,
dropout, bfloat16 against float32, remat, logical axes on every parameter, and the config conversion."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from transformers.models.t5.modeling_t5 import T5Attention

from distill_ret.models import t5
from remat_helpers import saved_activations

TINY = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=20)
VARIANTS = {
    "v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}
# bfloat16 compute against float32 on the same params: max |logit difference| / max |logit|.
# Measured 0.5-1.2% on these configs over 3 seeds (max |logit| 3-7, max |difference| 0.028-0.043).
BF16_RELATIVE_TOLERANCE = 0.03


def make_inputs(config: t5.T5Config, batch: int, src_len: int, tgt_len: int, seed: int = 0):
    """Encoder ids with trailing padding in the first row, decoder ids starting with the start token."""
    rng = np.random.RandomState(seed)
    encoder_ids = rng.randint(2, config.vocab_size, size=(batch, src_len)).astype(np.int32)
    encoder_ids[0, src_len // 2:] = config.pad_token_id
    labels = rng.randint(2, config.vocab_size, size=(batch, tgt_len)).astype(np.int32)
    return encoder_ids, np.asarray(t5.shift_right(labels, config.decoder_start_token_id))


def init_params(config, encoder_ids, decoder_ids, seed=0):
    init = jax.jit(t5.T5(config).init)
    return nn.unbox(init(jax.random.PRNGKey(seed), encoder_ids, decoder_ids)["params"])


@functools.cache
def tiny_params(variant: str):
    """Random params of the tiny config, initialised once per variant for the whole module."""
    config = t5.T5Config(**TINY, **VARIANTS[variant])
    return config, init_params(config, *make_inputs(config, batch=1, src_len=4, tgt_len=3))


@functools.cache
def forward(config):
    """Jitted (params, encoder_ids, decoder_ids) -> logits."""
    return jax.jit(lambda params, encoder_ids, decoder_ids: t5.T5(config).apply({"params": params}, encoder_ids,
                                                                                   decoder_ids))


@functools.cache
def decode_step(config):
    """Jitted one-token decoder call: (params, cache, encoded, encoder_ids, token [batch]) -> (logits, cache)."""

    @jax.jit
    def step(params, cache, encoded, encoder_ids, token):
        logits, mutated = t5.T5(config).apply({"params": params, "cache": cache}, encoded, encoder_ids, token[:, None],
                                              decode=True, method=t5.T5.decode, mutable=["cache"])
        return logits[:, 0], mutated["cache"]  # [batch, vocab]

    return step


@functools.cache
def encoder(config):
    return jax.jit(lambda params, ids: t5.T5(config).apply({"params": params}, ids, method=t5.T5.encode))


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20)])
def test_relative_position_buckets_match_transformers(bidirectional, num_buckets, max_distance):
    query_length, key_length = 150, 300
    relative = torch.arange(key_length)[None, :] - torch.arange(query_length)[:, None]
    expected = T5Attention._relative_position_bucket(relative, bidirectional, num_buckets, max_distance).numpy()
    buckets = t5.relative_position_buckets(query_length, key_length, bidirectional=bidirectional,
                                           num_buckets=num_buckets, max_distance=max_distance)
    np.testing.assert_array_equal(buckets, expected)


def test_shift_right():
    labels = jnp.array([[5, 6, 7, 1], [8, 1, 0, 0]])
    np.testing.assert_array_equal(t5.shift_right(labels, 0), [[0, 5, 6, 7], [0, 8, 1, 0]])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_decoding_equals_full_decoding(variant):
    config, params = tiny_params(variant)
    encoder_ids, decoder_ids = make_inputs(config, batch=2, src_len=6, tgt_len=5)
    full = forward(config)(params, encoder_ids, decoder_ids)  # [batch, tgt, vocab]
    encoded = encoder(config)(params, encoder_ids)  # [batch, src, d_model]
    step = decode_step(config)
    cache = t5.init_cache(config, batch_size=2, max_decode_length=5)
    for position in range(5):
        logits, cache = step(params, cache, encoded, encoder_ids, decoder_ids[:, position])
        np.testing.assert_allclose(logits, full[:, position], atol=1e-5, rtol=0, err_msg=f"position {position}")


def test_map_cache_expands_and_reorders_sequences_like_the_batch():
    """Beam search needs: repeat each sequence's cache per beam, then gather beams; cache_index stays scalar."""
    config, params = tiny_params("v1.1")
    encoder_ids, decoder_ids = make_inputs(config, batch=2, src_len=6, tgt_len=5)
    step = decode_step(config)

    def run(cache, encoder_ids, decoder_ids):
        encoded = encoder(config)(params, encoder_ids)
        steps = []
        for position in range(decoder_ids.shape[1]):
            logits, cache = step(params, cache, encoded, encoder_ids, decoder_ids[:, position])
            steps.append(logits)
        return jnp.stack(steps, axis=1), cache  # [batch, len, vocab]

    _, cache = run(t5.init_cache(config, 2, 5), encoder_ids, decoder_ids[:, :2])
    beams = t5.map_cache(lambda x: jnp.repeat(x, 3, axis=0), cache)  # [batch * 3, ...]
    order = np.array([5, 0, 3, 1, 4, 2])
    gathered = t5.map_cache(lambda x: x[order], beams)
    indices = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(gathered) if path[-1].key == "cache_index"]
    assert indices and all(index.shape == () and int(index) == 2 for index in indices)
    expanded_ids = np.repeat(encoder_ids, 3, axis=0)[order]
    expanded_dec = np.repeat(decoder_ids, 3, axis=0)[order]
    logits, _ = run(gathered, expanded_ids, expanded_dec[:, 2:])
    reference = forward(config)(params, expanded_ids, expanded_dec)  # [batch * 3, tgt, vocab]
    np.testing.assert_allclose(logits, reference[:, 2:], atol=1e-5, rtol=0)


def test_dropout_uses_the_dropout_rng_only_when_not_deterministic():
    config, params = tiny_params("v1.0")
    config = config.replace(dropout_rate=0.3)
    encoder_ids, _ = make_inputs(config, batch=2, src_len=6, tgt_len=5)
    # The encoder's dropout sites (embeddings, attention, MLP, residuals, output) are those of the decoder too.
    apply = jax.jit(lambda seed, deterministic: t5.T5(config).apply(
        {"params": params}, encoder_ids, deterministic=deterministic, rngs={"dropout": jax.random.PRNGKey(seed)},
        method=t5.T5.encode,
    ), static_argnums=1)
    np.testing.assert_array_equal(apply(1, True), apply(2, True))
    np.testing.assert_array_equal(apply(1, False), apply(1, False))
    assert np.abs(apply(1, False) - apply(1, True)).max() > 1e-2
    assert np.abs(apply(1, False) - apply(2, False)).max() > 1e-2


@pytest.mark.parametrize("size,variant", [("tiny", "v1.0"), ("small", "v1.1")])
def test_bfloat16_compute_stays_close_to_float32(size, variant):
    shapes = dict(tiny=TINY, small=dict(vocab_size=256, d_model=128, d_kv=16, d_ff=256, num_layers=3,
                                        num_decoder_layers=3, num_heads=8))
    config = t5.T5Config(**shapes[size], **VARIANTS[variant])
    encoder_ids, decoder_ids = make_inputs(config, batch=2, src_len=16, tgt_len=8)
    params = tiny_params(variant)[1] if size == "tiny" else init_params(config, encoder_ids, decoder_ids)
    f32 = forward(config)(params, encoder_ids, decoder_ids)
    bf16 = forward(config.replace(dtype="bfloat16"))(params, encoder_ids, decoder_ids)
    assert bf16.dtype == jnp.float32  # logits come back in float32 for the loss
    scale = float(jnp.abs(f32).max())
    difference = float(jnp.abs(bf16 - f32).max())
    assert scale > 1.0
    assert 0.0 < difference <= BF16_RELATIVE_TOLERANCE * scale, (difference, scale)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_remat_changes_memory_not_parameters_outputs_or_gradients(variant):
    config, params = tiny_params(variant)
    config = config.replace(dropout_rate=0.2)
    remat = config.replace(remat=True)
    encoder_ids, decoder_ids = make_inputs(config, batch=2, src_len=6, tgt_len=5)
    shapes = lambda model_config: jax.tree.map(lambda leaf: leaf.shape, jax.eval_shape(
        t5.T5(model_config).init, jax.random.PRNGKey(0), encoder_ids, decoder_ids)["params"])
    assert shapes(remat) == shapes(config)  # same names: HF mapping and checkpoints are unchanged

    def loss(model_config, params):  # with dropout: the remat path draws the same masks
        logits = t5.T5(model_config).apply({"params": params}, encoder_ids, decoder_ids, deterministic=False,
                                           rngs={"dropout": jax.random.PRNGKey(3)})  # [batch, tgt, vocab]
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[..., 7])

    value, grads = jax.jit(jax.value_and_grad(functools.partial(loss, config)))(params)
    remat_value, remat_grads = jax.jit(jax.value_and_grad(functools.partial(loss, remat)))(params)
    np.testing.assert_allclose(remat_value, value, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0), remat_grads, grads)
    saved = lambda model_config: saved_activations(functools.partial(loss, model_config), params)
    assert saved(remat) < saved(config) / 2  # most activations are recomputed, not kept for the backward pass
    step = decode_step(remat)  # decoding (no gradients) runs the plain layers with the cache
    encoded = encoder(remat)(params, encoder_ids)
    full = forward(config)(params, encoder_ids, decoder_ids)
    logits, _ = step(params, t5.init_cache(remat, batch_size=2, max_decode_length=5), encoded, encoder_ids,
                     decoder_ids[:, 0])
    np.testing.assert_allclose(logits, full[:, 0], atol=1e-5, rtol=0)
    assert t5.T5Config.from_hf(remat.to_hf()) == config  # a compute field: not part of the Hugging Face config

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_parameter_has_logical_axes(variant):
    config = t5.T5Config(**TINY, **VARIANTS[variant])
    encoder_ids, decoder_ids = make_inputs(config, batch=1, src_len=4, tgt_len=3)
    boxed = jax.eval_shape(t5.T5(config).init, jax.random.PRNGKey(0), encoder_ids, decoder_ids)["params"]
    specs = nn.get_partition_spec(boxed)
    leaves = jax.tree_util.tree_leaves_with_path(nn.unbox(boxed))
    spec_leaves = dict(jax.tree_util.tree_leaves_with_path(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
    ))
    assert len(leaves) == len(spec_leaves)
    for path, leaf in leaves:
        spec = spec_leaves[path]
        assert len(spec) == leaf.ndim and all(isinstance(name, str) for name in spec), (
            jax.tree_util.keystr(path), spec
        )
    assert tuple(specs["token_embedder"]["embedding"]) == ("vocab", "embed")
    assert tuple(specs["encoder"]["relpos_bias"]["rel_embedding"]) == ("relpos_buckets", "heads")
    assert tuple(specs["decoder"]["layers_1"]["mlp"]["wo"]["kernel"]) == ("mlp", "embed")
    assert ("logits_dense" in specs["decoder"]) == (variant == "v1.1")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_config_converts_to_and_from_transformers(variant):
    config = t5.T5Config(**TINY, **VARIANTS[variant], eos_token_id=3, dropout_rate=0.05)
    hf = config.to_hf()
    assert isinstance(hf, transformers.T5Config) and hf.dense_act_fn == ("relu" if variant == "v1.0" else "gelu_new")
    assert t5.T5Config.from_hf(hf) == config
    assert t5.T5Config.from_hf(hf, dtype="bfloat16", dropout_rate=0.0) == config.replace(dtype="bfloat16",
                                                                                         dropout_rate=0.0)
    assert hash(config) == hash(t5.T5Config.from_hf(hf)) and jax.tree_util.tree_leaves(config) == []


def test_unsupported_options_are_refused():
    with pytest.raises(ValueError, match="feed_forward_proj='gated-silu' is not supported"):
        t5.T5Config.from_hf(transformers.T5Config(feed_forward_proj="gated-silu"))
    with pytest.raises(ValueError, match="is_decoder=True"):
        t5.T5Config.from_hf(transformers.T5Config(is_decoder=True))
    with pytest.raises(ValueError, match="feed_forward_proj='gelu'"):
        t5.T5Config(**TINY, feed_forward_proj="gelu")
    with pytest.raises(ValueError, match="compute dtype"):
        t5.T5Config(**TINY, dtype="float16")
