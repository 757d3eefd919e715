"""Generic machinery for Hugging Face checkpoints: declarative name tables, safetensors I/O, atomic export.

A model family (`hf/t5.py`, `hf/bert.py`) describes its checkpoint as a table of `Mapping`s between a '/'-joined path
in our params tree and a Hugging Face tensor name, with `{i}` style placeholders for repeated layers and small hook
functions for layout changes (transposes, reshapes). This module expands the tables, converts in both directions
with strict coverage checks, reads `model.safetensors` (single or sharded with an index) and writes export
directories atomically. Pickled checkpoints are never loaded.
"""
import dataclasses
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Callable, Iterable, Mapping as MappingType, Sequence

import numpy as np
import safetensors.numpy

from distill_ret.errors import UserError

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")

Array = np.ndarray
Hook = Callable[[Array], Array]


class HfCheckpointError(UserError, ValueError):
    """A Hugging Face directory that cannot be read or does not match the model's table."""


def identity(x: Array) -> Array:
    return x


def transpose(x: Array) -> Array:
    """torch Linear [out, in] <-> our Dense kernel [in, out]."""
    return np.ascontiguousarray(x.T)


@dataclasses.dataclass(frozen=True)
class Mapping:
    """One tensor: our params path ('encoder/layers_{i}/mlp/wi/kernel') <-> HF name ('encoder.block.{i}...')."""

    flax: str
    hf: str
    to_flax: Hook = identity
    to_hf: Hook = identity


def expand(table: Iterable[Mapping], counts: MappingType[str, int]) -> list[Mapping]:
    """Expands `{name}` placeholders over range(counts[name]); names may nest ('{i}' and '{j}')."""
    expanded: list[Mapping] = []
    for mapping in table:
        names = sorted(set(re.findall(r"{(\w+)}", mapping.flax)) | set(re.findall(r"{(\w+)}", mapping.hf)))
        combos: list[dict[str, int]] = [{}]
        for name in names:
            if name not in counts:
                raise KeyError(f"table entry {mapping.flax!r} uses placeholder {{{name}}} with no count given")
            combos = [dict(c, **{name: k}) for c in combos for k in range(counts[name])]
        for combo in combos:
            expanded.append(dataclasses.replace(mapping, flax=mapping.flax.format(**combo), hf=mapping.hf.format(**combo)))
    return expanded


def flatten_params(params: MappingType[str, Any], prefix: str = "") -> dict[str, Array]:
    """Nested params dict -> {'a/b/c': array}."""
    flat: dict[str, Array] = {}
    for key, value in params.items():
        path = f"{prefix}{key}"
        if isinstance(value, MappingType):
            flat.update(flatten_params(value, path + "/"))
        else:
            flat[path] = np.asarray(value)
    return flat


def unflatten_params(flat: MappingType[str, Array]) -> dict[str, Any]:
    """{'a/b/c': array} -> nested params dict."""
    params: dict[str, Any] = {}
    for path, value in flat.items():
        node = params
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return params


def hf_to_params(
    tensors: MappingType[str, Array], table: Sequence[Mapping], *, ignore: Sequence[str] = (), source: str = "checkpoint"
) -> dict[str, Any]:
    """HF tensors -> our nested params. Every table entry must be present; unused tensors must match `ignore`.

    Several HF names may map to one of our paths (tied embeddings): they must hold equal values.
    """
    flat: dict[str, Array] = {}
    missing = [m.hf for m in table if m.hf not in tensors]
    if missing:
        raise HfCheckpointError(f"{source}: missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    for mapping in table:
        value = np.asarray(mapping.to_flax(np.asarray(tensors[mapping.hf], dtype=np.float32)))
        if mapping.flax in flat:
            if flat[mapping.flax].shape != value.shape or not np.array_equal(flat[mapping.flax], value):
                raise HfCheckpointError(f"{source}: tied tensor {mapping.hf} differs from the others mapped to {mapping.flax}")
            continue
        flat[mapping.flax] = value
    used = {m.hf for m in table}
    unused = [name for name in tensors if name not in used and not any(re.fullmatch(p, name) for p in ignore)]
    if unused:
        raise HfCheckpointError(f"{source}: tensors not understood by this model's table: {sorted(unused)[:8]}")
    return unflatten_params(flat)


def params_to_hf(params: MappingType[str, Any], table: Sequence[Mapping]) -> dict[str, Array]:
    """Our nested params -> HF tensors. Every parameter must be covered by the table."""
    flat = flatten_params(params)
    covered = {m.flax for m in table}
    uncovered = sorted(set(flat) - covered)
    if uncovered:
        raise HfCheckpointError(f"parameters with no Hugging Face name: {uncovered[:8]}")
    absent = sorted(covered - set(flat))
    if absent:
        raise HfCheckpointError(f"table names parameters the model does not have: {absent[:8]}")
    return {m.hf: np.ascontiguousarray(m.to_hf(np.asarray(flat[m.flax], dtype=np.float32))) for m in table}


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = pathlib.Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise HfCheckpointError(f"{path}: missing; a Hugging Face model directory needs config.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise HfCheckpointError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None


def read_safetensors(directory: str | os.PathLike) -> dict[str, Array]:
    """Reads model.safetensors, or the shards listed in model.safetensors.index.json. Refuses pickles."""
    directory = pathlib.Path(directory)
    single, index = directory / SAFETENSORS_FILE, directory / SAFETENSORS_INDEX
    if single.is_file():
        return dict(safetensors.numpy.load_file(str(single)))
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        if not isinstance(weight_map, dict):
            raise HfCheckpointError(f"{index}: expected a 'weight_map' object")
        tensors: dict[str, Array] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = directory / shard
            if not shard_path.is_file():
                raise HfCheckpointError(f"{index}: shard {shard} is listed but missing")
            tensors.update(safetensors.numpy.load_file(str(shard_path)))
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise HfCheckpointError(f"{index}: tensors listed but absent from their shards: {missing[:8]}")
        return tensors
    pickles = [name for name in PICKLE_FILES if (directory / name).exists()]
    if pickles:
        raise HfCheckpointError(
            f"{directory / pickles[0]}: only safetensors checkpoints are read (pickles are never loaded). Convert it "
            "once where you trust the file: `transformers.AutoModel.from_pretrained(dir).save_pretrained(out_dir, "
            "safe_serialization=True)`, then point distill_ret at out_dir."
        )
    raise HfCheckpointError(f"{directory}: no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX} found")


def write_directory(
    directory: str | os.PathLike,
    tensors: MappingType[str, Array],
    hf_config: Any,
    tokenizer: Any = None,
) -> pathlib.Path:
    """Writes config.json, model.safetensors and tokenizer files into `directory` atomically.

    Everything goes to a temporary sibling first; it replaces `directory` only once complete, so a failure leaves
    either the previous directory or nothing. `hf_config` is a `transformers.PretrainedConfig`.
    """
    directory = pathlib.Path(directory).resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        hf_config.save_pretrained(str(staging))
        safetensors.numpy.save_file(dict(tensors), str(staging / SAFETENSORS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(str(staging))
        previous = None
        if directory.exists():
            previous = directory.parent / f".{directory.name}.previous"
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(directory, previous)
        os.replace(staging, directory)
        if previous is not None:
            shutil.rmtree(previous)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory
