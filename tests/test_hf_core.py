"""The generic HF mapping core: table expansion, strict coverage, tied tensors, safetensors I/O, pickle refusal."""
import json

import numpy as np
import pytest
import safetensors.numpy
import transformers

from distill_ret.hf import core

TABLE = [
    core.Mapping("embed/embedding", "shared.weight"),
    core.Mapping("embed/embedding", "encoder.embed_tokens.weight"),
    core.Mapping("layers_{i}/dense/kernel", "layer.{i}.dense.weight", core.transpose, core.transpose),
]


def _tensors():
    rng = np.random.RandomState(0)
    emb = rng.randn(5, 3).astype(np.float32)
    return {"shared.weight": emb, "encoder.embed_tokens.weight": emb.copy(),
            "layer.0.dense.weight": rng.randn(4, 3).astype(np.float32),
            "layer.1.dense.weight": rng.randn(4, 3).astype(np.float32)}


def test_round_trip_with_layers_transposes_and_tied_tensors():
    table = core.expand(TABLE, {"i": 2})
    assert [m.hf for m in table][2:] == ["layer.0.dense.weight", "layer.1.dense.weight"]
    tensors = _tensors()
    params = core.hf_to_params(tensors, table)
    assert params["layers_1"]["dense"]["kernel"].shape == (3, 4)
    np.testing.assert_array_equal(params["layers_1"]["dense"]["kernel"], tensors["layer.1.dense.weight"].T)
    back = core.params_to_hf(params, table)
    assert sorted(back) == sorted(tensors)
    for name in tensors:
        np.testing.assert_array_equal(back[name], tensors[name])


def test_strict_coverage_errors():
    table = core.expand(TABLE, {"i": 2})
    tensors = _tensors()
    with pytest.raises(core.HfCheckpointError, match="missing tensors .*layer.1.dense.weight"):
        core.hf_to_params({k: v for k, v in tensors.items() if k != "layer.1.dense.weight"}, table)
    with pytest.raises(core.HfCheckpointError, match="not understood.*extra.bias"):
        core.hf_to_params(dict(tensors, **{"extra.bias": np.zeros(2, np.float32)}), table)
    assert "layers_0" in core.hf_to_params(dict(tensors, **{"extra.bias": np.zeros(2)}), table, ignore=[r"extra\..*"])
    untied = dict(tensors, **{"encoder.embed_tokens.weight": tensors["shared.weight"] + 1})
    with pytest.raises(core.HfCheckpointError, match="tied tensor"):
        core.hf_to_params(untied, table)
    params = core.hf_to_params(tensors, table)
    params["stray"] = {"kernel": np.zeros(1)}
    with pytest.raises(core.HfCheckpointError, match="no Hugging Face name.*stray/kernel"):
        core.params_to_hf(params, table)
    with pytest.raises(KeyError, match="placeholder"):
        core.expand(TABLE, {})


def test_sharded_safetensors_and_pickle_refusal(tmp_path):
    tensors = _tensors()
    names = sorted(tensors)
    safetensors.numpy.save_file({n: tensors[n] for n in names[:2]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    safetensors.numpy.save_file({n: tensors[n] for n in names[2:]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {n: f"model-0000{1 + (i >= 2)}-of-00002.safetensors" for i, n in enumerate(names)}}
    (tmp_path / core.SAFETENSORS_INDEX).write_text(json.dumps(index))
    loaded = core.read_safetensors(tmp_path)
    assert sorted(loaded) == names
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(core.HfCheckpointError, match="pytorch_model.bin: only safetensors.*save_pretrained"):
        core.read_safetensors(pickled)
    with pytest.raises(core.HfCheckpointError, match="config.json: missing"):
        core.read_config(pickled)


def test_write_directory_is_atomic(tmp_path):
    out = tmp_path / "export"
    config = transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    core.write_directory(out, _tensors(), config)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]

    class Broken:
        def save_pretrained(self, directory):
            raise RuntimeError("tokenizer failed")

    with pytest.raises(RuntimeError, match="tokenizer failed"):
        core.write_directory(out, {"x": np.zeros(1, np.float32)}, config, tokenizer=Broken())
    # The previous export is intact and no staging directory is left behind.
    assert sorted(core.read_safetensors(out)) == sorted(_tensors())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
