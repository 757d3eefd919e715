"""T5 encoder-decoder (v1.0 and v1.1) in Flax with relative position buckets and an incremental decode cache.

Follows t5x's `examples/t5/network.py`, numerically matched to transformers' `T5ForConditionalGeneration`:
pre-norm residual blocks with RMS norm, attention without logit scaling, one relative position bias per stack
(bidirectional buckets in the encoder, causal in the decoder) shared by all its layers, v1.0 ReLU MLP with tied
embeddings and logits scaled by d_model**-0.5, v1.1 gated-GELU (tanh approximation) MLP with a separate lm head.

Decoding with the cache: `cache = init_cache(config, batch, max_len)`, then call
`T5(config).apply({"params": params, "cache": cache}, encoded, encoder_input_ids, token[:, None], decode=True,
method=T5.decode, mutable=["cache"])` once per position. The cache is a pytree whose leaves are batch-leading
([batch, max_len, heads, d_kv]) except the scalar `cache_index` leaves; `map_cache` applies a function (beam
expansion, beam gather) to the batch-leading leaves only.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import transformers
from flax import struct

from distill_ret.models import layers

FEED_FORWARD_PROJ = ("relu", "gated-gelu")


@struct.dataclass
class T5Config:
    """Architecture and compute dtype of a T5 model; every field is static (no pytree leaves)."""

    vocab_size: int = struct.field(pytree_node=False)
    d_model: int = struct.field(pytree_node=False)
    d_kv: int = struct.field(pytree_node=False)
    d_ff: int = struct.field(pytree_node=False)
    num_layers: int = struct.field(pytree_node=False)
    num_decoder_layers: int = struct.field(pytree_node=False)
    num_heads: int = struct.field(pytree_node=False)
    relative_attention_num_buckets: int = struct.field(pytree_node=False, default=32)
    relative_attention_max_distance: int = struct.field(pytree_node=False, default=128)
    dropout_rate: float = struct.field(pytree_node=False, default=0.1)
    layer_norm_epsilon: float = struct.field(pytree_node=False, default=1e-6)
    feed_forward_proj: str = struct.field(pytree_node=False, default="relu")
    tie_word_embeddings: bool = struct.field(pytree_node=False, default=True)
    pad_token_id: int = struct.field(pytree_node=False, default=0)
    eos_token_id: int = struct.field(pytree_node=False, default=1)
    decoder_start_token_id: int = struct.field(pytree_node=False, default=0)
    dtype: str = struct.field(pytree_node=False, default="float32")
    remat: bool = struct.field(pytree_node=False, default=False)  # recompute layer activations in the backward pass

    def __post_init__(self):
        if self.feed_forward_proj not in FEED_FORWARD_PROJ:
            raise ValueError(
                f"T5Config.feed_forward_proj={self.feed_forward_proj!r} is not supported; expected one of "
                f"{FEED_FORWARD_PROJ} ('relu' = T5 v1.0, 'gated-gelu' = T5 v1.1 / Flan-T5)"
            )
        layers.dtype_from_name(self.dtype)

    @classmethod
    def from_hf(cls, hf_config: transformers.T5Config, **overrides) -> "T5Config":
        """transformers.T5Config -> T5Config; `overrides` replace fields (e.g. dtype='bfloat16', dropout_rate=0.0)."""
        if getattr(hf_config, "is_decoder", False):
            raise ValueError("T5 config has is_decoder=True (a decoder-only T5 stack); "
                             "only encoder-decoder T5 is supported")
        if hf_config.feed_forward_proj not in FEED_FORWARD_PROJ:
            raise ValueError(
                f"T5 config feed_forward_proj={hf_config.feed_forward_proj!r} is not supported; expected one of "
                f"{FEED_FORWARD_PROJ}"
            )
        eos = hf_config.eos_token_id
        if isinstance(eos, (list, tuple)):
            if len(eos) != 1:
                raise ValueError(f"T5 config eos_token_id={eos!r}: exactly one end-of-sequence id is supported")
            eos = eos[0]
        # transformers >= 5 always ties lm_head in the config and records v1.0's logit scaling separately.
        scaled = getattr(hf_config, "scale_decoder_outputs", hf_config.tie_word_embeddings)
        start = getattr(hf_config, "decoder_start_token_id", None)
        fields = dict(
            vocab_size=hf_config.vocab_size, d_model=hf_config.d_model, d_kv=hf_config.d_kv, d_ff=hf_config.d_ff,
            num_layers=hf_config.num_layers, num_decoder_layers=hf_config.num_decoder_layers,
            num_heads=hf_config.num_heads, relative_attention_num_buckets=hf_config.relative_attention_num_buckets,
            relative_attention_max_distance=hf_config.relative_attention_max_distance,
            dropout_rate=float(hf_config.dropout_rate), layer_norm_epsilon=float(hf_config.layer_norm_epsilon),
            feed_forward_proj=hf_config.feed_forward_proj, tie_word_embeddings=bool(scaled),
            pad_token_id=hf_config.pad_token_id, eos_token_id=eos,
            decoder_start_token_id=hf_config.pad_token_id if start is None else start,
        )
        fields.update(overrides)
        return cls(**fields)

    def to_hf(self) -> transformers.T5Config:
        return transformers.T5Config(
            vocab_size=self.vocab_size, d_model=self.d_model, d_kv=self.d_kv, d_ff=self.d_ff,
            num_layers=self.num_layers, num_decoder_layers=self.num_decoder_layers, num_heads=self.num_heads,
            relative_attention_num_buckets=self.relative_attention_num_buckets,
            relative_attention_max_distance=self.relative_attention_max_distance, dropout_rate=self.dropout_rate,
            layer_norm_epsilon=self.layer_norm_epsilon, feed_forward_proj=self.feed_forward_proj,
            tie_word_embeddings=self.tie_word_embeddings, pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id, decoder_start_token_id=self.decoder_start_token_id,
            architectures=["T5ForConditionalGeneration"],
        )


def shift_right(labels: jax.Array, start_id: int) -> jax.Array:
    """Teacher-forcing decoder inputs: [batch, len] labels -> [start_id, labels[:, :-1]] (token ids, no -100)."""
    labels = jnp.asarray(labels)  # [batch, len]
    start = jnp.full(labels.shape[:1] + (1,), start_id, dtype=labels.dtype)  # [batch, 1]
    return jnp.concatenate([start, labels[:, :-1]], axis=1)  # [batch, len]


def relative_position_buckets(
    query_length: int, key_length: int, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """Static bucket ids [query_length, key_length] for relative position key - query (mesh-tf / HF scheme)."""
    relative = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]  # [q, k]
    buckets = np.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0) * num_buckets
        distance = np.abs(relative)
    else:
        distance = -np.minimum(relative, 0)
    max_exact = num_buckets // 2
    # float32 in transformers' operation order, so that truncation lands in the same buckets.
    with np.errstate(divide="ignore"):
        log_ratio = np.log(distance.astype(np.float32) / np.float32(max_exact))  # [q, k], -inf at distance 0
    log_ratio = log_ratio / np.float32(np.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    large = max_exact + np.nan_to_num(log_ratio, neginf=0.0).astype(np.int64)  # [q, k]
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(distance < max_exact, distance, large)  # [q, k]


class RelativePositionBias(nn.Module):
    """Learned per-head bias for bucketed relative positions: rel_embedding [buckets, heads]."""

    num_buckets: int
    max_distance: int
    num_heads: int
    bidirectional: bool
    init_stddev: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, query_length: int, key_length: int) -> jax.Array:
        embedding = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(self.init_stddev), ("relpos_buckets", "heads")),
            (self.num_buckets, self.num_heads),
            jnp.float32,
        )
        buckets = relative_position_buckets(
            query_length, key_length, bidirectional=self.bidirectional, num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )  # [q, k]
        values = jnp.take(embedding, jnp.asarray(buckets, jnp.int32), axis=0)  # [q, k, heads]
        return jnp.transpose(values, (2, 0, 1))[None].astype(self.dtype)  # [1, heads, q, k]


class MlpBlock(nn.Module):
    """Position-wise feed-forward: relu (v1.0) or gated tanh-GELU (v1.1), no biases."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        cfg = self.config
        dtype = layers.dtype_from_name(cfg.dtype)
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
        dense = lambda features, axes, name: layers.Dense(
            features, axes, use_bias=False, dtype=dtype, kernel_init=init, name=name
        )
        if cfg.feed_forward_proj == "gated-gelu":
            gate = jax.nn.gelu(dense(cfg.d_ff, ("embed", "mlp"), "wi_0")(x), approximate=True)  # [b, l, d_ff]
            hidden = gate * dense(cfg.d_ff, ("embed", "mlp"), "wi_1")(x)  # [b, l, d_ff]
        else:
            hidden = jax.nn.relu(dense(cfg.d_ff, ("embed", "mlp"), "wi")(x))  # [b, l, d_ff]
        hidden = nn.Dropout(cfg.dropout_rate)(hidden, deterministic=deterministic)
        return dense(cfg.d_model, ("mlp", "embed"), "wo")(hidden)  # [b, l, d_model]


