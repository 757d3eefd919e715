"""Mode `export`: a training run's orbax checkpoint (or a Hugging Face directory) -> a Hugging Face directory.

`distill-ret export --config=configs/export.py:checkpoint --workdir=OUT --config.checkpoint.workdir=RUN`
exports the latest (or `checkpoint.step`) parameters of the run in RUN. The architecture is the run's own model
record (saved in every checkpoint); runs written before records existed take the config.json of
`model.config_dir`, by default the run's `model.init_from`. Every tensor's shape is checked against that config.
The tokenizer files are copied from `export.tokenizer_dir`, else the tokenizer the run recorded, else the
model's directory; an export without a real tokenizer is refused. `BiEncoder` checkpoints export one tower
(`model.tower`) as a `BertModel`; cross-encoders become `BertForSequenceClassification`; T5 params a
`T5ForConditionalGeneration` whose vocab_size is the parameters' (a DGR student also gets the `identifiers.jsonl`
of `export.identifiers_dir`, for `distill_ret.dgr.hf_constraint`).

Nothing is destroyed: an output directory that already holds files is refused unless `export.overwrite`, and then
only the exported names are replaced. The checkpoint is opened read-only, so exporting while the run is still
training is safe.
"""
import dataclasses
import os
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
import transformers

from distill_ret import hf
from distill_ret.dgr import export_student
from distill_ret.errors import ConfigError
from distill_ret.fgd import export_st
from distill_ret.hf import core
from distill_ret.models import heads, layers
from distill_ret.models.bert import BertConfig
from distill_ret.models.t5 import T5Config
from distill_ret.training import checkpointing

SOURCES = ("checkpoint", "hf")
BI_ENCODER_KEYS = ("encoder", "query_encoder", "document_encoder")
TOKENIZER_FIELD = "config.export.tokenizer_dir"


@dataclasses.dataclass(frozen=True)
class Source:
    """What an export writes: float32 params, our model config, and where each piece came from (for messages)."""

    params: dict
    model_config: Any
    config_origin: str  # names the field or record that gave `model_config`
    origin: str  # the checkpoint step or directory the params came from
    tokenizer_candidates: tuple[tuple[str, str], ...]  # (what names it, directory), in order of preference
    bi_encoder_options: dict | None = None  # a bi-encoder record's pooling/normalize: also a sentence-transformers dir


def read_checkpoint(run_workdir: str | os.PathLike, step: int = -1) -> checkpointing.RunCheckpoint:
    """The run's checkpoint at `step` (-1 = latest), params as float32 numpy arrays (read quietly and read-only)."""
    try:
        run = checkpointing.read_run_checkpoint(run_workdir, "latest" if step < 0 else step)
    except ConfigError as error:
        raise ConfigError(f"config.checkpoint: {error}") from None
    params = jax.tree.map(lambda leaf: np.asarray(leaf, dtype=np.float32), run.params)
    return dataclasses.replace(run, params=params)


def _config_differences(ours: Any, theirs: Any) -> list[str]:
    """'field: ours vs theirs' for every architecture field in which two model configs differ."""
    if type(ours) is not type(theirs):
        return [f"model type: {type(ours).__name__} vs {type(theirs).__name__}"]
    return [f"{field.name}: {getattr(ours, field.name)!r} vs {getattr(theirs, field.name)!r}"
            for field in dataclasses.fields(ours)
            if field.name not in layers.COMPUTE_FIELDS and getattr(ours, field.name) != getattr(theirs, field.name)]


def _job_config_differences(model_config: Any, saved_model: dict) -> list[str]:
    """A run from random weights took its architecture from its job config's model fields: those must agree."""
    return [f"{field.name}: {saved_model[field.name]!r} (run) vs {getattr(model_config, field.name)!r}"
            for field in dataclasses.fields(model_config)
            if field.name not in layers.COMPUTE_FIELDS and field.name in saved_model
            and saved_model[field.name] != getattr(model_config, field.name)]


