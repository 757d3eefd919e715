"""Retrieval heads on top of `Bert`: a bi-encoder (tied or separate towers) and a cross-encoder.

Parameter layouts (what `hf/bert.py` imports and exports):
- `CrossEncoder`: {"bert", "pooler", "classifier"}, as `BertForSequenceClassification`.
- `BiEncoder(tied=True)`: {"encoder"}; `BiEncoder(tied=False)`: {"query_encoder", "document_encoder"}.
  `bi_encoder_params` builds these from an imported `BertModel` ({"bert", optional "pooler"}) and
  `bert_params_from_bi_encoder` takes one tower back out for export.
"""
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill_ret.models import layers
from distill_ret.models.bert import Bert, BertConfig, BertOutput

POOLINGS = ("cls", "mean")
TOWERS = ("query", "document")


def masked_mean(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """hidden [..., len, hidden], mask [..., len] -> mean over masked tokens [..., hidden] in float32.

    As sentence-transformers' mean pooling: an all-zero mask divides by 1e-9 and gives zeros.
    """
    weights = mask.astype(jnp.float32)[..., None]  # [..., len, 1]
    total = jnp.sum(hidden.astype(jnp.float32) * weights, axis=-2)  # [..., hidden]
    return total / jnp.maximum(jnp.sum(weights, axis=-2), 1e-9)


def l2_normalize(x: jax.Array, epsilon: float = 1e-12) -> jax.Array:
    """x / max(||x||, epsilon) over the last axis (torch.nn.functional.normalize)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, epsilon)


def pool(output: BertOutput, attention_mask: jax.Array, pooling: str) -> jax.Array:
    """BertOutput + attention_mask [batch, len] -> [batch, hidden] float32 by [CLS] or mean pooling."""
    if pooling == "cls":
        return output.last_hidden_state[:, 0].astype(jnp.float32)
    if pooling == "mean":
        return masked_mean(output.last_hidden_state, attention_mask)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class BiEncoder(nn.Module):
    """Dual encoder: s(q, d) = <encode_queries(q), encode_documents(d)>."""

    config: BertConfig
    pooling: str = "cls"  # "cls" | "mean" (over the attention mask)
    normalize: bool = False  # L2-normalise embeddings
    tied: bool = True  # one shared tower ("encoder") or two ("query_encoder", "document_encoder")

    def setup(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"BiEncoder.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.tied:
            self.encoder = Bert(self.config)
        else:
            self.query_encoder = Bert(self.config)
            self.document_encoder = Bert(self.config)

    def _tower(self, tower: str) -> Bert:
        if self.tied:
            return self.encoder
        return self.query_encoder if tower == "query" else self.document_encoder

    def _finish(self, embeddings: jax.Array) -> jax.Array:
        return l2_normalize(embeddings) if self.normalize else embeddings

    def _encode(self, tower: str, input_ids, attention_mask, deterministic: bool) -> jax.Array:
        output = self._tower(tower)(input_ids, attention_mask, deterministic=deterministic)
        return self._finish(pool(output, attention_mask, self.pooling))

    def __call__(self, query_input_ids, query_attention_mask, document_input_ids, document_attention_mask, *,
                 deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """Both towers (also what `init` uses): -> (queries [batch_q, hidden], documents [batch_d, hidden])."""
        return (self.encode_queries(query_input_ids, query_attention_mask, deterministic=deterministic),
                self.encode_documents(document_input_ids, document_attention_mask, deterministic=deterministic))

    def encode_queries(self, input_ids, attention_mask, *, deterministic: bool = True) -> jax.Array:
        """[batch, len] ids and mask -> [batch, hidden] float32."""
        return self._encode("query", input_ids, attention_mask, deterministic)

    def encode_documents(self, input_ids, attention_mask, *, deterministic: bool = True) -> jax.Array:
        """[batch, len] ids and mask -> [batch, hidden] float32."""
        return self._encode("document", input_ids, attention_mask, deterministic)

    def encode_documents_with_spans(self, input_ids, attention_mask, span_mask, *,
                                    deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """One document encoding -> (documents [batch, hidden], spans [batch, spans, hidden]), float32.

        span_mask [batch, spans, len] marks each span's tokens. With [CLS] pooling a span's embedding is the
        global-consistent one (FGD eq. 7, `Bert.span_embeddings`); with mean pooling it is the mean of the span's
        final hidden states. Either way a span equal to the attention mask gives the document embedding.
        """
        tower = self._tower("document")
        output = tower(input_ids, attention_mask, deterministic=deterministic)
        if self.pooling == "cls":
            spans = tower.span_embeddings(output.last_layer_input, attention_mask, span_mask,
                                          deterministic=deterministic).astype(jnp.float32)
        else:
            token_mask = jnp.logical_and(span_mask.astype(bool), attention_mask.astype(bool)[:, None, :])
            spans = masked_mean(output.last_hidden_state[:, None, :, :], token_mask)  # [batch, spans, hidden]
        return self._finish(pool(output, attention_mask, self.pooling)), self._finish(spans)


class CrossEncoder(nn.Module):
    """BERT + pooler (dense + tanh on [CLS]) + linear classifier, as `BertForSequenceClassification`."""

    config: BertConfig
    num_labels: int = 1

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids, *, deterministic: bool = True) -> jax.Array:
        """[batch, len] ids, mask and segment ids -> scores [batch, num_labels] float32."""
        config = self.config
        dtype = layers.dtype_from_name(config.dtype)
        output = Bert(config, name="bert")(input_ids, attention_mask, token_type_ids, deterministic=deterministic)
        pooled = jnp.tanh(
            layers.Dense(config.hidden_size, ("embed", "mlp"), dtype=dtype, name="pooler")(
                output.last_hidden_state[:, 0]
            )
        )  # [batch, hidden]
        pooled = nn.Dropout(config.hidden_dropout_prob)(pooled, deterministic=deterministic)
        scores = layers.Dense(self.num_labels, ("mlp", None), dtype=dtype, name="classifier")(pooled)
        return scores.astype(jnp.float32)  # [batch, num_labels]


def bi_encoder_params(bert_params: Mapping[str, Any], tied: bool = True) -> dict[str, Any]:
    """Imported `BertModel` params ({"bert", optional "pooler"}) -> `BiEncoder` params (the pooler is unused)."""
    if "bert" not in bert_params:
        raise ValueError(f"expected imported BERT params with a 'bert' subtree, got keys {sorted(bert_params)}")
    if tied:
        return {"encoder": bert_params["bert"]}
    # Separate buffers per tower, so that donating the train state never aliases the two.
    return {tower: jax.tree_util.tree_map(jnp.array, bert_params["bert"])
            for tower in ("query_encoder", "document_encoder")}


def bert_params_from_bi_encoder(params: Mapping[str, Any], tower: str = "document") -> dict[str, Any]:
    """`BiEncoder` params -> {"bert": ...} of one tower, ready for `export_to_hf` as a `BertModel`."""
    if tower not in TOWERS:
        raise ValueError(f"tower must be one of {TOWERS}, got {tower!r}")
    if "encoder" in params:
        return {"bert": params["encoder"]}
    key = f"{tower}_encoder"
    if key not in params:
        raise ValueError(f"expected BiEncoder params ('encoder' or '{key}'), got keys {sorted(params)}")
    return {"bert": params[key]}
