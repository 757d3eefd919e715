"""Property tests of the Hugging Face readers: random bytes and random mutations of a valid tiny checkpoint
(config.json, model.safetensors, a sharded index) give a result or HfCheckpointError, never another exception."""
import json
import pathlib
import shutil
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bert_helpers import padded_batch, random_params, tiny_config
from distill_ret.hf import core, export_to_hf, import_from_hf
from distill_ret.models import heads

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> pathlib.Path:
    """A tiny cross-encoder checkpoint (BertForSequenceClassification): config.json + model.safetensors."""
    directory = tmp_path_factory.mktemp("valid") / "model"
    config = tiny_config(num_hidden_layers=1)
    ids, mask, types = padded_batch()
    export_to_hf(random_params(heads.CrossEncoder(config), ids, mask, types), config, directory)
    return directory


def _copy(valid: pathlib.Path) -> pathlib.Path:
    directory = pathlib.Path(tempfile.mkdtemp()) / "model"
    shutil.copytree(valid, directory)
    return directory


def _expect_result_or_checkpoint_error(read, directory: pathlib.Path):
    try:
        read(directory)
    except core.HfCheckpointError as error:
        assert str(directory) in str(error)  # the message names the file or directory
    finally:
        shutil.rmtree(directory.parent)


def _mutate_bytes(data: bytes, draw) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "random", "append"]))
    if kind == "truncate":
        return data[:draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "flip":
        mutated = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(mutated) - 1))
            mutated[position] = draw(st.integers(0, 255))
        return bytes(mutated)
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    return draw(st.binary(max_size=256))


def _mutate_json(value: dict, draw) -> dict:
    """Drops, replaces or adds keys, at the top or one level down."""
    value = json.loads(json.dumps(value))
    for _ in range(draw(st.integers(1, 3))):
        target = value
        nested = [key for key, child in value.items() if isinstance(child, dict) and child]
        if nested and draw(st.booleans()):
            target = value[draw(st.sampled_from(sorted(nested)))]
        keys = sorted(target)
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop" and keys:
            del target[draw(st.sampled_from(keys))]
        elif action == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
        else:
            target[draw(st.text(max_size=6))] = draw(JSON_VALUES)
    return value


def _split_safetensors(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


def _join_safetensors(header: dict, body: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + body


@SETTINGS
@given(data=st.data())
def test_config_json_bytes_and_mutations(valid, data):
    directory = _copy(valid)
    path = directory / core.CONFIG_FILE
    if data.draw(st.booleans()):
        path.write_bytes(_mutate_bytes(path.read_bytes(), data.draw))
    else:
        path.write_text(json.dumps(_mutate_json(json.loads(path.read_text()), data.draw)))
    reader = data.draw(st.sampled_from([core.read_config, import_from_hf]))
    _expect_result_or_checkpoint_error(reader, directory)


@SETTINGS
@given(data=st.data())
def test_safetensors_bytes_and_mutations(valid, data):
    directory = _copy(valid)
    path = directory / core.SAFETENSORS_FILE
    original = path.read_bytes()
    if data.draw(st.booleans()):
        path.write_bytes(_mutate_bytes(original, data.draw))
    else:
        header, body = _split_safetensors(original)
        name = data.draw(st.sampled_from(sorted(key for key in header if key != "__metadata__")))
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", "drop", "rename"]))
        if field == "dtype":
            header[name]["dtype"] = data.draw(st.sampled_from(["F64", "F16", "BF16", "I64", "BOOL", "U8", "X", 3]))
        elif field == "shape":
            header[name]["shape"] = data.draw(st.lists(st.integers(-2, 2**33), max_size=3) | JSON_VALUES)
        elif field == "data_offsets":
            header[name]["data_offsets"] = data.draw(st.lists(st.integers(-2, len(body) + 8), max_size=3))
        elif field == "drop":
            del header[name]
        else:
            header["x." + name] = header.pop(name)
        path.write_bytes(_join_safetensors(header, body))
    reader = data.draw(st.sampled_from([core.read_safetensors, import_from_hf]))
    _expect_result_or_checkpoint_error(reader, directory)


@SETTINGS
@given(data=st.data())
def test_sharded_index_bytes_and_mutations(valid, data):
    directory = _copy(valid)
    single = directory / core.SAFETENSORS_FILE
    header, _ = _split_safetensors(single.read_bytes())
    shard = "model-00001-of-00001.safetensors"
    single.rename(directory / shard)
    index = {"metadata": {"total_size": 1}, "weight_map": {name: shard for name in header if name != "__metadata__"}}
    path = directory / core.SAFETENSORS_INDEX
    if data.draw(st.booleans()):
        path.write_bytes(_mutate_bytes(json.dumps(index).encode(), data.draw))
    else:
        path.write_text(json.dumps(_mutate_json(index, data.draw)))
    reader = data.draw(st.sampled_from([core.read_safetensors, import_from_hf]))
    _expect_result_or_checkpoint_error(reader, directory)


def test_the_unmutated_checkpoint_reads(valid):
    config, params = import_from_hf(valid)
    assert config == tiny_config(num_hidden_layers=1) and sorted(params) == ["bert", "classifier", "pooler"]
    assert np.shape(params["classifier"]["kernel"]) == (32, 1)
