"""Building blocks shared by T5 and BERT: dense, embedding, layer/RMS norms, multi-head attention, and the choice
of rematerialised (activation-checkpointed) layers.

Parameters are created in float32 and cast to the module's compute dtype (float32 or bfloat16) at use. Every
parameter carries logical axis names in the t5x vocabulary (batch, length, embed, mlp, heads, kv, joined_kv, vocab)
so `training/partitioning.py` can map them onto a device mesh. Attention supports an incremental key/value cache
(flax "cache" collection) for autoregressive decoding in the t5x style.
"""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# A large finite negative for masked logits: -inf would give NaN for fully masked rows.
NEG_INF = -1e10

# Model-config fields that say how to compute, not what the model is: never written to (or read from) a Hugging Face
# config, never compared between a checkpoint and a job config.
COMPUTE_FIELDS = ("dtype", "remat")

Initializer = Callable[..., jax.Array]


def dtype_from_name(name: str) -> jnp.dtype:
    """'float32' | 'bfloat16' -> the jnp dtype; anything else is an error."""
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"compute dtype must be 'float32' or 'bfloat16', got {name!r}")
    return jnp.dtype(name)


def layer_class(module_class: type[nn.Module], remat: bool, static_argnums: tuple[int, ...]) -> type[nn.Module]:
    """`module_class`, or with `remat` its `nn.remat` version: the layer's activations are recomputed in the
    backward pass instead of kept from the forward pass (memory for about one more forward's compute). Parameters,
    outputs and gradients are the same. `static_argnums` are the positions (self = 0) of the Python-value
    arguments, e.g. `deterministic`; remat traces every other argument."""
    return nn.remat(module_class, static_argnums=static_argnums) if remat else module_class


class Dense(nn.Module):
    """y = x @ kernel (+ bias) over the last axis; kernel [in, out] annotated with `kernel_axes`."""

    features: int
    kernel_axes: tuple[str, str]
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.normal(stddev=0.02)

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
            (inputs.shape[-1], self.features),
            jnp.float32,
        )
        # [..., in] @ [in, out] -> [..., out]
        outputs = jnp.dot(inputs.astype(self.dtype), jnp.asarray(kernel, self.dtype))
        if self.use_bias:
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros, self.kernel_axes[-1:]),
                (self.features,), jnp.float32,
            )
            outputs = outputs + jnp.asarray(bias, self.dtype)
        return outputs


class Embed(nn.Module):
    """Token embedding table [num_embeddings, features]; `attend` gives tied output logits."""

    num_embeddings: int
    features: int
    embedding_axes: tuple[str, str] = ("vocab", "embed")
    dtype: jnp.dtype = jnp.float32
    embedding_init: Initializer = nn.initializers.normal(stddev=0.02)

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(self.embedding_init, self.embedding_axes),
            (self.num_embeddings, self.features),
            jnp.float32,
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        # [batch, length] -> [batch, length, features]
        return jnp.take(jnp.asarray(self.embedding, self.dtype), ids, axis=0)

    def attend(self, query: jax.Array) -> jax.Array:
        # [batch, length, features] @ [vocab, features]^T -> [batch, length, vocab]
        return jnp.dot(query.astype(self.dtype), jnp.asarray(self.embedding, self.dtype).T)


class LayerNorm(nn.Module):
    """Standard layer norm (mean and variance in float32), scale and bias annotated ('embed',)."""

    epsilon: float = 1e-12
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (features,),
                           jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (features,),
                          jnp.float32)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        variance = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        normed = (x32 - mean) * jax.lax.rsqrt(variance + self.epsilon)
        return (normed * scale + bias).astype(self.dtype)


class RMSNorm(nn.Module):
    """T5 layer norm: no mean subtraction, no bias; variance in float32."""

    epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (x.shape[-1],),
                           jnp.float32)
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        return (x32 * jax.lax.rsqrt(variance + self.epsilon) * scale).astype(self.dtype)


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    scale_logits: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    dtype: jnp.dtype = jnp.float32,
) -> jax.Array:
    """Softmax attention. query [b, q, h, d], key/value [b, k, h, d], mask/bias broadcastable to [b, h, q, k].

    `mask` is boolean (True = may attend); `bias` is added to the logits (T5 relative positions). Softmax runs in
    float32. Returns [b, q, h, d].
    """
    if scale_logits:
        query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
    # Heads-major operands make both products plain batched matmuls (about twice as fast on CPU as "bqhd,bkhd").
    query, key, value = (x.transpose(0, 2, 1, 3) for x in (query, key, value))  # [batch, heads, len, head_dim]
    logits = jnp.einsum("bhqd,bhkd->bhqk", query, key).astype(jnp.float32)  # [batch, heads, q_len, kv_len]
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        # An additive mask fuses with the logits; fully masked rows stay finite (uniform), as with jnp.where.
        logits = logits + jnp.where(mask, 0.0, NEG_INF).astype(jnp.float32)
    # Softmax with the normalisation deferred to the [.., head_dim] output: one pass fewer over the
    # [q_len, kv_len] probabilities (attention about 3x faster on CPU); same values to float rounding.
    weights = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
    normaliser = jnp.sum(weights, axis=-1, keepdims=True)  # [batch, heads, q_len, 1]
    weights = weights.astype(dtype)
    if dropout_rng is not None and dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0).astype(dtype)
    attended = jnp.einsum("bhqk,bhkd->bhqd", weights, value) / normaliser  # [batch, heads, q_len, head_dim]
    return attended.astype(dtype).transpose(0, 2, 1, 3)  # [batch, q_len, heads, head_dim]


