"""BERT checkpoints: `BertModel` (with or without pooler) and `BertForSequenceClassification` <-> our params.

Our layout (see models/heads.py): {"bert": Bert params, "pooler": optional, "classifier": optional}.
- A checkpoint whose tensors carry no prefix (`embeddings.*`, `encoder.*`, `pooler.*`) is a `BertModel`.
- A checkpoint with the `bert.` prefix is a task model; its `classifier.*` tensors are imported (a
  `BertForSequenceClassification`, i.e. `CrossEncoder` params), pre-training heads (`cls.*`) are skipped.
Export writes `BertForSequenceClassification` when the params have a classifier, else `BertModel`.
The `embeddings.position_ids` / `token_type_ids` buffers some checkpoints carry are ignored.
"""
from collections.abc import Mapping
from typing import Any

import numpy as np
import transformers

from distill_ret.hf import core
from distill_ret.models.bert import BertConfig

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
        for ours, theirs in [("query", "self.query"), ("key", "self.key"), ("value", "self.value"), ("out", "output.dense")]
    ],
    *[
        core.Mapping(f"layers_{{i}}/attention/{ours}/bias", f"encoder.layer.{{i}}.attention.{theirs}.bias")
        for ours, theirs in [("query", "self.query"), ("key", "self.key"), ("value", "self.value"), ("out", "output.dense")]
    ],
    core.Mapping("layers_{i}/attention_norm/scale", "encoder.layer.{i}.attention.output.LayerNorm.weight"),
    core.Mapping("layers_{i}/attention_norm/bias", "encoder.layer.{i}.attention.output.LayerNorm.bias"),
    core.Mapping("layers_{i}/intermediate/kernel", "encoder.layer.{i}.intermediate.dense.weight", core.transpose, core.transpose),
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


def load(hf_config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], source: str) -> tuple[BertConfig, dict]:
    """config.json dict + safetensors tensors -> (BertConfig, {"bert", ["pooler"], ["classifier"]})."""
    try:
        config = BertConfig.from_hf(hf_config)
    except (TypeError, ValueError) as error:
        raise core.HfCheckpointError(f"{source}/{core.CONFIG_FILE}: {error}") from None
    prefixed = any(name.startswith(TASK_PREFIX) for name in tensors)
    if prefixed:
        # Task models: keep only the encoder, pooler and classifier; strip the prefix for the shared table.
        tensors = {name[len(TASK_PREFIX):] if name.startswith(TASK_PREFIX) else name: value for name, value in tensors.items()}
    classifier = "classifier.weight" in tensors
    if classifier and not prefixed:
        raise core.HfCheckpointError(f"{source}: classifier tensors without the '{TASK_PREFIX}' encoder prefix")
    entries = table(config.num_hidden_layers, pooler="pooler.dense.weight" in tensors, classifier=False)
    entries += CLASSIFIER_TABLE if classifier else []
    params = core.hf_to_params(tensors, entries, ignore=IGNORED, source=source)
    return config, params


def dump(params: Mapping[str, Any], config: BertConfig) -> tuple[transformers.BertConfig, dict[str, np.ndarray]]:
    """Our {"bert", ["pooler"], ["classifier"]} params -> (transformers config with `architectures`, tensors)."""
    if "bert" not in params:
        raise core.HfCheckpointError(
            f"expected BERT params with a 'bert' subtree (BertModel or CrossEncoder layout), got keys {sorted(params)}; "
            "for BiEncoder params use models.heads.bert_params_from_bi_encoder(params, tower) first"
        )
    classifier = "classifier" in params
    if classifier and "pooler" not in params:
        raise core.HfCheckpointError("a classifier needs the pooler (BertForSequenceClassification layout)")
    hf_config = config.to_hf()
    if classifier:
        hf_config.num_labels = int(np.shape(params["classifier"]["kernel"])[1])
        hf_config.architectures = ["BertForSequenceClassification"]
    else:
        hf_config.architectures = ["BertModel"]
    tensors = core.params_to_hf(params, table(config.num_hidden_layers, pooler="pooler" in params, classifier=classifier))
    return hf_config, tensors
