"""What mode `export` adds for a DGR (T5) student: the vocabulary size read from the parameters, and the
identifiers file (`identifiers.jsonl`, see `dgr.hf_constraint`) checked against the exported model and tokenizer.
"""
from __future__ import annotations

import dataclasses
import pathlib

from distill_ret.dgr import identifiers
from distill_ret.errors import ConfigError
from distill_ret.hf import core
from distill_ret.hf.identity import load_tokenizer, tokenizer_digest
from distill_ret.models import t5

EMBEDDING = ("token_embedder", "embedding")
FIELD = "config.export.identifiers_dir"


def vocab_size_from_params(params: dict, config: t5.T5Config) -> t5.T5Config:
    """`config` with vocab_size = the rows of the token embedding [vocab, d_model]; every other shape is still
    checked against the config when the tensors are written."""
    embedding = params.get(EMBEDDING[0], {}).get(EMBEDDING[1])
    if embedding is None:
        raise ConfigError("the exported parameters have no token_embedder/embedding: not a T5 student")
    return dataclasses.replace(config, vocab_size=int(embedding.shape[0]))


def identifier_files(identifiers_dir: str, tokenizer_dir: str, config: t5.T5Config) -> list[pathlib.Path]:
    """[identifiers.jsonl] of `identifiers_dir` ([] when it is ""), after checking that its identifiers were
    tokenised by the tokenizer being exported and fit the model (vocabulary, EOS)."""
    if not identifiers_dir:
        return []
    path = pathlib.Path(identifiers_dir) / identifiers.IDENTIFIERS_FILE
    if not path.is_file():
        raise ConfigError(f"{FIELD}={identifiers_dir}: no {identifiers.IDENTIFIERS_FILE} there (build the identifiers "
                          "with mode retrieve, or name the directory that holds them)")
    metadata = identifiers.read_metadata(identifiers_dir)
    if metadata["vocab_size"] > config.vocab_size or metadata["eos_id"] != config.eos_token_id:
        raise ConfigError(f"{FIELD}={identifiers_dir}: identifiers over {metadata['vocab_size']} tokens with EOS "
                          f"{metadata['eos_id']} do not fit a model of vocab_size {config.vocab_size} with "
                          f"eos_token_id {config.eos_token_id}")
    try:
        same = tokenizer_digest(load_tokenizer(identifiers_dir)) == tokenizer_digest(load_tokenizer(tokenizer_dir))
    except core.HfCheckpointError as error:
        raise ConfigError(f"{FIELD}={identifiers_dir}: {error}") from None
    if not same:
        raise ConfigError(f"{FIELD}={identifiers_dir}: its identifiers were tokenised by another tokenizer than the "
                          f"one exported (from {tokenizer_dir}); export with "
                          f"config.export.tokenizer_dir={identifiers_dir}")
    return [path]
