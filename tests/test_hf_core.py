"""The generic HF mapping core: table expansion, strict coverage, tied tensors, safetensors I/O, pickle refusal."""
import json

import numpy as np
import pytest
import safetensors.numpy
import transformers

from bert_helpers import padded_batch, random_params, tiny_config
from distill_ret.hf import core, export_to_hf, identity, import_from_hf
from distill_ret.models.bert import Bert

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


def _bert_config():
    return transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)


class BrokenTokenizer:
    def save_pretrained(self, directory):
        raise RuntimeError("tokenizer failed")


def test_write_directory_creates_a_new_directory_atomically(tmp_path):
    out = tmp_path / "export"
    with pytest.raises(RuntimeError, match="tokenizer failed"):
        core.write_directory(out, _tensors(), _bert_config(), tokenizer=BrokenTokenizer())
    assert list(tmp_path.iterdir()) == []  # no output and no staging directory left behind
    core.write_directory(out, _tensors(), _bert_config())
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(core.read_safetensors(out)) == sorted(_tensors())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_write_directory_never_destroys_files_it_did_not_write(tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(core.OutputExistsError, match="already holds files"):
        core.write_directory(out, _tensors(), _bert_config())
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "vocab.txt"]

    core.write_directory(out, _tensors(), _bert_config(), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt", "vocab.txt"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "vocab.txt").read_text() == "[PAD]\n"

    # A failed overwrite leaves every file as it was and no staging directory inside.
    with pytest.raises(RuntimeError, match="tokenizer failed"):
        core.write_directory(out, {"x": np.zeros(1, np.float32)}, _bert_config(), tokenizer=BrokenTokenizer(),
                             overwrite=True)
    assert sorted(core.read_safetensors(out)) == sorted(_tensors())
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "notes.txt", "vocab.txt"]

    # Copied tokenizer files replace their own names only.
    source = tmp_path / "tokenizer"
    source.mkdir()
    (source / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    core.write_directory(out, _tensors(), _bert_config(), copies=core.tokenizer_files(source), overwrite=True)
    assert (out / "vocab.txt").read_text() == "[PAD]\n[UNK]\n" and (out / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(core.OutputExistsError, match="not a directory"):
        core.write_directory(tmp_path / "file", _tensors(), _bert_config(), overwrite=True)


def test_tokenizer_files_need_a_vocabulary(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")
    assert core.tokenizer_files(tmp_path) == []  # a config alone is no tokenizer
    (tmp_path / "spiece.model").write_bytes(b"x")
    assert [p.name for p in core.tokenizer_files(tmp_path)] == ["spiece.model", "tokenizer_config.json"]


def test_load_tokenizer_refuses_a_directory_without_a_vocabulary(tmp_path):
    # transformers would build a made-up tokenizer from config.json alone; we refuse instead.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 104}))
    with pytest.raises(core.HfCheckpointError, match="no tokenizer files"):
        identity.load_tokenizer(tmp_path)


@pytest.mark.parametrize("architecture, loader", [
    ("BertForSequenceClassification", "AutoModelForSequenceClassification"),
    ("T5ForConditionalGeneration", "T5ForConditionalGeneration"),
    ("BertModel", "AutoModel"),
    (None, "AutoModel"),
])
def test_pickle_advice_keeps_the_head(tmp_path, architecture, loader):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    if architecture:
        (tmp_path / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    with pytest.raises(core.HfCheckpointError) as raised:
        core.read_safetensors(tmp_path)
    assert f"`transformers.{loader}.from_pretrained(dir).save_pretrained(out_dir" in str(raised.value)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_corrupt_safetensors_and_configs_name_the_file(tmp_path):
    safetensors.numpy.save_file(_tensors(), str(tmp_path / "model.safetensors"))
    valid = (tmp_path / "model.safetensors").read_bytes()
    for broken in (valid[:-7], valid[:5], b"", b"\xff" * 40):
        _write(tmp_path / "model.safetensors", broken)
        with pytest.raises(core.HfCheckpointError, match=f"{tmp_path / 'model.safetensors'}: not a valid safetensors"):
            core.read_safetensors(tmp_path)
    for text, message in [(b"{", "config.json:1: invalid JSON"), (b"\xff{}", "config.json: not UTF-8"),
                          (b"[1, 2]", "config.json: expected a JSON object, got list"),
                          (b"[" * 100000, "config.json: invalid JSON")]:
        _write(tmp_path / "config.json", text)
        with pytest.raises(core.HfCheckpointError, match=message):
            core.read_config(tmp_path)


def test_bad_index_files_name_the_index(tmp_path):
    index = tmp_path / core.SAFETENSORS_INDEX
    safetensors.numpy.save_file(_tensors(), str(tmp_path / "shard.safetensors"))
    cases = [
        ("{", "model.safetensors.index.json:1: invalid JSON"),
        ('{"weight_map": [1]}', "expected a 'weight_map' object"),
        ('{"weight_map": {"shared.weight": "absent.safetensors"}}', "shard absent.safetensors is listed but missing"),
        ('{"weight_map": {"shared.weight": 3}}', "names shard 3, which is not a file name"),
        ('{"weight_map": {"shared.weight": ["a"]}}', "which is not a file name"),
        ('{"weight_map": {"shared.weight": "../shard.safetensors"}}', "which is not a file name"),
        ('{"weight_map": {"absent.weight": "shard.safetensors"}}', r"absent from their shards: \['absent.weight'\]"),
    ]
    for text, message in cases:
        index.write_text(text)
        with pytest.raises(core.HfCheckpointError, match=message):
            core.read_safetensors(tmp_path)
    index.write_text('{"weight_map": {"shared.weight": "shard.safetensors"}}')
    assert sorted(core.read_safetensors(tmp_path)) == sorted(_tensors())


def test_shape_and_dtype_checks_name_the_tensors():
    table = core.expand(TABLE, {"i": 2})
    params = core.hf_to_params(_tensors(), table)
    expected = {"embed/embedding": (5, 3), "layers_0/dense/kernel": (3, 4), "layers_1/dense/kernel": (3, 6)}
    with pytest.raises(core.HfCheckpointError,
                       match=r"src: 1 tensor shapes do not match the model config: layer.1.dense.weight: \(4, 3\) "
                             r"\(config gives \(6, 3\)\)"):
        core.check_shapes(params, expected, table, "src")
    core.check_shapes(params, dict(expected, **{"layers_1/dense/kernel": (3, 4)}), table, "src")
    integers = dict(_tensors(), **{"layer.0.dense.weight": np.ones((4, 3), np.int64)})
    with pytest.raises(core.HfCheckpointError, match=r"floating point, got \['layer.0.dense.weight \(int64\)'\]"):
        core.hf_to_params(integers, table)


def test_config_values_are_checked_before_any_library_sees_them():
    fields = dict(required=("hidden_size",), positive=("hidden_size", "num_layers"), token_ids=("pad_token_id",),
                  rates=("dropout",), strings=("act",), source="dir/config.json")
    core.check_config_values({"hidden_size": 8, "pad_token_id": None, "dropout": 0.1, "act": "gelu"}, **fields)
    for values, message in [
        ({}, r"required fields missing: \['hidden_size'\]"),
        ({"hidden_size": 0}, r"hidden_size must be a positive integer below 2\*\*31, got 0"),
        ({"hidden_size": 2**31}, "hidden_size must be a positive integer below"),
        ({"hidden_size": True}, "hidden_size must be a positive integer below 2..31, got True"),
        ({"hidden_size": 8, "num_layers": "2"}, "num_layers must be a positive integer below 2..31, got .2."),
        ({"hidden_size": 8, "pad_token_id": -1}, "pad_token_id must be a token id"),
        ({"hidden_size": 8, "dropout": float("nan")}, "dropout must be a finite number >= 0"),
        ({"hidden_size": 8, "act": 3}, "act must be a string"),
    ]:
        with pytest.raises(core.HfCheckpointError, match="dir/config.json: " + message):
            core.check_config_values(values, **fields)


def test_import_checks_config_json_against_the_tensors(tmp_path):
    """Sizes in config.json that the tensors do not have are refused naming the tensor, before anything is built."""
    config = tiny_config()
    ids, mask, types = padded_batch()
    export_to_hf({"bert": random_params(Bert(config), ids, mask, types)}, config, tmp_path / "model")
    written = json.loads((tmp_path / "model" / "config.json").read_text())
    cases = [
        (dict(intermediate_size=48), r"model: 6 tensor shapes do not match the model config"),
        (dict(num_hidden_layers=2**30),
         r"config.json gives num_hidden_layers=1073741824, but the checkpoint has no "
         r"encoder.layer.1073741823.output.dense.weight"),
        (dict(hidden_size=None), r"config.json: hidden_size must be a positive integer"),
    ]
    for update, message in cases:
        (tmp_path / "model" / "config.json").write_text(json.dumps({**written, **update}))
        with pytest.raises(core.HfCheckpointError, match=message):
            import_from_hf(tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text(json.dumps({**written, "intermediate_size": 48}))
    with pytest.raises(core.HfCheckpointError) as raised:
        import_from_hf(tmp_path / "model")
    assert "encoder.layer.0.intermediate.dense.weight: (64, 32) (config gives (48, 32))" in str(raised.value)
    assert "encoder.layer.0.output.dense.weight: (32, 64) (config gives (32, 48))" in str(raised.value)
    del written["hidden_size"]
    (tmp_path / "model" / "config.json").write_text(json.dumps(written))
    with pytest.raises(core.HfCheckpointError, match=r"required fields missing: \['hidden_size'\]"):
        import_from_hf(tmp_path / "model")