def _attention(cfg: T5Config, name: str) -> layers.MultiHeadAttention:
    """T5 attention: no biases, unscaled logits; the query starts d_kv times smaller in variance (mesh-tf init)."""
    return layers.MultiHeadAttention(
        num_heads=cfg.num_heads, head_dim=cfg.d_kv, out_features=cfg.d_model, use_bias=False, scale_logits=False,
        dropout_rate=cfg.dropout_rate, dtype=layers.dtype_from_name(cfg.dtype),
        kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
        query_kernel_init=nn.initializers.variance_scaling(1.0 / cfg.d_kv, "fan_in", "normal"), name=name,
    )


def _norm(cfg: T5Config, name: str) -> layers.RMSNorm:
    return layers.RMSNorm(epsilon=cfg.layer_norm_epsilon, dtype=layers.dtype_from_name(cfg.dtype), name=name)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention and MLP blocks with residuals."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, bias: jax.Array, deterministic: bool) -> jax.Array:
        """`deterministic` is positional: the static argument of the remat version."""
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate)
        normed = _norm(cfg, "pre_attention_layer_norm")(x)  # [b, src, d_model]
        attended = _attention(cfg, "attention")(normed, normed, mask=mask, bias=bias, deterministic=deterministic)
        x = x + dropout(attended, deterministic=deterministic)  # [b, src, d_model]
        normed = _norm(cfg, "pre_mlp_layer_norm")(x)
        return x + dropout(MlpBlock(cfg, name="mlp")(normed, deterministic=deterministic), deterministic=deterministic)


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention (cached when decoding), cross-attention and MLP blocks with residuals."""

    config: T5Config

    @nn.compact
    def __call__(
        self, x: jax.Array, encoded: jax.Array, self_mask: jax.Array | None, cross_mask: jax.Array, bias: jax.Array,
        deterministic: bool, decode: bool,
    ) -> jax.Array:
        """`deterministic` and `decode` are positional: the static arguments of the remat version."""
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate)
        normed = _norm(cfg, "pre_self_attention_layer_norm")(x)  # [b, tgt, d_model]
        attended = _attention(cfg, "self_attention")(
            normed, normed, mask=self_mask, bias=bias, deterministic=deterministic, decode=decode
        )  # [b, tgt, d_model]
        x = x + dropout(attended, deterministic=deterministic)
        normed = _norm(cfg, "pre_cross_attention_layer_norm")(x)
        attended = _attention(cfg, "encoder_decoder_attention")(
            normed, encoded, mask=cross_mask, deterministic=deterministic
        )  # [b, tgt, d_model]
        x = x + dropout(attended, deterministic=deterministic)
        normed = _norm(cfg, "pre_mlp_layer_norm")(x)
        return x + dropout(MlpBlock(cfg, name="mlp")(normed, deterministic=deterministic), deterministic=deterministic)


def _relpos(cfg: T5Config, bidirectional: bool) -> RelativePositionBias:
    return RelativePositionBias(
        num_buckets=cfg.relative_attention_num_buckets, max_distance=cfg.relative_attention_max_distance,
        num_heads=cfg.num_heads, bidirectional=bidirectional, init_stddev=cfg.d_model ** -0.5,
        dtype=layers.dtype_from_name(cfg.dtype), name="relpos_bias",
    )


class Encoder(nn.Module):
    """Embeddings -> layers sharing one bidirectional relative position bias -> final RMS norm."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(self, input_ids: jax.Array, *, deterministic: bool) -> jax.Array:
        cfg = self.config
        src_len = input_ids.shape[1]
        mask = (input_ids != cfg.pad_token_id)[:, None, None, :]  # [b, 1, 1, src]: padded keys are hidden
        bias = _relpos(cfg, bidirectional=True)(src_len, src_len)  # [1, heads, src, src]
        x = self.shared_embedding(input_ids)  # [b, src, d_model]
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        layer = layers.layer_class(EncoderLayer, cfg.remat, static_argnums=(4,))
        for i in range(cfg.num_layers):
            x = layer(cfg, name=f"layers_{i}")(x, mask, bias, deterministic)  # [b, src, d_model]
        x = _norm(cfg, "encoder_norm")(x)  # [b, src, d_model]
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class Decoder(nn.Module):
    """Embeddings -> layers sharing one causal relative position bias -> final RMS norm -> float32 logits."""

    config: T5Config
    shared_embedding: nn.Module

    @nn.compact
    def __call__(
        self, encoded: jax.Array, encoder_input_ids: jax.Array, decoder_input_ids: jax.Array,
        *, deterministic: bool, decode: bool,
    ) -> jax.Array:
        cfg = self.config
        dtype = layers.dtype_from_name(cfg.dtype)
        cross_mask = (encoder_input_ids != cfg.pad_token_id)[:, None, None, :]  # [b, 1, 1, src]
        length = self._bias_length(decoder_input_ids) if decode else decoder_input_ids.shape[1]
        # Full-length causal bias [1, heads, len, len]; with the cache, attention takes the current row.
        bias = _relpos(cfg, bidirectional=False)(length, length)  # [1, heads, len, len]
        self_mask = None if decode else layers.make_causal_mask(length)  # [1, 1, tgt, tgt]
        x = self.shared_embedding(decoder_input_ids)  # [b, tgt, d_model]
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        layer = layers.layer_class(DecoderLayer, cfg.remat and not decode, static_argnums=(6, 7))  # decoding: no grads
        for i in range(cfg.num_decoder_layers):
            x = layer(cfg, name=f"layers_{i}")(
                x, encoded, self_mask, cross_mask, bias, deterministic, decode
            )  # [b, tgt, d_model]
        x = _norm(cfg, "decoder_norm")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)  # [b, tgt, d_model]
        if cfg.tie_word_embeddings:
            logits = self.shared_embedding.attend(x * (cfg.d_model ** -0.5))  # [b, tgt, vocab]
        else:
            logits = layers.Dense(
                cfg.vocab_size, ("embed", "vocab"), use_bias=False, dtype=dtype,
                kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"), name="logits_dense",
            )(x)  # [b, tgt, vocab]
        return logits.astype(jnp.float32)

    def _bias_length(self, decoder_input_ids: jax.Array) -> int:
        """Cache length: the full input length while the cache is created, then the cached keys' length."""
        cache = self.variables.get("cache", {})
        if "layers_0" not in cache:
            return decoder_input_ids.shape[1]
        return cache["layers_0"]["self_attention"]["cached_key"].shape[1]