class MultiHeadAttention(nn.Module):
    """Multi-head attention with joined-head projections ([embed, heads*head_dim]) and an optional decode cache.

    With `decode=True` the module keeps `cached_key`, `cached_value` and `cache_index` in the "cache" collection:
    initialise it by calling once with full-length inputs (init), then feed one token per call; keys beyond the
    current index are masked and a full-length `bias` is sliced to the current query row, as in t5x.
    """

    num_heads: int
    head_dim: int
    out_features: int
    use_bias: bool = True
    scale_logits: bool = True
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.normal(stddev=0.02)
    # T5 initialises the query projection at a smaller scale (it does not scale the logits); None = kernel_init.
    query_kernel_init: Initializer | None = None

    def _projection(self, features: int, axes: tuple[str, str], name: str,
                    kernel_init: Initializer | None = None) -> Dense:
        return Dense(features, axes, use_bias=self.use_bias, dtype=self.dtype,
                     kernel_init=kernel_init or self.kernel_init, name=name)

    @nn.compact
    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_kv: jax.Array,
        *,
        mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
    ) -> jax.Array:
        joined = self.num_heads * self.head_dim
        batch, q_len = inputs_q.shape[:2]
        split = lambda x: x.reshape(x.shape[:2] + (self.num_heads, self.head_dim))  # [b, l, h*d] -> [b, l, h, d]
        query = split(self._projection(joined, ("embed", "joined_kv"), "query", self.query_kernel_init)(inputs_q))
        key = split(self._projection(joined, ("embed", "joined_kv"), "key")(inputs_kv))
        value = split(self._projection(joined, ("embed", "joined_kv"), "value")(inputs_kv))

        if decode:
            query, key, value, mask, bias = self._update_cache(query, key, value, mask, bias)

        dropout_rng = None
        if not deterministic and self.dropout_rate > 0.0:
            dropout_rng = self.make_rng("dropout")
        attended = dot_product_attention(
            query, key, value, mask=mask, bias=bias, scale_logits=self.scale_logits,
            dropout_rng=dropout_rng, dropout_rate=self.dropout_rate, dtype=self.dtype,
        )  # [batch, q_len, heads, head_dim]
        attended = attended.reshape(batch, q_len, joined)
        return self._projection(self.out_features, ("joined_kv", "embed"), "out")(attended)

    def _update_cache(self, query, key, value, mask, bias):
        """Writes this step's key/value at `cache_index` and returns the full cached key/value with masks."""
        initialised = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
        cache_index = self.variable("cache", "cache_index", lambda: jnp.array(0, dtype=jnp.int32))
        if not initialised:
            # Initialisation pass with full-length inputs: only the cache shapes matter.
            return query, key, value, mask, bias
        batch, max_length, num_heads, head_dim = cached_key.value.shape
        if query.shape[1] != 1:
            raise ValueError(f"decode=True expects one query position per call, got {query.shape[1]}")
        index = cache_index.value
        key = jax.lax.dynamic_update_slice(cached_key.value, key, (0, index, 0, 0))  # [b, max_len, h, d]
        value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, index, 0, 0))
        cached_key.value, cached_value.value = key, value
        cache_index.value = index + 1
        visible = (jnp.arange(max_length) <= index)[None, None, None, :]  # [1, 1, 1, max_len]
        mask = visible if mask is None else jnp.logical_and(mask, visible)
        if bias is not None and bias.shape[-2] == max_length:
            bias = jax.lax.dynamic_slice_in_dim(bias, index, 1, axis=-2)  # [.., 1, max_len]
        return query, key, value, mask, bias


def make_causal_mask(length: int) -> jax.Array:
    """Lower-triangular mask [1, 1, length, length]."""
    return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]

