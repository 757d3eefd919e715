"""Generic machinery for Hugging Face checkpoints: declarative name tables, safetensors I/O, atomic export.

A model family (`hf/t5.py`, `hf/bert.py`) describes its checkpoint as a table of `Mapping`s between a '/'-joined path
in our params tree and a Hugging Face tensor name, with `{i}` style placeholders for repeated layers and small hook
functions for layout changes (transposes, reshapes). This module expands the tables, converts in both directions
with strict coverage checks, reads `model.safetensors` (single or sharded with an index) and writes export
directories without destroying anything. Pickled checkpoints are never loaded; every unreadable or malformed file
raises `HfCheckpointError` naming it.
"""
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Callable, Iterable, Mapping as MappingType, Sequence

import numpy as np
import safetensors
import safetensors.numpy
from huggingface_hub.errors import StrictDataclassError

from distill_ret.data import formats
from distill_ret.errors import UserError

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
# What transformers' config classes raise for values they refuse (transformers 5 validates field types strictly).
CONFIG_VALUE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, StrictDataclassError)
MAX_SIZE = 2**31  # a size in config.json beyond int32 is not a model's
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
            expanded.append(dataclasses.replace(mapping, flax=mapping.flax.format(**combo),
                                                hf=mapping.hf.format(**combo)))
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
    tensors: MappingType[str, Array], table: Sequence[Mapping], *, ignore: Sequence[str] = (),
    source: str = "checkpoint"
) -> dict[str, Any]:
    """HF tensors -> our nested params. Every table entry must be present; unused tensors must match `ignore`.

    Several HF names may map to one of our paths (tied embeddings): they must hold equal values.
    """
    flat: dict[str, Array] = {}
    missing = [m.hf for m in table if m.hf not in tensors]
    if missing:
        raise HfCheckpointError(f"{source}: missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    check_weight_dtypes(tensors, [m.hf for m in table], source)
    for mapping in table:
        value = np.asarray(mapping.to_flax(np.asarray(tensors[mapping.hf], dtype=np.float32)))
        if mapping.flax in flat:
            if flat[mapping.flax].shape != value.shape or not np.array_equal(flat[mapping.flax], value):
                raise HfCheckpointError(f"{source}: tied tensor {mapping.hf} differs from the others "
                                        f"mapped to {mapping.flax}")
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


def _is_float(dtype: np.dtype) -> bool:
    """float16/32/64 and the ml_dtypes floats safetensors yields (bfloat16, float8_*)."""
    return dtype.kind == "f" or "float" in dtype.name


def check_weight_dtypes(tensors: MappingType[str, Array], names: Iterable[str], source: str) -> None:
    """Raises HfCheckpointError when a weight the model reads is not floating point (bool, int, complex...)."""
    wrong = [f"{name} ({tensors[name].dtype})" for name in names
             if name in tensors and not _is_float(tensors[name].dtype)]
    if wrong:
        raise HfCheckpointError(f"{source}: weights must be floating point, got {wrong[:8]}")


def _hf_shape(mapping: Mapping, shape: Sequence[int]) -> tuple[int, ...] | None:
    """`shape` (ours) as the Hugging Face tensor's shape, learnt from the hook on a tiny probe (no large array is
    made); None when the hook is not a permutation of axes."""
    probe = tuple(range(2, 2 + len(shape)))  # distinct sizes, so the output reveals the axis order
    try:
        out = tuple(np.shape(mapping.to_hf(np.zeros(probe, np.float32))))
    except ValueError:
        return None
    if sorted(out) != sorted(probe):
        return None
    return tuple(int(shape[probe.index(size)]) for size in out)


def check_shapes(params: MappingType[str, Any], expected: MappingType[str, tuple[int, ...]], table: Sequence[Mapping],
                 source: str) -> None:
    """Raises HfCheckpointError naming every parameter whose shape differs from the one the model config gives.

    `expected` maps our '/'-joined paths to shapes (our layout); the message gives Hugging Face names and shapes.
    """
    hf_names = {m.flax: m for m in table}
    wrong = []
    for path, value in flatten_params(params).items():
        want = tuple(expected.get(path, np.shape(value)))
        if tuple(np.shape(value)) != want:
            mapping = hf_names.get(path)
            got_hf, want_hf = (None, None) if mapping is None else (_hf_shape(mapping, np.shape(value)),
                                                                    _hf_shape(mapping, want))
            if got_hf is None or want_hf is None:
                wrong.append(f"{path}: {tuple(np.shape(value))} (config gives {want})")
            else:
                wrong.append(f"{mapping.hf}: {got_hf} (config gives {want_hf})")
    if wrong:
        raise HfCheckpointError(
            f"{source}: {len(wrong)} tensor shapes do not match the model config: {'; '.join(wrong[:6])}"
            f"{' ...' if len(wrong) > 6 else ''}"
        )


def check_config_values(hf_config: MappingType[str, Any], *, required: Sequence[str], positive: Sequence[str],
                        token_ids: Sequence[str], rates: Sequence[str], strings: Sequence[str], source: str) -> None:
    """Validates the config.json values a model family reads before any library sees them.

    `required` keys must be present (no library default stands in for a size); `positive` sizes are integers in
    [1, 2**31), `token_ids` integers >= 0 (or null), `rates` finite numbers >= 0, `strings` strings. Raises
    HfCheckpointError naming the file and the key.
    """
    missing = [key for key in required if key not in hf_config]
    if missing:
        raise HfCheckpointError(f"{source}: required fields missing: {missing}")

    def is_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    for key in positive:
        if key in hf_config and not (is_int(hf_config[key]) and 0 < hf_config[key] < MAX_SIZE):
            raise HfCheckpointError(f"{source}: {key} must be a positive integer below 2**31, got {hf_config[key]!r}")
    for key in token_ids:
        value = hf_config.get(key)
        values = value if isinstance(value, list) else [value]
        if not all(v is None or (is_int(v) and v >= 0) for v in values):
            raise HfCheckpointError(f"{source}: {key} must be a token id (an integer >= 0), got {value!r}")
    for key in rates:
        value = hf_config.get(key, 0.0)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")):
            raise HfCheckpointError(f"{source}: {key} must be a finite number >= 0, got {value!r}")
    for key in strings:
        if key in hf_config and not isinstance(hf_config[key], str):
            raise HfCheckpointError(f"{source}: {key} must be a string, got {hf_config[key]!r}")


def check_layer_count(tensors: MappingType[str, Array], last_layer_tensor: str, count: int, field: str,
                      source: str) -> None:
    """Refuses a config.json layer count the checkpoint does not have before a table is expanded over it.

    `last_layer_tensor` is a name with `{i}`; the tensor of layer count - 1 must exist.
    """
    name = last_layer_tensor.format(i=count - 1)
    if name not in tensors:
        raise HfCheckpointError(f"{source}: config.json gives {field}={count}, but the checkpoint has no {name}")


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """config.json of a Hugging Face directory as a dict; HfCheckpointError naming the file if it cannot be."""
    path = pathlib.Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise HfCheckpointError(f"{path}: missing; a Hugging Face model directory needs config.json")
    return _read_json_object(path)


def _read_json_object(path: pathlib.Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
        value = json.loads(text)
    except OSError as error:
        raise HfCheckpointError(f"{path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise HfCheckpointError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise HfCheckpointError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    except RecursionError:
        raise HfCheckpointError(f"{path}: invalid JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise HfCheckpointError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _load_safetensors_file(path: pathlib.Path) -> dict[str, Array]:
    try:
        return dict(safetensors.numpy.load_file(str(path)))
    except safetensors.SafetensorError as error:
        raise HfCheckpointError(f"{path}: not a valid safetensors file ({error})") from None
    except OSError as error:
        raise HfCheckpointError(f"{path}: cannot be read ({error.strerror})") from None


def _shard_names(index: pathlib.Path) -> tuple[dict[str, str], list[str]]:
    """(tensor name -> shard file name, sorted shard names) of an index.json, each shard a plain file name."""
    weight_map = _read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise HfCheckpointError(f"{index}: expected a 'weight_map' object")
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or shard != pathlib.PurePath(shard).name or shard in (".", ".."):
            raise HfCheckpointError(f"{index}: tensor {name!r} names shard {shard!r}, which is not a file name")
    return weight_map, sorted(set(weight_map.values()))


def pickle_conversion_advice(directory: pathlib.Path) -> str:
    """The transformers command that re-saves a pickled checkpoint as safetensors without losing its head."""
    architectures = []
    with contextlib.suppress(HfCheckpointError):
        architectures = read_config(directory).get("architectures") or []
    architecture = architectures[0] if isinstance(architectures, list) and architectures else ""
    if not isinstance(architecture, str):
        architecture = ""
    if architecture.endswith("ForSequenceClassification"):
        loader = "AutoModelForSequenceClassification"
    elif architecture == "T5ForConditionalGeneration":
        loader = "T5ForConditionalGeneration"
    else:
        loader = "AutoModel"
    return (f"`transformers.{loader}.from_pretrained(dir).save_pretrained(out_dir, safe_serialization=True)`"
            + (f" (keeps the {architecture} head)" if loader != "AutoModel" else ""))


def read_safetensors(directory: str | os.PathLike) -> dict[str, Array]:
    """Reads model.safetensors, or the shards listed in model.safetensors.index.json. Refuses pickles.

    Any unreadable, truncated or corrupt file raises HfCheckpointError naming it.
    """
    directory = pathlib.Path(directory)
    single, index = directory / SAFETENSORS_FILE, directory / SAFETENSORS_INDEX
    if single.is_file():
        return _load_safetensors_file(single)
    if index.is_file():
        weight_map, shards = _shard_names(index)
        tensors: dict[str, Array] = {}
        for shard in shards:
            shard_path = directory / shard
            if not shard_path.is_file():
                raise HfCheckpointError(f"{index}: shard {shard} is listed but missing")
            tensors.update(_load_safetensors_file(shard_path))
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise HfCheckpointError(f"{index}: tensors listed but absent from their shards: {missing[:8]}")
        return tensors
    pickles = [name for name in PICKLE_FILES if (directory / name).exists()]
    if pickles:
        raise HfCheckpointError(
            f"{directory / pickles[0]}: only safetensors checkpoints are read (pickles are never loaded). Convert it "
            f"once where you trust the file: {pickle_conversion_advice(directory)}, then point distill_ret at out_dir."
        )
    raise HfCheckpointError(f"{directory}: no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX} found")


# ----------------------------------------------------------------------------------------------- writing

# Files that make up a tokenizer in a Hugging Face directory; VOCABULARY_FILES hold the vocabulary itself.
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                    "tokenizer.model")
TOKENIZER_FILES = VOCABULARY_FILES + ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                                      "merges.txt", "chat_template.jinja")


def tokenizer_files(directory: str | os.PathLike) -> list[pathlib.Path]:
    """The tokenizer files of a directory; [] when it holds no vocabulary (a model-only directory)."""
    directory = pathlib.Path(directory)
    if not any((directory / name).is_file() for name in VOCABULARY_FILES):
        return []
    return [directory / name for name in TOKENIZER_FILES if (directory / name).is_file()]


class OutputExistsError(UserError, FileExistsError):
    """An export would write into a directory that already holds files, and replacing them was not asked for."""


def _stage_files(staging: pathlib.Path, tensors: MappingType[str, Array], hf_config: Any, tokenizer: Any,
                 copies: Sequence[pathlib.Path]) -> list[pathlib.Path]:
    """Writes every export file into `staging` with the umask's permissions; returns them."""
    hf_config.save_pretrained(str(staging))
    safetensors.numpy.save_file(dict(tensors), str(staging / SAFETENSORS_FILE), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(staging))
    for source in copies:
        shutil.copyfile(source, staging / source.name)
    written = sorted(path for path in staging.iterdir() if path.is_file())
    for path in written:
        os.chmod(path, formats.output_mode())
    return written


def write_directory(
    directory: str | os.PathLike,
    tensors: MappingType[str, Array],
    hf_config: Any,
    tokenizer: Any = None,
    *,
    copies: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
) -> pathlib.Path:
    """Writes config.json, model.safetensors and tokenizer files (saved from `tokenizer`, or `copies` of files).

    A new `directory` is staged beside it and renamed into place once complete. An existing one must be empty
    unless `overwrite`; then every file is staged inside it and renamed onto its own name, so the files an export
    does not write (notes, other models' files) stay untouched. A failure removes only what this call created.
    Files and directories get the permissions the umask gives. `hf_config` is a `transformers.PretrainedConfig`.
    """
    directory = pathlib.Path(directory).absolute()
    copies = [pathlib.Path(path) for path in copies]
    if directory.exists() and not directory.is_dir():
        raise OutputExistsError(f"{directory} exists and is not a directory")
    if not directory.exists():
        with formats.atomic_directory(directory) as staging:
            _stage_files(staging, tensors, hf_config, tokenizer, copies)
        return directory
    if any(directory.iterdir()) and not overwrite:
        raise OutputExistsError(f"{directory} already holds files; an export replaces them only when asked to")
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".export.", suffix=".tmp", dir=directory))
    try:
        for path in _stage_files(staging, tensors, hf_config, tokenizer, copies):
            os.replace(path, directory / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