class T5(nn.Module):
    """T5 encoder-decoder. Params: token_embedder, encoder, decoder (see `distill_ret/hf/t5.py` for the HF names)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.token_embedder = layers.Embed(
            cfg.vocab_size, cfg.d_model, ("vocab", "embed"), dtype=layers.dtype_from_name(cfg.dtype),
            embedding_init=nn.initializers.normal(stddev=1.0),
        )
        self.encoder = Encoder(cfg, self.token_embedder)
        self.decoder = Decoder(cfg, self.token_embedder)

    def encode(self, input_ids: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """[batch, src_len] token ids -> encoder states [batch, src_len, d_model]."""
        return self.encoder(input_ids, deterministic=deterministic)

    def decode(
        self, encoded: jax.Array, encoder_input_ids: jax.Array, decoder_input_ids: jax.Array,
        *, decode: bool = False, deterministic: bool = True,
    ) -> jax.Array:
        """Decoder logits [batch, tgt_len, vocab] (float32); with decode=True one token per call using the cache."""
        return self.decoder(encoded, encoder_input_ids, decoder_input_ids, deterministic=deterministic, decode=decode)

    def __call__(
        self, encoder_input_ids: jax.Array, decoder_input_ids: jax.Array, *, deterministic: bool = True,
        decode: bool = False,
    ) -> jax.Array:
        encoded = self.encode(encoder_input_ids, deterministic=deterministic)  # [batch, src_len, d_model]
        return self.decode(encoded, encoder_input_ids, decoder_input_ids, decode=decode, deterministic=deterministic)


def init_cache(config: T5Config, batch_size: int, max_decode_length: int) -> Any:
    """An empty decode cache for `batch_size` sequences of up to `max_decode_length` tokens (no params needed)."""
    ids = jnp.zeros((batch_size, max_decode_length), jnp.int32)  # [batch, max_len]
    shapes = jax.eval_shape(
        lambda: T5(config).init(jax.random.PRNGKey(0), ids[:, :1], ids, decode=True)["cache"]
    )
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def map_cache(fn: Callable[[jax.Array], jax.Array], cache: Any) -> Any:
    """Applies `fn` to every batch-leading cache leaf (keys, values), leaving the scalar `cache_index` leaves
    as they are."""

    def apply(path, leaf):
        name = getattr(path[-1], "key", None)
        return leaf if name == "cache_index" else fn(leaf)

    return jax.tree_util.tree_map_with_path(apply, cache)
