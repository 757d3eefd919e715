"""T5 <-> `T5ForConditionalGeneration` checkpoints: the name table and the config conversion.

Our tree (`distill_ret/models/t5.py`) follows t5x names; Hugging Face stores torch Linear weights [out, in], so every
kernel is transposed. The relative attention bias lives in block 0 of each stack. `shared.weight` may be repeated
as `encoder/decoder.embed_tokens.weight` (and, for v1.0, `lm_head.weight`): repeats must equal it. A v1.1 checkpoint
without `lm_head.weight` (transformers 5 ties it when the config asks for no logit scaling) gets its lm head from
`shared.weight`.
"""
from typing import Any

import flax.linen as nn
import numpy as np
import transformers

from distill_ret.hf import core
from distill_ret.hf.core import Mapping, transpose
from distill_ret.models.t5 import T5Config

MODEL_TYPE = "t5"
CONFIG_CLASS = T5Config

SHARED = "shared.weight"
LM_HEAD = "lm_head.weight"
EMBEDDING = "token_embedder/embedding"
LOGITS_KERNEL = "decoder/logits_dense/kernel"
TIED_EMBEDDINGS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# transformers has never used a cross-attention relative bias; some old checkpoints still carry one.
IGNORED = (r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",)

_ATTENTION = {"query": "q", "key": "k", "value": "v", "out": "o"}


def _attention(flax_prefix: str, hf_prefix: str) -> list[Mapping]:
    return [Mapping(f"{flax_prefix}/{ours}/kernel", f"{hf_prefix}.{theirs}.weight", transpose, transpose)
            for ours, theirs in _ATTENTION.items()]


def _mlp(flax_prefix: str, hf_prefix: str, config: T5Config) -> list[Mapping]:
    names = ("wi_0", "wi_1", "wo") if config.feed_forward_proj == "gated-gelu" else ("wi", "wo")
    return [Mapping(f"{flax_prefix}/{name}/kernel", f"{hf_prefix}.DenseReluDense.{name}.weight", transpose, transpose)
            for name in names]


def table(config: T5Config) -> list[Mapping]:
    """Every parameter of `T5(config)` with its `T5ForConditionalGeneration` name (one entry per parameter)."""
    enc, dec = "encoder/layers_{i}", "decoder/layers_{j}"
    entries = [
        Mapping(EMBEDDING, SHARED),
        Mapping("encoder/relpos_bias/rel_embedding", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        Mapping("encoder/encoder_norm/scale", "encoder.final_layer_norm.weight"),
        Mapping(f"{enc}/pre_attention_layer_norm/scale", "encoder.block.{i}.layer.0.layer_norm.weight"),
        *_attention(f"{enc}/attention", "encoder.block.{i}.layer.0.SelfAttention"),
        Mapping(f"{enc}/pre_mlp_layer_norm/scale", "encoder.block.{i}.layer.1.layer_norm.weight"),
        *_mlp(f"{enc}/mlp", "encoder.block.{i}.layer.1", config),
        Mapping("decoder/relpos_bias/rel_embedding", "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        Mapping("decoder/decoder_norm/scale", "decoder.final_layer_norm.weight"),
        Mapping(f"{dec}/pre_self_attention_layer_norm/scale", "decoder.block.{j}.layer.0.layer_norm.weight"),
        *_attention(f"{dec}/self_attention", "decoder.block.{j}.layer.0.SelfAttention"),
        Mapping(f"{dec}/pre_cross_attention_layer_norm/scale", "decoder.block.{j}.layer.1.layer_norm.weight"),
        *_attention(f"{dec}/encoder_decoder_attention", "decoder.block.{j}.layer.1.EncDecAttention"),
        Mapping(f"{dec}/pre_mlp_layer_norm/scale", "decoder.block.{j}.layer.2.layer_norm.weight"),
        *_mlp(f"{dec}/mlp", "decoder.block.{j}.layer.2", config),
    ]
    if not config.tie_word_embeddings:
        entries.append(Mapping(LOGITS_KERNEL, LM_HEAD, transpose, transpose))
    return core.expand(entries, {"i": config.num_layers, "j": config.num_decoder_layers})


def load(hf_config: dict[str, Any], tensors: dict[str, np.ndarray], source: str) -> tuple[T5Config, dict]:
    """config.json contents + safetensors tensors -> (T5Config, params)."""
    try:
        config = T5Config.from_hf(transformers.T5Config.from_dict(hf_config))
    except (ValueError, TypeError) as error:
        raise core.HfCheckpointError(f"{source}/{core.CONFIG_FILE}: {error}") from None
    entries = table(config)
    entries += [Mapping(EMBEDDING, name) for name in TIED_EMBEDDINGS if name in tensors]
    if config.tie_word_embeddings and LM_HEAD in tensors:
        entries.append(Mapping(EMBEDDING, LM_HEAD))  # must equal shared.weight: v1.0 ties the output layer
    elif not config.tie_word_embeddings and LM_HEAD not in tensors:
        entries = [m for m in entries if m.flax != LOGITS_KERNEL] + [Mapping(LOGITS_KERNEL, SHARED, transpose)]
    return config, core.hf_to_params(tensors, entries, ignore=IGNORED, source=source)


def dump(params: dict, config: T5Config) -> tuple[transformers.T5Config, dict[str, np.ndarray]]:
    """(params, T5Config) -> (transformers.T5Config, tensors named as in T5ForConditionalGeneration)."""
    return config.to_hf(), core.params_to_hf(nn.unbox(params), table(config))
