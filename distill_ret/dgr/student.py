"""The DGR student's identifiers: the `config.identifiers` checks and the identifier set, tokenizer and directory a
T5 student works with, shared by both training stages (`dgr.task`) and mode `candidates` (`dgr.candidates`).

The tokenizer is the student's own (an earlier stage's or a Hugging Face T5 directory's), else
`identifiers.tokenizer_dir`, else a Unigram tokenizer trained on the corpus and saved in `identifiers.dir`. A
student whose tokenizer is the identifiers directory itself (an earlier stage that trained the Unigram tokenizer)
reads that directory back as it was built.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import numpy as np

from distill_ret.data import formats
from distill_ret.dgr import identifiers, retrieve
from distill_ret.errors import ConfigError
from distill_ret.hf import core
from distill_ret.hf.identity import load_tokenizer
from distill_ret.models.t5 import T5Config
from distill_ret.training import partitioning


def check_identifier_fields(config: Any) -> identifiers.Options:
    """`config.identifiers` checked before any file is read (ConfigError naming the field); returns its options."""
    options = identifiers.options_from_config(config.identifiers)
    encoder_dir = config.identifiers.semantic.encoder_dir
    if options.weights["semantic"] and not os.path.isdir(encoder_dir or ""):
        raise ConfigError(f"config.identifiers.semantic.encoder_dir={encoder_dir!r}: the semantic view needs a dense "
                          "encoder (a BERT Hugging Face directory, e.g. MiniLM)")
    if not config.identifiers.dir:
        raise ConfigError("config.identifiers.dir is required (where the identifiers and their tokenizer are built "
                          "and reused)")
    return options


def check_tokenizer_fits(tokenizer, t5_config: T5Config) -> None:
    """The identifiers' tokenizer must fit the model's vocabulary and share its EOS."""
    if len(tokenizer) > t5_config.vocab_size or identifiers.eos_id(tokenizer) != t5_config.eos_token_id:
        raise ConfigError(
            f"config.model.vocab_size={t5_config.vocab_size}: the identifiers' tokenizer has {len(tokenizer)} tokens "
            f"and EOS {identifiers.eos_id(tokenizer)}, the model eos_token_id {t5_config.eos_token_id}; give the "
            "model a vocabulary that holds the tokenizer (or the tokenizer's EOS)")


@dataclasses.dataclass(frozen=True)
class StudentIdentifiers:
    identifier_set: identifiers.IdentifierSet
    tokenizer: Any
    directory: pathlib.Path
    tokenizer_dir: str  # the tokenizer the model record names: a given directory, else the identifiers directory

    def weights(self, options: identifiers.Options) -> np.ndarray:
        """[len(identifiers.VIEWS)] view weights."""
        return np.asarray([options.weights[view] for view in identifiers.VIEWS])


def load_identifiers(config: Any, options: identifiers.Options, corpus: dict[str, formats.Document],
                     model_tokenizer_dir: str, t5_config: T5Config) -> StudentIdentifiers:
    """The student's identifiers, built into `identifiers.dir` on first use and read back afterwards."""
    tokenizer_dir = model_tokenizer_dir or config.identifiers.tokenizer_dir
    identifiers_dir = pathlib.Path(config.identifiers.dir).absolute()
    if tokenizer_dir and pathlib.Path(tokenizer_dir).absolute() == identifiers_dir:
        if not identifiers_dir.is_dir():
            raise ConfigError(f"config.identifiers.dir={config.identifiers.dir!r}: the student's tokenizer was trained "
                              "into this identifiers directory, which no longer exists; rebuild the earlier stage")
        tokenizer_dir = ""  # an earlier stage's identifiers, read back as they were built
    if tokenizer_dir:
        try:
            check_tokenizer_fits(load_tokenizer(tokenizer_dir), t5_config)
        except core.HfCheckpointError as error:
            raise ConfigError(f"config.identifiers.tokenizer_dir: {error}") from None
    elif options.unigram_vocab_size > t5_config.vocab_size:
        raise ConfigError(f"config.identifiers.unigram_vocab_size={options.unigram_vocab_size} exceeds "
                          f"config.model.vocab_size={t5_config.vocab_size}")
    encoder_source, embed = "", None
    if options.weights["semantic"]:  # the dense encoder's embeddings are cached beside the identifiers
        mesh = partitioning.create_mesh({name: config.mesh[name] for name in ("data", "fsdp", "model")})
        encoder_source, embed = retrieve.semantic_encoder(config, str(identifiers_dir.parent), mesh)
    identifier_set, tokenizer, directory = identifiers.build_or_load(
        identifiers_dir, corpus, options, tokenizer_dir=tokenizer_dir, encoder_source=encoder_source, embed=embed)
    check_tokenizer_fits(tokenizer, t5_config)
    record_tokenizer = str(pathlib.Path(tokenizer_dir).absolute()) if tokenizer_dir else str(directory)
    return StudentIdentifiers(identifier_set, tokenizer, directory, record_tokenizer)
