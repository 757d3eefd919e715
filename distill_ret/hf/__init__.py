"""Hugging Face checkpoint import and export (safetensors only).

`import_from_hf(dir)` reads config.json + safetensors into (our config, params); `export_to_hf(params, config, dir)`
writes a directory that `transformers` loads with `from_pretrained`. Each model family module (`hf/t5.py`,
`hf/bert.py`) provides `MODEL_TYPE`, `CONFIG_CLASS`, `load(hf_config: dict, tensors, source) -> (config, params)`
and `dump(params, config) -> (transformers config, tensors)` on top of the tables in `hf/core.py`.
"""
import importlib
import os
import pathlib
from typing import Any

import transformers

from distill_ret.hf import core

_FAMILIES = {"t5": "distill_ret.hf.t5", "bert": "distill_ret.hf.bert"}


def _family(model_type: str):
    return importlib.import_module(_FAMILIES[model_type])


def _model_type(hf_config: dict, directory: str | os.PathLike) -> str:
    model_type = hf_config.get("model_type")
    if model_type not in _FAMILIES:
        raise core.HfCheckpointError(
            f"{pathlib.Path(directory) / core.CONFIG_FILE}: model_type {model_type!r} is not supported "
            f"(supported: {sorted(_FAMILIES)})"
        )
    return model_type


def import_from_hf(directory: str | os.PathLike) -> tuple[Any, dict]:
    """A Hugging Face model directory -> (our model config, params as a nested dict of float32 arrays)."""
    hf_config = core.read_config(directory)
    model_type = _model_type(hf_config, directory)
    tensors = core.read_safetensors(directory)
    return _family(model_type).load(hf_config, tensors, source=str(directory))


def config_from_hf(directory: str | os.PathLike, **overrides) -> Any:
    """A Hugging Face directory's config.json -> our model config (no weights are read)."""
    model_type = _model_type(core.read_config(directory), directory)
    hf_config = transformers.AutoConfig.from_pretrained(str(directory))
    try:
        return _family(model_type).CONFIG_CLASS.from_hf(hf_config, **overrides)
    except (TypeError, ValueError) as error:
        raise core.HfCheckpointError(f"{pathlib.Path(directory) / core.CONFIG_FILE}: {error}") from None


def export_to_hf(params: dict, config: Any, directory: str | os.PathLike, tokenizer: Any = None) -> pathlib.Path:
    """Our params + config -> a Hugging Face directory (config.json, model.safetensors, tokenizer files), atomically."""
    for model_type in _FAMILIES:
        family = _family(model_type)
        if isinstance(config, family.CONFIG_CLASS):
            hf_config, tensors = family.dump(params, config)
            return core.write_directory(directory, tensors, hf_config, tokenizer)
    raise TypeError(f"no Hugging Face mapping for config type {type(config).__name__}")
