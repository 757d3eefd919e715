"""Toy seq2seq task for mode `train`: a T5 learns to reverse random token sequences.

Example i is generated from (data.seed, i) alone, so the data needs no files, is the same on every process and
in every run, and any example can be read in O(1) by index (a random-access source for the grain pipeline).
Token ids 0 (pad) and 1 (EOS) are reserved; inputs are `tokens + [EOS]`, targets `reversed(tokens) + [EOS]`.
`model.init_from` (an earlier t5_reverse run or an HF T5 directory of the same architecture) starts the weights
through `training.state.init_from_source`; evaluator kind "batches" reports EVAL_MEASURES on held-out sequences.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill_ret import losses
from distill_ret.data import pipeline
from distill_ret.errors import ConfigError
from distill_ret.models.t5 import T5, T5Config, shift_right
from distill_ret.training import state
from distill_ret.training.evaluators import BatchEvalInputs
from distill_ret.training.tasks import ModelRecord, Task

FIRST_TOKEN = 2  # ids below are pad (0) and EOS (1)
INIT_FIELDS = ("init_from", "init_step")  # config.model fields that say where the weights start, not the architecture
EVAL_MEASURES = ("loss", "token_accuracy", "sequence_accuracy")  # what eval_fn returns


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


def build_task(config: Any) -> Task:
    """The reverse-sequences Task from a configs/t5_seq2seq.py config."""
    model_config = T5Config(**{name: value for name, value in config.model.items() if name not in INIT_FIELDS})
    model = T5(model_config)
    record = ModelRecord(config=model_config.to_hf().to_dict(), head="t5")
    init_source = state.read_init_source(config.model.init_from, config.model.init_step)
    data = config.data
    length = data.max_length + 1
    if data.vocab_size > model_config.vocab_size:
        raise ConfigError(f"config.data.vocab_size={data.vocab_size} exceeds "
                          f"config.model.vocab_size={model_config.vocab_size}")
    source = functools.partial(
        ReverseSequences, vocab_size=data.vocab_size, min_length=data.min_length, max_length=data.max_length,
        eos_id=model_config.eos_token_id,
    )

    def random_init(rng: jax.Array) -> Any:
        ids = jnp.ones((1, length), jnp.int32)  # [1, length]
        return model.init(rng, ids, ids)["params"]

    def forward(params, batch, rng):
        decoder_inputs = shift_right(batch["targets"], model_config.decoder_start_token_id)  # [batch, length]
        rngs = {} if rng is None else {"dropout": rng}
        return model.apply(
            {"params": params}, batch["inputs"], decoder_inputs, deterministic=rng is None, rngs=rngs,
        )  # [batch, length, vocab]

    def loss_fn(params, batch, rng):
        logits = forward(params, batch, rng)  # [batch, length, vocab]
        mask = batch["targets"] != model_config.pad_token_id  # [batch, length]
        loss = losses.token_cross_entropy(logits, batch["targets"], mask)  # (sum, count) over target tokens
        return loss, {"token_accuracy": losses.token_accuracy(logits, batch["targets"], mask)}

    def eval_fn(params, batch):
        logits = forward(params, batch, None)  # [batch, length, vocab]
        mask = batch["targets"] != model_config.pad_token_id  # [batch, length]
        return {
            "loss": losses.token_cross_entropy(logits, batch["targets"], mask),
            "token_accuracy": losses.token_accuracy(logits, batch["targets"], mask),
            "sequence_accuracy": losses.sequence_accuracy(logits, batch["targets"], mask),
        }

    collate = functools.partial(
        pipeline.pad_and_stack, lengths={"inputs": length, "targets": length}, pad_value=model_config.pad_token_id,
    )
    return Task(
        init_params=state.init_from_source(random_init, init_source, record),
        loss_fn=loss_fn,
        train_source=source(seed=data.seed, size=data.num_train),
        collate=collate,
        model=record,
        eval_inputs={"batches": BatchEvalInputs(eval_fn, EVAL_MEASURES, source(seed=data.seed + 1, size=data.num_eval),
                                                collate)},
    )
