"""T5 <-> `T5ForConditionalGeneration` checkpoints: the name table and the config conversion.

Our tree (`distill_ret/models/t5.py`) follows t5x names; Hugging Face stores torch Linear weights [out, in], so every
kernel is transposed. The relative attention bias lives in block 0 of each stack. `shared.weight` may be repeated
as `encoder/decoder.embed_tokens.weight` (and, for v1.0, `lm_head.weight`): repeats must equal it. A v1.1 checkpoint
without `lm_head.weight` (transformers 5 ties it when the config asks for no logit scaling) gets its lm head from
`shared.weight`. Both directions check every tensor's shape against the config (`param_shapes`).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import transformers
from flax import traverse_util

from distill_ret.hf import core
from distill_ret.hf.core import Mapping, transpose
from distill_ret.models.t5 import T5, T5Config

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
        Mapping("encoder/relpos_bias/rel_embedding",
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        Mapping("encoder/encoder_norm/scale", "encoder.final_layer_norm.weight"),
        Mapping(f"{enc}/pre_attention_layer_norm/scale", "encoder.block.{i}.layer.0.layer_norm.weight"),
        *_attention(f"{enc}/attention", "encoder.block.{i}.layer.0.SelfAttention"),
        Mapping(f"{enc}/pre_mlp_layer_norm/scale", "encoder.block.{i}.layer.1.layer_norm.weight"),
        *_mlp(f"{enc}/mlp", "encoder.block.{i}.layer.1", config),
        Mapping("decoder/relpos_bias/rel_embedding",
                "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
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


REQUIRED_FIELDS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")


def config_from_dict(hf_config: dict[str, Any], source: str, **overrides) -> T5Config:
    """A config.json dict -> T5Config, every value checked first; HfCheckpointError names `source` and the key."""
    core.check_config_values(
        hf_config, required=REQUIRED_FIELDS,
        positive=REQUIRED_FIELDS + ("num_decoder_layers", "relative_attention_num_buckets",
                                    "relative_attention_max_distance"),
        token_ids=("pad_token_id", "eos_token_id", "decoder_start_token_id"),
        rates=("dropout_rate", "layer_norm_epsilon"), strings=("feed_forward_proj",), source=source,
    )
    try:
        return T5Config.from_hf(transformers.T5Config.from_dict(hf_config), **overrides)
    except core.CONFIG_VALUE_ERRORS as error:
        raise core.HfCheckpointError(f"{source}: {' '.join(str(error).split())}") from None


def param_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter of `T5(config)` (traced abstractly; nothing runs)."""
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
    params = nn.unbox(jax.eval_shape(T5(config).init, rng, ids, ids)["params"])
    return {path: leaf.shape for path, leaf in traverse_util.flatten_dict(params, sep="/").items()}


def load(hf_config: dict[str, Any], tensors: dict[str, np.ndarray], source: str) -> tuple[T5Config, dict]:
    """config.json contents + safetensors tensors -> (T5Config, params); shapes are checked against the config."""
    config = config_from_dict(hf_config, f"{source}/{core.CONFIG_FILE}")
    core.check_layer_count(tensors, "encoder.block.{i}.layer.0.layer_norm.weight", config.num_layers, "num_layers",
                           source)
    core.check_layer_count(tensors, "decoder.block.{i}.layer.0.layer_norm.weight", config.num_decoder_layers,
                           "num_decoder_layers", source)
    entries = table(config)
    entries += [Mapping(EMBEDDING, name) for name in TIED_EMBEDDINGS if name in tensors]
    if config.tie_word_embeddings and LM_HEAD in tensors:
        entries.append(Mapping(EMBEDDING, LM_HEAD))  # must equal shared.weight: v1.0 ties the output layer
    elif not config.tie_word_embeddings and LM_HEAD not in tensors:
        entries = [m for m in entries if m.flax != LOGITS_KERNEL] + [Mapping(LOGITS_KERNEL, SHARED, transpose)]
    params = core.hf_to_params(tensors, entries, ignore=IGNORED, source=source)
    core.check_shapes(params, param_shapes(config), entries, source)
    return config, params


def dump(params: dict, config: T5Config) -> tuple[transformers.T5Config, dict[str, np.ndarray]]:
    """(params, T5Config) -> (transformers.T5Config, tensors named as in T5ForConditionalGeneration).

    Every parameter's shape must be the one `config` gives (HfCheckpointError otherwise).
    """
    params = nn.unbox(params)
    entries = table(config)
    core.check_shapes(params, param_shapes(config), entries, "parameters")
    return config.to_hf(), core.params_to_hf(params, entries)
