"""BERT checkpoints: `BertModel` (with or without pooler) and `BertForSequenceClassification` <-> our params.

Our layout (see models/heads.py): {"bert": Bert params, "pooler": optional, "classifier": optional}.
- A checkpoint whose tensors carry no prefix (`embeddings.*`, `encoder.*`, `pooler.*`) is a `BertModel`.
- A checkpoint with the `bert.` prefix is a task model; its `classifier.*` tensors are imported (a
  `BertForSequenceClassification`, i.e. `CrossEncoder` params), pre-training heads (`cls.*`) are skipped.
Export writes `BertForSequenceClassification` when the params have a classifier, else `BertModel`. Both directions
check every tensor's shape against the config (`param_shapes`), so weights never travel with a config that does not
describe them.
The `embeddings.position_ids` / `token_type_ids` buffers some checkpoints carry are ignored.
"""
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import transformers
from flax import linen as nn
from flax import traverse_util

from distill_ret.hf import core
from distill_ret.models.bert import Bert, BertConfig

MODEL_TYPE = "bert"
CONFIG_CLASS = BertConfig

ENCODER_TABLE = [
    core.Mapping("embeddings/word_embeddings/embedding", "embeddings.word_embeddings.weight"),
    core.Mapping("embeddings/position_embeddings/embedding", "embeddings.position_embeddings.weight"),
    core.Mapping("embeddings/token_type_embeddings/embedding", "embeddings.token_type_embeddings.weight"),
    core.Mapping("embeddings/layer_norm/scale", "embeddings.LayerNorm.weight"),
    core.Mapping("embeddings/layer_norm/bias", "embeddings.LayerNorm.bias"),
    *[
        core.Mapping(f"layers_{{i}}/attention/{ours}/kernel", f"encoder.layer.{{i}}.attention.{theirs}.weight",
                     core.transpose, core.transpose)
        for ours, theirs in [("query", "self.query"), ("key", "self.key"), ("value", "self.value"),
                             ("out", "output.dense")]
    ],
    *[
        core.Mapping(f"layers_{{i}}/attention/{ours}/bias", f"encoder.layer.{{i}}.attention.{theirs}.bias")
        for ours, theirs in [("query", "self.query"), ("key", "self.key"), ("value", "self.value"),
                             ("out", "output.dense")]
    ],
    core.Mapping("layers_{i}/attention_norm/scale", "encoder.layer.{i}.attention.output.LayerNorm.weight"),
    core.Mapping("layers_{i}/attention_norm/bias", "encoder.layer.{i}.attention.output.LayerNorm.bias"),
    core.Mapping("layers_{i}/intermediate/kernel", "encoder.layer.{i}.intermediate.dense.weight",
                 core.transpose, core.transpose),
    core.Mapping("layers_{i}/intermediate/bias", "encoder.layer.{i}.intermediate.dense.bias"),
    core.Mapping("layers_{i}/output/kernel", "encoder.layer.{i}.output.dense.weight", core.transpose, core.transpose),
    core.Mapping("layers_{i}/output/bias", "encoder.layer.{i}.output.dense.bias"),
    core.Mapping("layers_{i}/output_norm/scale", "encoder.layer.{i}.output.LayerNorm.weight"),
    core.Mapping("layers_{i}/output_norm/bias", "encoder.layer.{i}.output.LayerNorm.bias"),
]
POOLER_TABLE = [
    core.Mapping("pooler/kernel", "pooler.dense.weight", core.transpose, core.transpose),
    core.Mapping("pooler/bias", "pooler.dense.bias"),
]
CLASSIFIER_TABLE = [
    core.Mapping("classifier/kernel", "classifier.weight", core.transpose, core.transpose),
    core.Mapping("classifier/bias", "classifier.bias"),
]
TASK_PREFIX = "bert."
IGNORED = [r"(bert\.)?embeddings\.(position_ids|token_type_ids)", r"cls\..*"]


def table(num_layers: int, *, pooler: bool, classifier: bool) -> list[core.Mapping]:
    """The expanded table for our {"bert", "pooler", "classifier"} layout; task models get the `bert.` prefix."""
    hf_prefix = TASK_PREFIX if classifier else ""
    entries = [core.Mapping("bert/" + m.flax, hf_prefix + m.hf, m.to_flax, m.to_hf) for m in ENCODER_TABLE]
    if pooler:
        entries += [core.Mapping(m.flax, hf_prefix + m.hf, m.to_flax, m.to_hf) for m in POOLER_TABLE]
    if classifier:
        entries += CLASSIFIER_TABLE
    return core.expand(entries, {"i": num_layers})


