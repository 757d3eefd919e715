"""A bi-encoder -> a Hugging Face `BertModel` directory that is also a sentence-transformers model.

The directory holds config.json, model.safetensors and the tokenizer (what `BertModel.from_pretrained` reads) plus
the sentence-transformers layout: `modules.json` (Transformer -> Pooling [-> Normalize]), `sentence_bert_config.json`
(max_seq_length), `1_Pooling/config.json` (the student's [CLS] or mean pooling) and, for a student that L2-normalises
its embeddings, `2_Normalize/`. `SentenceTransformer(dir).encode(texts)` then gives the student's embeddings.

One tower is exported (sentence-transformers has one encoder): a tied bi-encoder's only one, else the tower named.
Writing keeps `hf.core.write_directory`'s guarantees: a new directory is staged beside its path and renamed into place
whole; an existing one must be empty unless `overwrite`, and then only the names an export writes are replaced,
each atomically; nothing else is deleted, and files get the permissions the umask gives.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from distill_ret import hf
from distill_ret.data import formats
from distill_ret.hf import core
from distill_ret.models import heads
from distill_ret.models.bert import BertConfig

POOLING_DIR = "1_Pooling"
NORMALIZE_DIR = "2_Normalize"
MODULES_FILE = "modules.json"
SENTENCE_BERT_CONFIG = "sentence_bert_config.json"


def sentence_transformers_files(*, pooling: str, normalize: bool, hidden_size: int,
                                max_seq_length: int) -> dict[str, str]:
    """Relative path -> JSON text of the sentence-transformers files for a BERT with this pooling."""
    if pooling not in heads.POOLINGS:
        raise ValueError(f"pooling must be one of {heads.POOLINGS}, got {pooling!r}")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": NORMALIZE_DIR, "type": "sentence_transformers.models.Normalize"})
    pooling_config = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    dump = lambda value: json.dumps(value, indent=2) + "\n"
    return {
        MODULES_FILE: dump(modules),
        SENTENCE_BERT_CONFIG: dump({"max_seq_length": max_seq_length, "do_lower_case": False}),
        f"{POOLING_DIR}/config.json": dump(pooling_config),
    }


def write_layout(directory: str | os.PathLike, *, pooling: str, normalize: bool, hidden_size: int,
                 max_seq_length: int) -> None:
    """Adds the sentence-transformers files to a written `BertModel` directory: each file atomically, in
    directories made with the umask's permissions; only these names are replaced."""
    directory = pathlib.Path(directory)
    files = sentence_transformers_files(pooling=pooling, normalize=normalize, hidden_size=hidden_size,
                                        max_seq_length=max_seq_length)
    for relative, text in files.items():
        with formats.atomic_write(directory / relative) as handle:
            handle.write(text)
    if normalize:
        (directory / NORMALIZE_DIR).mkdir(exist_ok=True)


def export_bi_encoder(
    params: Mapping[str, Any],
    config: BertConfig,
    directory: str | os.PathLike,
    *,
    pooling: str,
    normalize: bool,
    max_seq_length: int,
    tokenizer_files: Sequence[str | os.PathLike],
    tower: str = "document",
    overwrite: bool = False,
) -> pathlib.Path:
    """`BiEncoder` params -> `directory` as a `BertModel` + sentence-transformers model (see the module docstring).

    `tokenizer_files` are copied (e.g. `hf.core.tokenizer_files(tokenizer_dir)`); raises core.OutputExistsError
    for a directory that holds files when not `overwrite`.
    """
    layout = {"pooling": pooling, "normalize": normalize, "hidden_size": config.hidden_size,
              "max_seq_length": max_seq_length}
    sentence_transformers_files(**layout)  # checks the options before anything is written
    hf_config, tensors = hf.to_hf(heads.bert_params_from_bi_encoder(params, tower), config)
    directory = pathlib.Path(directory).absolute()
    if directory.exists():
        written = core.write_directory(directory, tensors, hf_config, copies=tokenizer_files, overwrite=overwrite)
        write_layout(written, **layout)
        return written
    with formats.atomic_directory(directory) as staging:
        core.write_directory(staging, tensors, hf_config, copies=tokenizer_files)
        write_layout(staging, **layout)
    return directory