def _config_from_dir(field: str, directory: str) -> Any:
    try:
        return hf.config_from_hf(directory)
    except core.HfCheckpointError as error:
        raise ConfigError(f"{field}={directory}: {error}") from None


def _checkpoint_source(config: ml_collections.ConfigDict) -> Source:
    run_workdir = config.checkpoint.workdir
    run = read_checkpoint(run_workdir, config.checkpoint.step)
    origin = f"step {run.step} of {run_workdir}"
    saved_model = run.job_config.get("model", {})
    config_dir = config.model.config_dir
    if run.model is not None:
        record_origin = f"the model record saved with {origin}"
        try:
            model_config = hf.config_from_dict(run.model["config"], record_origin)
        except core.HfCheckpointError as error:
            raise ConfigError(f"config.checkpoint.workdir: {error}") from None
        if config_dir:
            differences = _config_differences(model_config, _config_from_dir("config.model.config_dir", config_dir))
            if differences:
                raise ConfigError(
                    f"config.model.config_dir={config_dir} describes another model than {record_origin} "
                    f"(record vs config_dir: {'; '.join(differences)}); leave config.model.config_dir empty"
                )
        recorded_tokenizer = ("the run's model record (tokenizer_dir)", run.model.get("tokenizer_dir") or "")
        options = dict(run.model.get("options", {}), max_seq_length=run.job_config.get("data", {}).get(
            "max_length", model_config.max_position_embeddings)) if run.model.get("head") == "bi_encoder" else None
        return Source(run.params, model_config, record_origin, origin,
                      (recorded_tokenizer, ("config.model.config_dir", config_dir)), options)
    init_from = str(saved_model.get("init_from") or "")
    if config_dir:
        field, directory = "config.model.config_dir", config_dir
    elif init_from:
        field, directory = "model.init_from (saved in the run's job config; or set config.model.config_dir)", init_from
    else:
        raise ConfigError(
            "config.model.config_dir: the run started from random weights (no model.init_from) and its checkpoint "
            "has no model record, so name a Hugging Face directory whose config.json describes the trained model"
        )
    model_config = _config_from_dir(field, directory)
    if not init_from:
        differences = _job_config_differences(model_config, saved_model)
        if differences:
            raise ConfigError(
                f"config.model.config_dir={config_dir} describes another model than the run's job config: "
                f"{'; '.join(differences)}"
            )
    recorded_tokenizer = ("model.tokenizer_dir (saved in the run's job config)",
                          str(saved_model.get("tokenizer_dir") or ""))
    return Source(run.params, model_config, f"{field}={directory}", origin, (recorded_tokenizer, (field, directory)))


def _hf_source(config: ml_collections.ConfigDict) -> Source:
    try:
        model_config, params = hf.import_from_hf(config.input_dir)
    except core.HfCheckpointError as error:
        raise ConfigError(f"config.input_dir: {error}") from None
    origin = f"config.input_dir={config.input_dir}"
    return Source(params, model_config, origin, config.input_dir, (("config.input_dir", config.input_dir),))


def _tokenizer_files(config: ml_collections.ConfigDict, source: Source) -> tuple[list[pathlib.Path], str]:
    """(the tokenizer files to copy, their directory); ConfigError naming `config.export.tokenizer_dir` if none."""
    candidates = ((TOKENIZER_FIELD, config.export.tokenizer_dir),) + source.tokenizer_candidates
    named = [(what, directory) for what, directory in candidates if directory]
    advice = f"set {TOKENIZER_FIELD} to the directory of the tokenizer the model was trained with"
    if not named:
        raise ConfigError(f"{TOKENIZER_FIELD}: no tokenizer is known for {source.origin}; {advice}")
    what, directory = named[0]
    if not pathlib.Path(directory).is_dir():
        raise ConfigError(
            f"{TOKENIZER_FIELD}: the tokenizer directory {directory} (from {what}) does not exist; {advice}")
    files = core.tokenizer_files(directory)
    if not files:
        raise ConfigError(
            f"{TOKENIZER_FIELD}: {directory} (from {what}) holds no tokenizer (none of {list(core.VOCABULARY_FILES)}); "
            f"{advice}"
        )
    try:
        size = len(transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True))
    except Exception as error:  # any failure of transformers' loader here is a defect of the user's files
        raise ConfigError(
            f"{TOKENIZER_FIELD}: the tokenizer in {directory} (from {what}) cannot be loaded: {error}") from None
    if size > source.model_config.vocab_size:
        raise ConfigError(
            f"{TOKENIZER_FIELD}: the tokenizer in {directory} (from {what}) has {size} tokens, more than the model's "
            f"vocab_size {source.model_config.vocab_size}; {advice}"
        )
    return files, directory


