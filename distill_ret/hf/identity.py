"""Local model assets and their identity: loading a tokenizer from a directory, and sha256 digests of tokenizers
and parameters that cache fingerprints record.

It sits beside the checkpoint readers (low in the house) because teachers, students and the encoding engine all
load tokenizers and fingerprint weights; nothing here knows about tasks or training.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import transformers

from distill_ret.hf import core


def load_tokenizer(directory: str | os.PathLike):
    """The Hugging Face tokenizer saved in a local directory (nothing is downloaded).

    A directory without a vocabulary file is refused: transformers would otherwise build a made-up tokenizer from
    the model config alone.
    """
    if not core.tokenizer_files(directory):
        raise core.HfCheckpointError(f"{directory}: no tokenizer files (vocab.txt, tokenizer.json, spiece.model, ...)")
    return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def params_digest(params: Any) -> str:
    """sha256 over every parameter's path, dtype, shape and bytes (the identity of a set of weights)."""
    digest = hashlib.sha256()
    flat = jax.tree_util.tree_flatten_with_path(nn.unbox(params))[0]
    for path, leaf in sorted(flat, key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """sha256 of a tokenizer's definition (fast tokenizers) or of its class and vocabulary.

    A fast tokenizer's truncation and padding settings are left out: `transformers` changes them on every call
    (e.g. `truncation=True, max_length=n`), and they do not change which tokens a text becomes.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        text = json.dumps([type(tokenizer).__name__, sorted(tokenizer.get_vocab().items())])
    else:
        definition = json.loads(backend.to_str())
        definition["truncation"] = definition["padding"] = None
        text = json.dumps(definition, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
