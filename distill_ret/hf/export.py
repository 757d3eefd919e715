"""Mode `export`: a training run's orbax checkpoint (or a Hugging Face directory) -> a Hugging Face directory.

`distill-ret export --config=configs/export.py:checkpoint --workdir=OUT --config.checkpoint.workdir=RUN`
exports the latest (or `checkpoint.step`) parameters of the run in RUN. The architecture comes from the
config.json of `model.config_dir`, by default the run's `model.init_from` (read from the job config saved
in the checkpoint); the tokenizer from `export.tokenizer_dir`, by default the run's `model.tokenizer_dir` or
that same directory. `BiEncoder` checkpoints export one tower (`model.tower`) as a `BertModel`; cross-encoders
become `BertForSequenceClassification`; T5 params a `T5ForConditionalGeneration`.

The checkpoint is opened read-only, so exporting while the run is still training is safe.
"""
import os
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
import transformers

from distill_ret import hf
from distill_ret.errors import ConfigError
from distill_ret.models import heads
from distill_ret.models.bert import BertConfig
from distill_ret.training import checkpointing

SOURCES = ("checkpoint", "hf")
BI_ENCODER_KEYS = ("encoder", "query_encoder", "document_encoder")


def read_checkpoint(run_workdir: str | os.PathLike, step: int = -1) -> tuple[int, dict, dict]:
    """(step, params as float32 numpy arrays, saved job config) of `<run_workdir>/checkpoints/<step>`; -1 = latest."""
    try:
        step, job_config, params = checkpointing.read_run_checkpoint(run_workdir, "latest" if step < 0 else step)
    except ConfigError as error:
        raise ConfigError(f"config.checkpoint: {error}") from None
    return step, jax.tree.map(lambda leaf: np.asarray(leaf, dtype=np.float32), params), job_config


def _saved_model_field(job_config: dict, field: str) -> str:
    return str(job_config.get("model", {}).get(field) or "")


def export_params(params: dict, model_config: Any, output_dir: str | os.PathLike, *, tower: str = "document",
                  tokenizer_dir: str = "") -> pathlib.Path:
    """Writes `params` (any of our layouts) as a Hugging Face directory with the tokenizer of `tokenizer_dir`."""
    if isinstance(model_config, BertConfig) and any(key in params for key in BI_ENCODER_KEYS):
        params = heads.bert_params_from_bi_encoder(params, tower)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else None
    return hf.export_to_hf(params, model_config, output_dir, tokenizer=tokenizer)


def export_from_config(config: ml_collections.ConfigDict, workdir: str) -> pathlib.Path:
    """Mode `export` (see the module docstring); returns the written directory."""
    if config.source not in SOURCES:
        raise ConfigError(f"config.source must be one of {SOURCES}, got {config.source!r}")
    if config.model.tower not in heads.TOWERS:
        raise ConfigError(f"config.model.tower must be one of {heads.TOWERS}, got {config.model.tower!r}")
    if config.source == "checkpoint":
        if not config.checkpoint.workdir:
            raise ConfigError("config.checkpoint.workdir: set it to the training run's --workdir")
        step, params, job_config = read_checkpoint(config.checkpoint.workdir, config.checkpoint.step)
        config_dir = config.model.config_dir or _saved_model_field(job_config, "init_from")
        if not config_dir:
            raise ConfigError(
                "config.model.config_dir: the run started from random weights (no model.init_from), so name a "
                "Hugging Face directory whose config.json describes the trained model"
            )
        model_config = hf.config_from_hf(config_dir)
        origin = f"step {step} of {config.checkpoint.workdir}"
        saved_tokenizer = _saved_model_field(job_config, "tokenizer_dir")
    else:
        if not config.input_dir:
            raise ConfigError("config.input_dir: set it to the Hugging Face directory to import")
        model_config, params = hf.import_from_hf(config.input_dir)
        config_dir, origin, saved_tokenizer = config.input_dir, config.input_dir, ""
    tokenizer_dir = config.export.tokenizer_dir or saved_tokenizer or config_dir
    output_dir = config.export.output_dir or os.path.join(workdir, "hf_model")
    written = export_params(params, model_config, output_dir, tower=config.model.tower, tokenizer_dir=tokenizer_dir)
    architectures = hf.core.read_config(written).get("architectures")
    print(f"export: {origin} -> {written} ({', '.join(architectures or ['?'])}, tokenizer from {tokenizer_dir})")
    return written
