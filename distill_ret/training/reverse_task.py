"""Toy seq2seq task for mode `train`: a T5 learns to reverse random token sequences.

Example i is generated from (data.seed, i) alone, so the data needs no files, is the same on every process and
in every run, and any example can be read in O(1) by index (a random-access source for the grain pipeline).
Token ids 0 (pad) and 1 (EOS) are reserved; inputs are `tokens + [EOS]`, targets `reversed(tokens) + [EOS]`.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill_ret.data import pipeline
from distill_ret.models.t5 import T5, T5Config, shift_right
from distill_ret.training.tasks import Task

FIRST_TOKEN = 2  # ids below are pad (0) and EOS (1)


class ReverseSequences:
    """Random-access source of {"inputs": [n + 1], "targets": [n + 1]} int32 examples, min_length <= n <= max_length."""

    def __init__(self, *, seed: int, size: int, vocab_size: int, min_length: int, max_length: int, eos_id: int = 1):
        if not FIRST_TOKEN < vocab_size:
            raise ValueError(f"vocab_size must exceed {FIRST_TOKEN} (ids 0 and 1 are pad and EOS), got {vocab_size}")
        if not 1 <= min_length <= max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
        self._seed, self._size, self._vocab_size = seed, size, vocab_size
        self._min_length, self._max_length, self._eos_id = min_length, max_length, eos_id

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self._size:
            raise IndexError(f"example {index} is out of range 0..{self._size - 1}")
        rng = np.random.default_rng((self._seed, index))
        length = int(rng.integers(self._min_length, self._max_length + 1))
        tokens = rng.integers(FIRST_TOKEN, self._vocab_size, size=length, dtype=np.int32)  # [n]
        eos = np.array([self._eos_id], np.int32)
        return {"inputs": np.concatenate([tokens, eos]), "targets": np.concatenate([tokens[::-1], eos])}


def token_cross_entropy(logits: jax.Array, targets: jax.Array, pad_id: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(mean NLL over non-pad targets, token accuracy, fraction of sequences fully correct); float32."""
    logits = logits.astype(jnp.float32)  # [batch, length, vocab]
    weights = (targets != pad_id).astype(jnp.float32)  # [batch, length]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [batch, length]
    num_tokens = jnp.maximum(weights.sum(), 1.0)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32) * weights  # [batch, length]
    sequence_correct = jnp.all((correct == weights), axis=-1).astype(jnp.float32)  # [batch]
    return (nll * weights).sum() / num_tokens, correct.sum() / num_tokens, sequence_correct.mean()


def build_task(config: Any) -> Task:
    """The reverse-sequences Task from a configs/t5_seq2seq.py config."""
    model_config = T5Config(**config.model.to_dict())
    model = T5(model_config)
    data = config.data
    length = data.max_length + 1
    if data.vocab_size > model_config.vocab_size:
        raise ValueError(f"data.vocab_size={data.vocab_size} exceeds model.vocab_size={model_config.vocab_size}")
    source = functools.partial(
        ReverseSequences, vocab_size=data.vocab_size, min_length=data.min_length, max_length=data.max_length,
        eos_id=model_config.eos_token_id,
    )

    def init_params(rng: jax.Array) -> Any:
        ids = jnp.ones((1, length), jnp.int32)  # [1, length]
        return model.init(rng, ids, ids)["params"]

    def forward(params, batch, rng):
        decoder_inputs = shift_right(batch["targets"], model_config.decoder_start_token_id)  # [batch, length]
        rngs = {} if rng is None else {"dropout": rng}
        return model.apply(
            {"params": params}, batch["inputs"], decoder_inputs, deterministic=rng is None, rngs=rngs,
        )  # [batch, length, vocab]

    def loss_fn(params, batch, rng):
        loss, accuracy, _ = token_cross_entropy(forward(params, batch, rng), batch["targets"], model_config.pad_token_id)
        return loss, {"token_accuracy": accuracy}

    def eval_fn(params, batch):
        loss, accuracy, sequence_accuracy = token_cross_entropy(
            forward(params, batch, None), batch["targets"], model_config.pad_token_id,
        )
        return {"loss": loss, "token_accuracy": accuracy, "sequence_accuracy": sequence_accuracy}

    return Task(
        init_params=init_params,
        loss_fn=loss_fn,
        train_source=source(seed=data.seed, size=data.num_train),
        collate=functools.partial(
            pipeline.pad_and_stack, lengths={"inputs": length, "targets": length}, pad_value=model_config.pad_token_id,
        ),
        eval_fn=eval_fn,
        eval_source=source(seed=data.seed + 1, size=data.num_eval),
    )
