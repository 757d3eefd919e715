"""BERT encoder (post-LN, as `transformers.BertModel`) that also exposes the last layer's inputs for span pooling.

`Bert.__call__` returns a `BertOutput` with the final hidden states and the hidden states that enter the last layer
(h' in FGD eq. 6-7). `Bert.span_embeddings` recomputes the last layer's [CLS] row with its attention restricted to
spans of the input (FGD's global-consistent granularity embedding, eq. 7): the [CLS] query attends only to the
span's tokens (softmax renormalised over them), then the same output projection, residual, layer norms and FFN.

Span convention: a span is exactly the set of tokens its mask marks (intersected with the attention mask). [CLS]
is not added implicitly, as in eq. 7; with the span equal to the attention mask the result is the document's
[CLS] embedding. A span that marks no valid token attends to [CLS] alone (finite, independent of padding); mask
such spans out of losses.

Padding follows `transformers`: padded keys are masked, padded query positions still get (unused) outputs.
"""
import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import transformers
from flax import struct

from distill_ret.models import layers

# HF `hidden_act` name -> activation. "gelu" is the exact (erf) GELU; "gelu_new" the tanh approximation.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}

_static = functools.partial(struct.field, pytree_node=False)


@struct.dataclass
class BertConfig:
    """Hyper-parameters of a BERT encoder; field names follow `transformers.BertConfig`."""

    vocab_size: int = _static()
    hidden_size: int = _static()
    num_hidden_layers: int = _static()
    num_attention_heads: int = _static()
    intermediate_size: int = _static()
    hidden_act: str = _static(default="gelu")
    max_position_embeddings: int = _static(default=512)
    type_vocab_size: int = _static(default=2)
    layer_norm_eps: float = _static(default=1e-12)
    hidden_dropout_prob: float = _static(default=0.1)
    attention_probs_dropout_prob: float = _static(default=0.1)
    pad_token_id: int = _static(default=0)
    dtype: str = _static(default="float32")  # compute dtype: "float32" | "bfloat16"; parameters stay float32
    remat: bool = _static(default=False)  # recompute each layer's activations in the backward pass (less memory)

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"BertConfig.hidden_act must be one of {sorted(ACTIVATIONS)}, got {self.hidden_act!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        layers.dtype_from_name(self.dtype)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, hf_config: "transformers.BertConfig | Mapping[str, Any]", **overrides) -> "BertConfig":
        """A `transformers.BertConfig` (or its config.json dict) -> BertConfig; `overrides` replace fields."""
        if isinstance(hf_config, Mapping):
            hf_config = transformers.BertConfig(**{k: v for k, v in hf_config.items() if k != "model_type"})
        position_type = getattr(hf_config, "position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(f"only absolute position embeddings are supported, got {position_type!r}")
        fields = {f.name: getattr(hf_config, f.name) for f in dataclasses.fields(cls)
                  if f.name not in layers.COMPUTE_FIELDS}
        if fields["pad_token_id"] is None:
            fields["pad_token_id"] = 0
        return cls(**{**fields, **overrides})

    def to_hf(self) -> transformers.BertConfig:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in layers.COMPUTE_FIELDS}
        return transformers.BertConfig(**fields)


@struct.dataclass
class BertOutput:
    last_hidden_state: jax.Array  # [batch, len, hidden]
    last_layer_input: jax.Array  # [batch, len, hidden]: hidden states entering the last layer (FGD's h')


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, layer norm, dropout."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array, *, deterministic: bool) -> jax.Array:
        config = self.config
        dtype = layers.dtype_from_name(config.dtype)
        length = input_ids.shape[1]
        if length > config.max_position_embeddings:
            raise ValueError(f"input length {length} exceeds max_position_embeddings={config.max_position_embeddings}")
        embed = functools.partial(layers.Embed, features=config.hidden_size, dtype=dtype)
        words = embed(config.vocab_size, embedding_axes=("vocab", "embed"), name="word_embeddings")(input_ids)
        positions = embed(config.max_position_embeddings, embedding_axes=(None, "embed"), name="position_embeddings")(
            jnp.arange(length)[None, :]
        )  # [1, len, hidden]
        types = embed(config.type_vocab_size, embedding_axes=(None, "embed"), name="token_type_embeddings")(
            token_type_ids
        )
        hidden = layers.LayerNorm(config.layer_norm_eps, dtype, name="layer_norm")(words + positions + types)
        return nn.Dropout(config.hidden_dropout_prob)(hidden, deterministic=deterministic)  # [batch, len, hidden]


