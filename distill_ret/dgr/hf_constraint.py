"""Constrained `generate` in PyTorch over an exported DGR student: the identifier trie as a transformers
`prefix_allowed_tokens_fn`. Standard library only (no jax, no torch import), so a PyTorch user can copy or import it.

An exported student directory holds `identifiers.jsonl`: one identifier a line, `{"view", "identifier",
"passages", "tokens"}`, where `tokens` are the token ids of the identifier text (no special tokens, cut to the
identifiers' `max_tokens - 1`) followed by EOS. Usage::

    import transformers
    from distill_ret.dgr import hf_constraint

    model = transformers.T5ForConditionalGeneration.from_pretrained(directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    index = hf_constraint.IdentifierIndex.from_directory(directory, tokenizer)  # tokenizer: optional check
    inputs = tokenizer(["what is a shock wave"], return_tensors="pt")
    out = model.generate(**inputs, num_beams=10, num_return_sequences=10, max_new_tokens=index.max_length,
                         prefix_allowed_tokens_fn=index.prefix_allowed_tokens_fn, length_penalty=0.0,
                         early_stopping="never", output_scores=True, return_dict_in_generate=True)
    for sequence, score in zip(out.sequences.tolist(), out.sequences_scores.tolist()):
        print(index.passages(sequence), score)  # passage ids of the identifier(s) that sequence spells

This is the same trie as distill_ret's jitted search: with the same beams, `max_new_tokens` (the longest
identifier, EOS included) and length penalty, `generate` returns the identifiers and scores that mode `retrieve`
decodes (tests/test_dgr_export.py checks it).
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

IDENTIFIERS_FILE = "identifiers.jsonl"
CONFIG_FILE = "config.json"


class IdentifierIndex:
    """The trie of the identifiers' token sequences (nested dicts, built once) and sequence -> passages."""

    def __init__(self, sequences: Sequence[Sequence[int]], passages: Sequence[Sequence[str]], eos_id: int,
                 decoder_start_tokens: int = 1):
        self.eos_id, self.decoder_start_tokens = int(eos_id), decoder_start_tokens
        self.root: dict[int, dict] = {}
        self._passages: dict[tuple[int, ...], list[str]] = {}
        for sequence, owners in zip(sequences, passages):
            sequence = tuple(int(token) for token in sequence)
            if not sequence or sequence[-1] != self.eos_id or self.eos_id in sequence[:-1]:
                raise ValueError(f"identifier tokens {list(sequence)} must end in EOS {self.eos_id} (and only there)")
            node = self.root
            for token in sequence:
                node = node.setdefault(token, {})
            known = self._passages.setdefault(sequence, [])
            known.extend(passage for passage in owners if passage not in known)
        self.max_length = max(len(sequence) for sequence in self._passages)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike, tokenizer: Any = None) -> "IdentifierIndex":
        """Reads `identifiers.jsonl` and the EOS id from `config.json`. With a tokenizer, every identifier text is
        re-tokenised and must give its stored tokens (a wrong tokenizer fails here, not silently in `generate`)."""
        directory = pathlib.Path(directory)
        eos_id = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))["eos_token_id"]
        records = [json.loads(line) for line in (directory / IDENTIFIERS_FILE).read_text(encoding="utf-8")
                   .splitlines() if line.strip()]
        if tokenizer is not None:
            for number, record in enumerate(records, start=1):
                stored = record["tokens"][:-1]
                tokens = tokenizer(record["identifier"], add_special_tokens=False)["input_ids"][:len(stored)]
                if tokens != stored:
                    raise ValueError(f"{directory / IDENTIFIERS_FILE}:{number}: {record['identifier']!r} tokenises to "
                                     f"{tokens}, not to the stored {stored}: not the identifiers' tokenizer")
        return cls([record["tokens"] for record in records], [record["passages"] for record in records], eos_id)

    def allowed_tokens(self, prefix: Sequence[int]) -> list[int]:
        """Token ids that may follow `prefix` (generated tokens, decoder start excluded); [eos] off the trie, so a
        finished or invalid beam never gets an empty (all -inf) row."""
        node = self.root
        for token in prefix:
            node = node.get(int(token))
            if node is None:
                return [self.eos_id]
        return sorted(node) or [self.eos_id]

    def prefix_allowed_tokens_fn(self, batch_id: int, input_ids: Any) -> list[int]:
        """transformers' callback: `input_ids` is one beam's decoder sequence, decoder start token first."""
        return self.allowed_tokens(input_ids.tolist()[self.decoder_start_tokens:])

    def passages(self, sequence: Sequence[int]) -> list[str]:
        """Passage ids of the identifier(s) a generated sequence spells (decoder start, EOS and padding dropped
        as needed); [] when it spells none."""
        tokens = [int(token) for token in sequence][self.decoder_start_tokens:]
        if self.eos_id in tokens:
            tokens = tokens[:tokens.index(self.eos_id) + 1]
        return list(self._passages.get(tuple(tokens), []))
