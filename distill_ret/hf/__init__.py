"""Hugging Face checkpoint import and export (safetensors only).

`import_from_hf(dir)` reads config.json + safetensors into (our config, params); `export_to_hf(params, config, dir)`
writes a directory that `transformers` loads with `from_pretrained`. Each model family module (`hf/t5.py`,
`hf/bert.py`) provides `MODEL_TYPE`, `CONFIG_CLASS`, `config_from_dict(hf_config, source)`,
`load(hf_config: dict, tensors, source) -> (config, params)` and `dump(params, config) -> (transformers config,
tensors)` on top of the tables in `hf/core.py`. Tensor shapes are checked against the config in both directions.
"""
import importlib
import os
import pathlib
from typing import Any, Sequence

from distill_ret.hf import core

_FAMILIES = {"t5": "distill_ret.hf.t5", "bert": "distill_ret.hf.bert"}


def _family(model_type: str):
    return importlib.import_module(_FAMILIES[model_type])


def _model_type(hf_config: dict, source: str) -> str:
    model_type = hf_config.get("model_type")
    if not isinstance(model_type, str) or model_type not in _FAMILIES:
        raise core.HfCheckpointError(
            f"{source}: model_type {model_type!r} is not supported (supported: {sorted(_FAMILIES)})"
        )
    return model_type


def import_from_hf(directory: str | os.PathLike) -> tuple[Any, dict]:
    """A Hugging Face model directory -> (our model config, params as a nested dict of float32 arrays)."""
    hf_config = core.read_config(directory)
    model_type = _model_type(hf_config, str(pathlib.Path(directory) / core.CONFIG_FILE))
    tensors = core.read_safetensors(directory)
    return _family(model_type).load(hf_config, tensors, source=str(directory))


def config_from_dict(hf_config: dict, source: str, **overrides) -> Any:
    """A config.json dict (e.g. a run's saved model record) -> our model config; errors name `source`."""
    return _family(_model_type(hf_config, source)).config_from_dict(hf_config, source, **overrides)


def config_from_hf(directory: str | os.PathLike, **overrides) -> Any:
    """A Hugging Face directory's config.json -> our model config (no weights are read)."""
    return config_from_dict(core.read_config(directory), str(pathlib.Path(directory) / core.CONFIG_FILE), **overrides)


def to_hf(params: dict, config: Any) -> tuple[Any, dict]:
    """Our params + config -> (transformers config, HF tensors); HfCheckpointError when a shape does not fit."""
    for model_type in _FAMILIES:
        family = _family(model_type)
        if isinstance(config, family.CONFIG_CLASS):
            return family.dump(params, config)
    raise TypeError(f"no Hugging Face mapping for config type {type(config).__name__}")


def export_to_hf(params: dict, config: Any, directory: str | os.PathLike, tokenizer: Any = None, *,
                 copies: Sequence[str | os.PathLike] = (), overwrite: bool = False) -> pathlib.Path:
    """Our params + config -> a Hugging Face directory (config.json, model.safetensors, tokenizer files).

    The tokenizer is saved from `tokenizer` or copied (`copies`, e.g. `core.tokenizer_files(dir)`). An existing
    directory that holds files is refused unless `overwrite`, and then only the exported names are replaced
    (see `core.write_directory`).
    """
    hf_config, tensors = to_hf(params, config)
    return core.write_directory(directory, tensors, hf_config, tokenizer, copies=copies, overwrite=overwrite)