REQUIRED_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def config_from_dict(hf_config: Mapping[str, Any], source: str, **overrides) -> BertConfig:
    """A config.json dict -> BertConfig, every value checked first; HfCheckpointError names `source` and the key."""
    core.check_config_values(
        hf_config, required=REQUIRED_FIELDS, positive=REQUIRED_FIELDS + ("max_position_embeddings", "type_vocab_size"),
        token_ids=("pad_token_id",), rates=("layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob"),
        strings=("hidden_act", "position_embedding_type"), source=source,
    )
    try:
        return BertConfig.from_hf(hf_config, **overrides)
    except core.CONFIG_VALUE_ERRORS as error:
        raise core.HfCheckpointError(f"{source}: {' '.join(str(error).split())}") from None


def param_shapes(config: BertConfig, *, pooler: bool, num_labels: int | None) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter of our {"bert", ["pooler"], ["classifier"]} layout under `config` (nothing runs)."""
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
    bert = nn.unbox(jax.eval_shape(Bert(config).init, rng, ids, ids)["params"])
    shapes = {f"bert/{path}": leaf.shape for path, leaf in traverse_util.flatten_dict(bert, sep="/").items()}
    hidden = config.hidden_size
    if pooler:
        shapes.update({"pooler/kernel": (hidden, hidden), "pooler/bias": (hidden,)})
    if num_labels is not None:
        shapes.update({"classifier/kernel": (hidden, num_labels), "classifier/bias": (num_labels,)})
    return shapes


def _num_labels(params: Mapping[str, Any]) -> int | None:
    return int(np.size(params["classifier"]["bias"])) if "classifier" in params else None


def load(hf_config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], source: str) -> tuple[BertConfig, dict]:
    """config.json dict + safetensors tensors -> (BertConfig, {"bert", ["pooler"], ["classifier"]})."""
    config = config_from_dict(hf_config, f"{source}/{core.CONFIG_FILE}")
    prefixed = any(name.startswith(TASK_PREFIX) for name in tensors)
    if prefixed:
        # Task models: keep only the encoder, pooler and classifier; strip the prefix for the shared table.
        tensors = {name[len(TASK_PREFIX):] if name.startswith(TASK_PREFIX) else name: value
                   for name, value in tensors.items()}
    classifier = "classifier.weight" in tensors
    if classifier and not prefixed:
        raise core.HfCheckpointError(f"{source}: classifier tensors without the '{TASK_PREFIX}' encoder prefix")
    core.check_layer_count(tensors, "encoder.layer.{i}.output.dense.weight", config.num_hidden_layers,
                           "num_hidden_layers", source)
    entries = table(config.num_hidden_layers, pooler="pooler.dense.weight" in tensors, classifier=False)
    entries += CLASSIFIER_TABLE if classifier else []
    params = core.hf_to_params(tensors, entries, ignore=IGNORED, source=source)
    expected = param_shapes(config, pooler="pooler" in params, num_labels=_num_labels(params))
    core.check_shapes(params, expected, entries, source)
    return config, params


def dump(params: Mapping[str, Any], config: BertConfig) -> tuple[transformers.BertConfig, dict[str, np.ndarray]]:
    """Our {"bert", ["pooler"], ["classifier"]} params -> (transformers config with `architectures`, tensors).

    Every parameter's shape must be the one `config` gives (HfCheckpointError otherwise).
    """
    if "bert" not in params:
        raise core.HfCheckpointError(
            "expected BERT params with a 'bert' subtree (BertModel or CrossEncoder layout), "
            f"got keys {sorted(params)}; "
            "for BiEncoder params use models.heads.bert_params_from_bi_encoder(params, tower) first"
        )
    classifier = "classifier" in params
    if classifier and "pooler" not in params:
        raise core.HfCheckpointError("a classifier needs the pooler (BertForSequenceClassification layout)")
    entries = table(config.num_hidden_layers, pooler="pooler" in params, classifier=classifier)
    num_labels = _num_labels(params)
    core.check_shapes(params, param_shapes(config, pooler="pooler" in params, num_labels=num_labels), entries,
                      "parameters")
    hf_config = config.to_hf()
    if classifier:
        hf_config.num_labels = num_labels
        hf_config.architectures = ["BertForSequenceClassification"]
    else:
        hf_config.architectures = ["BertModel"]
    return hf_config, core.params_to_hf(params, entries)