def _check_config(config: ml_collections.ConfigDict, output_dir: pathlib.Path) -> None:
    """Config values first: nothing is read or written before they are known to make sense."""
    if config.source not in SOURCES:
        raise ConfigError(f"config.source must be one of {SOURCES}, got {config.source!r}")
    if config.model.tower not in heads.TOWERS:
        raise ConfigError(f"config.model.tower must be one of {heads.TOWERS}, got {config.model.tower!r}")
    if config.source == "checkpoint" and not config.checkpoint.workdir:
        raise ConfigError("config.checkpoint.workdir: set it to the training run's --workdir")
    if config.source == "checkpoint" and config.checkpoint.step < -1:
        raise ConfigError(f"config.checkpoint.step={config.checkpoint.step}: a saved step, or -1 for the latest")
    if config.source == "hf" and not config.input_dir:
        raise ConfigError("config.input_dir: set it to the Hugging Face directory to import")
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"config.export.output_dir={output_dir} exists and is not a directory")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not config.export.overwrite:
        raise ConfigError(
            f"config.export.output_dir={output_dir} already holds files; choose an empty or new directory, or set "
            "config.export.overwrite=True to replace the files an export writes (config.json, model.safetensors, "
            "tokenizer files) and leave the others"
        )


def export_from_config(config: ml_collections.ConfigDict, workdir: str) -> pathlib.Path:
    """Mode `export` (see the module docstring); returns the written directory."""
    output_dir = pathlib.Path(config.export.output_dir or os.path.join(workdir, "hf_model")).absolute()
    _check_config(config, output_dir)
    source = _checkpoint_source(config) if config.source == "checkpoint" else _hf_source(config)
    params = source.params
    if isinstance(source.model_config, BertConfig) and any(key in params for key in BI_ENCODER_KEYS):
        params = heads.bert_params_from_bi_encoder(params, config.model.tower)
    if isinstance(source.model_config, T5Config):
        source = dataclasses.replace(source, model_config=export_student.vocab_size_from_params(params,
                                                                                              source.model_config))
    try:
        hf_config, tensors = hf.to_hf(params, source.model_config)
    except core.HfCheckpointError as error:
        raise ConfigError(f"{source.config_origin} does not describe the weights of {source.origin}: {error}") from None
    tokenizer_files, tokenizer_dir = _tokenizer_files(config, source)
    if isinstance(source.model_config, T5Config):
        tokenizer_files += export_student.identifier_files(config.export.identifiers_dir, tokenizer_dir,
                                                           source.model_config)
    written = core.write_directory(output_dir, tensors, hf_config, copies=tokenizer_files,
                                   overwrite=config.export.overwrite)
    if source.bi_encoder_options is not None:
        options = source.bi_encoder_options
        export_st.write_layout(written, pooling=options["pooling"], normalize=bool(options["normalize"]),
                               hidden_size=source.model_config.hidden_size,
                               max_seq_length=int(options["max_seq_length"]))
    architectures = ", ".join(hf_config.architectures or ["?"])
    print(f"export: {source.origin} -> {written} ({architectures}, tokenizer from {tokenizer_dir})")
    return written