class BertLayer(nn.Module):
    """Post-LN transformer layer. Queries and keys/values are separate inputs so that the last layer can recompute
    selected query rows (span embeddings) against the full sequence."""

    config: BertConfig

    def setup(self):
        config = self.config
        dtype = layers.dtype_from_name(config.dtype)
        self.attention = layers.MultiHeadAttention(
            num_heads=config.num_attention_heads, head_dim=config.head_dim, out_features=config.hidden_size,
            use_bias=True, scale_logits=True, dropout_rate=config.attention_probs_dropout_prob, dtype=dtype,
        )
        self.attention_norm = layers.LayerNorm(config.layer_norm_eps, dtype)
        self.intermediate = layers.Dense(config.intermediate_size, ("embed", "mlp"), dtype=dtype)
        self.output = layers.Dense(config.hidden_size, ("mlp", "embed"), dtype=dtype)
        self.output_norm = layers.LayerNorm(config.layer_norm_eps, dtype)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.activation = ACTIVATIONS[config.hidden_act]

    def __call__(self, inputs_q: jax.Array, inputs_kv: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        """inputs_q [batch, q_len, hidden], inputs_kv [batch, len, hidden], mask [batch, 1, q_len|1, len]
        -> [batch, q_len, hidden]. `deterministic` is positional: the static argument of the remat version."""
        attended = self.attention(inputs_q, inputs_kv, mask=mask, deterministic=deterministic)
        hidden = self.attention_norm(inputs_q + self.dropout(attended, deterministic=deterministic))
        mlp = self.output(self.activation(self.intermediate(hidden)))  # [batch, q_len, hidden]
        return self.output_norm(hidden + self.dropout(mlp, deterministic=deterministic))


class Bert(nn.Module):
    """BERT encoder without pooler; params: embeddings/..., layers_{i}/... (see hf/bert.py for the HF names)."""

    config: BertConfig

    def setup(self):
        self.embeddings = BertEmbeddings(self.config)
        layer = layers.layer_class(BertLayer, self.config.remat, static_argnums=(4,))
        self.layers = [layer(self.config) for _ in range(self.config.num_hidden_layers)]

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> BertOutput:
        """input_ids, attention_mask (1 = token, 0 = padding), token_type_ids: [batch, len] -> BertOutput."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        key_mask = attention_mask.astype(bool)[:, None, None, :]  # [batch, 1, 1, len]
        hidden = self.embeddings(input_ids, token_type_ids, deterministic=deterministic)  # [batch, len, hidden]
        for layer in self.layers[:-1]:
            hidden = layer(hidden, hidden, key_mask, deterministic)
        last_layer_input = hidden
        hidden = self.layers[-1](hidden, hidden, key_mask, deterministic)
        return BertOutput(last_hidden_state=hidden, last_layer_input=last_layer_input)

    def span_embeddings(
        self,
        last_layer_input: jax.Array,
        attention_mask: jax.Array,
        span_mask: jax.Array,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        """FGD eq. 7: the last layer's [CLS] row recomputed per span.

        last_layer_input [batch, len, hidden] (from BertOutput), attention_mask [batch, len],
        span_mask [batch, spans, len] bool -> [batch, spans, hidden].
        """
        batch, length, hidden_size = last_layer_input.shape
        keys = jnp.logical_and(span_mask.astype(bool), attention_mask.astype(bool)[:, None, :])  # [batch, spans, len]
        cls_only = (jnp.arange(length) == 0)[None, None, :]  # [1, 1, len]
        keys = jnp.where(jnp.any(keys, axis=-1, keepdims=True), keys, cls_only)
        queries = jnp.broadcast_to(last_layer_input[:, :1, :], (batch, span_mask.shape[1], hidden_size))
        return self.layers[-1](queries, last_layer_input, keys[:, None, :, :], deterministic)
