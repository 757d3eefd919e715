"""Layer math against plain numpy: norms, attention masking, and the decode cache equal to full causal attention."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from distill_ret.models import layers


def test_layer_norm_and_rms_norm_match_numpy():
    x = np.random.RandomState(0).randn(2, 3, 8).astype(np.float32)
    ln = layers.LayerNorm(epsilon=1e-6)
    out = ln.apply(ln.init(jax.random.PRNGKey(0), x), x)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    rms = layers.RMSNorm(epsilon=1e-6)
    out = rms.apply(rms.init(jax.random.PRNGKey(0), x), x)
    np.testing.assert_allclose(out, x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6), atol=1e-5)


def test_attention_ignores_masked_keys():
    rng = np.random.RandomState(1)
    q, k, v = (jnp.asarray(rng.randn(1, 2, 2, 4), jnp.float32) for _ in range(3))
    mask = jnp.array([True, False])[None, None, None, :]
    out = layers.dot_product_attention(q, k, v, mask=mask)
    # Only key 0 is visible: every query attends to it with probability 1.
    np.testing.assert_allclose(out, jnp.broadcast_to(v[:, :1], out.shape), atol=1e-6)


def test_parameters_carry_logical_axes():
    mha = layers.MultiHeadAttention(num_heads=2, head_dim=4, out_features=8)
    x = jnp.ones((1, 3, 8))
    specs = nn.get_partition_spec(mha.init(jax.random.PRNGKey(0), x, x))["params"]
    assert tuple(specs["query"]["kernel"]) == ("embed", "joined_kv")
    assert tuple(specs["out"]["kernel"]) == ("joined_kv", "embed")
    assert tuple(specs["out"]["bias"]) == ("embed",)


def test_decode_cache_equals_full_causal_attention():
    mha = layers.MultiHeadAttention(num_heads=2, head_dim=4, out_features=8, use_bias=False, scale_logits=False)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 8))
    bias = jax.random.normal(jax.random.PRNGKey(2), (1, 2, 5, 5))
    params = mha.init(jax.random.PRNGKey(0), x, x)["params"]
    full = mha.apply({"params": params}, x, x, mask=layers.make_causal_mask(5), bias=bias)
    cache = mha.init(jax.random.PRNGKey(0), x, x, decode=True)["cache"]
    steps = []
    for t in range(5):
        out, mutated = mha.apply({"params": params, "cache": cache}, x[:, t:t + 1], x[:, t:t + 1],
                                 bias=bias, decode=True, mutable=["cache"])
        cache = mutated["cache"]
        steps.append(out)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)
