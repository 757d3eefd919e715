"""BERT <-> Hugging Face: numerical parity with transformers' PyTorch BertModel / BertForSequenceClassification in
both directions (HF checkpoint -> import; our params -> export -> from_pretrained), and table coverage errors."""
import json

import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from bert_helpers import hf_config, random_params, max_abs_diff, padded_batch, randomize_torch, tiny_config, to_torch
from distill_ret.hf import core, export_to_hf, import_from_hf
from distill_ret.hf import bert as hf_bert
from distill_ret.models import heads
from distill_ret.models.bert import Bert, BertConfig

TOLERANCE = 1e-4


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu"])
def test_hf_bert_model_to_ours(tmp_path, hidden_act):
    config = tiny_config(hidden_act=hidden_act)
    torch.manual_seed(0)
    model = randomize_torch(transformers.BertModel(hf_config(config)), seed=1)
    model.save_pretrained(tmp_path, safe_serialization=True)
    imported_config, params = import_from_hf(tmp_path)
    assert imported_config == config
    assert sorted(params) == ["bert", "pooler"]
    ids, mask, types = padded_batch()
    with torch.no_grad():
        expected = model(*to_torch(ids, mask, types)).last_hidden_state.numpy()  # [batch, len, hidden]
    ours = Bert(config).apply({"params": params["bert"]}, ids, mask, types).last_hidden_state
    assert max_abs_diff(ours, expected) < TOLERANCE  # every position, padding included


@pytest.mark.parametrize("with_pooler", [True, False])
def test_ours_to_hf_bert_model(tmp_path, with_pooler):
    config = tiny_config()
    ids, mask, types = padded_batch(seed=3)
    params = {"bert": random_params(Bert(config), ids, mask, seed=5)}
    if with_pooler:
        rng = np.random.RandomState(0)
        params["pooler"] = {"kernel": rng.randn(32, 32).astype(np.float32), "bias": rng.randn(32).astype(np.float32)}
    export_to_hf(params, config, tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["BertModel"]
    model = transformers.BertModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        output = model(*to_torch(ids, mask, types))
    ours = Bert(config).apply({"params": params["bert"]}, ids, mask, types).last_hidden_state
    assert max_abs_diff(ours, output.last_hidden_state.numpy()) < TOLERANCE
    if with_pooler:
        np.testing.assert_array_equal(model.pooler.dense.weight.detach().numpy(), params["pooler"]["kernel"].T)


@pytest.mark.parametrize("num_labels", [1, 3])
def test_hf_sequence_classification_to_cross_encoder(tmp_path, num_labels):
    config = tiny_config()
    torch.manual_seed(0)
    model = randomize_torch(transformers.BertForSequenceClassification(hf_config(config, num_labels=num_labels)), 2)
    model.save_pretrained(tmp_path, safe_serialization=True)
    imported_config, params = import_from_hf(tmp_path)
    assert imported_config == config and sorted(params) == ["bert", "classifier", "pooler"]
    ids, mask, types = padded_batch(seed=1)
    with torch.no_grad():
        expected = model(*to_torch(ids, mask, types)).logits.numpy()  # [batch, num_labels]
    ours = heads.CrossEncoder(config, num_labels=num_labels).apply({"params": params}, ids, mask, types)
    assert ours.shape == expected.shape
    assert max_abs_diff(ours, expected) < TOLERANCE


def test_cross_encoder_to_hf_sequence_classification(tmp_path):
    config = tiny_config()
    ids, mask, types = padded_batch(seed=2)
    module = heads.CrossEncoder(config, num_labels=2)
    params = random_params(module, ids, mask, types, seed=7)
    export_to_hf(params, config, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["architectures"] == ["BertForSequenceClassification"]
    model = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert model.config.num_labels == 2
    with torch.no_grad():
        expected = model(*to_torch(ids, mask, types)).logits.numpy()
    assert max_abs_diff(module.apply({"params": params}, ids, mask, types), expected) < TOLERANCE
    _, reimported = import_from_hf(tmp_path)
    for path, value in core.flatten_params(params).items():
        np.testing.assert_array_equal(core.flatten_params(reimported)[path], value)


def test_pretraining_heads_and_buffers_are_skipped(tmp_path):
    config = tiny_config()
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(hf_config(config))
    model.save_pretrained(tmp_path, safe_serialization=True)
    tensors = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    assert any(name.startswith("cls.") for name in tensors)
    tensors["bert.embeddings.position_ids"] = np.arange(64)[None]
    safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    _, params = import_from_hf(tmp_path)
    assert sorted(params) == ["bert"]
    np.testing.assert_array_equal(params["bert"]["layers_1"]["output"]["kernel"],
                                  model.bert.encoder.layer[1].output.dense.weight.detach().numpy().T)


def test_missing_and_unknown_tensors_are_reported(tmp_path):
    config = tiny_config()
    transformers.BertModel(hf_config(config)).save_pretrained(tmp_path, safe_serialization=True)
    tensors = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
    broken = {k: v for k, v in tensors.items() if k != "encoder.layer.1.intermediate.dense.bias"}
    with pytest.raises(core.HfCheckpointError, match=r"missing tensors \['encoder.layer.1.intermediate.dense.bias'\]"):
        hf_bert.load(config.to_hf().to_dict(), broken, source="ckpt")
    with pytest.raises(core.HfCheckpointError, match="not understood.*encoder.layer.2.output.dense.weight"):
        hf_bert.load(config.to_hf().to_dict(), dict(tensors, **{"encoder.layer.2.output.dense.weight": np.zeros(2)}),
                     source="ckpt")
    with pytest.raises(core.HfCheckpointError, match="position embeddings"):
        hf_bert.load(dict(config.to_hf().to_dict(), position_embedding_type="relative_key"), tensors, source="ckpt")


def test_bi_encoder_params_need_a_tower_before_export(tmp_path):
    config = tiny_config()
    ids, mask, _ = padded_batch()
    params = random_params(heads.BiEncoder(config, tied=False), ids, mask, ids, mask)
    with pytest.raises(core.HfCheckpointError, match="bert_params_from_bi_encoder"):
        export_to_hf(params, config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    export_to_hf(heads.bert_params_from_bi_encoder(params, "query"), config, tmp_path / "out")
    _, reimported = import_from_hf(tmp_path / "out")
    np.testing.assert_array_equal(reimported["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                  params["query_encoder"]["embeddings"]["word_embeddings"]["embedding"])


def test_config_round_trip():
    config = tiny_config(hidden_act="gelu_new", layer_norm_eps=1e-7, type_vocab_size=3)
    assert BertConfig.from_hf(config.to_hf()) == config
    assert BertConfig.from_hf(config.to_hf().to_dict(), dtype="bfloat16").dtype == "bfloat16"
