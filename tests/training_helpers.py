"""Shared by the training-core tests: a tiny annotated model, its Task, trainer configs, `train` command lines.

The model is built from `distill_ret.models.layers` with the same logical axis names as T5/BERT (vocab, embed,
mlp), so the partitioning rules shard it the way they shard the real models. The task predicts, for every
token, the next id (id + 1 mod vocab): every position counts, so a batch loss is a plain mean over examples.
"""
import importlib.util
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from distill_ret.data import pipeline
from distill_ret.models import layers
from distill_ret.training import metrics
from distill_ret.training.tasks import Task

VOCAB, LENGTH = 16, 8


class TokenMlp(nn.Module):
    """Embed -> LayerNorm -> Dense(mlp) -> gelu -> Dense(embed) -> tied logits."""

    width: int = 16
    hidden: int = 32
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, ids: jax.Array, *, deterministic: bool = True) -> jax.Array:
        embed = layers.Embed(VOCAB, self.width, name="embed")
        x = layers.LayerNorm(name="norm")(embed(ids))  # [batch, length, width]
        h = nn.gelu(layers.Dense(self.hidden, ("embed", "mlp"), name="wi")(x))  # [batch, length, hidden]
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        x = x + layers.Dense(self.width, ("mlp", "embed"), name="wo")(h)  # [batch, length, width]
        return embed.attend(x)  # [batch, length, vocab]


class NextTokenSource:
    """Example i: ids [LENGTH] from a generator seeded by i, labels = ids + 1 mod VOCAB; `scale` 1 (inf if poisoned)."""

    def __init__(self, size: int, poisoned: int | None = None):
        self._size, self._poisoned = size, poisoned

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        ids = np.random.default_rng(index).integers(0, VOCAB, LENGTH, dtype=np.int32)
        scale = np.float32(np.inf if index == self._poisoned else 1.0)
        return {"ids": ids, "labels": (ids + 1) % VOCAB, "scale": scale}


def make_task(width: int = 16, hidden: int = 32, size: int = 256, poisoned: int | None = None,
              dropout_rate: float = 0.0) -> Task:
    model = TokenMlp(width, hidden, dropout_rate)

    def init_params(rng):
        return model.init(rng, jnp.zeros((1, LENGTH), jnp.int32))["params"]

    def loss_fn(params, batch, rng):
        rngs = {} if rng is None else {"dropout": rng}
        logits = model.apply({"params": params}, batch["ids"], deterministic=rng is None or dropout_rate == 0.0,
                             rngs=rngs)  # [batch, length, vocab]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])  # [batch, length]
        loss = jnp.mean(nll * batch["scale"][:, None])
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
        return loss, {"accuracy": accuracy}

    def eval_fn(params, batch):
        loss, metrics = loss_fn(params, batch, None)
        return {"loss": loss, **metrics}

    return Task(
        init_params=init_params, loss_fn=loss_fn, train_source=NextTokenSource(size, poisoned),
        collate=lambda examples: pipeline.pad_and_stack(examples, {}), eval_fn=eval_fn,
        eval_source=NextTokenSource(64),
    )


def make_config(num_steps: int = 6, batch_size: int = 16, **sections) -> ml_collections.ConfigDict:
    """A trainer config; `sections` override fields, e.g. train={"grad_accum_steps": 2}, mesh={"fsdp": 2}."""
    config = ml_collections.ConfigDict({
        "task": "token_mlp",
        "model": {"width": 16, "hidden": 32},
        "train": {
            "seed": 0, "batch_size": batch_size, "grad_accum_steps": 1, "num_steps": num_steps,
            "learning_rate": 1e-2, "warmup_steps": 2, "decay": "linear", "end_learning_rate_fraction": 0.0,
            "weight_decay": 0.01, "adam_b1": 0.9, "adam_b2": 0.999, "adam_eps": 1e-8, "grad_clip_norm": 1.0,
            "log_every": 1, "eval_every": 1000, "prefetch": 0,
        },
        "mesh": {"data": -1, "fsdp": 1, "model": 1, "rules": "fsdp_model"},
        "eval": {"batch_size": 16, "num_batches": 2},
        "checkpoint": {"every": 2, "keep": 3, "async_save": True, "best_metric": "", "best_mode": "min"},
    })
    for section, values in sections.items():
        config[section].update(values)
    return config


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# The toy `train` task shrunk so that a subprocess compiles and runs it in seconds (dotted config overrides).
TINY_T5 = {
    "model.vocab_size": 32, "model.d_model": 16, "model.d_kv": 4, "model.d_ff": 32, "model.num_layers": 1,
    "model.num_decoder_layers": 1, "model.num_heads": 4, "model.relative_attention_num_buckets": 8,
    "model.dropout_rate": 0.1, "data.vocab_size": 16, "data.max_length": 6, "data.num_train": 512,
    "train.batch_size": 8, "train.warmup_steps": 2, "train.log_every": 1, "train.eval_every": 0,
}


def t5_config(overrides: dict) -> ml_collections.ConfigDict:
    """configs/t5_seq2seq.py:tiny with dotted overrides, as `--config.a.b=v` would give."""
    spec = importlib.util.spec_from_file_location("t5_seq2seq_config", REPO_ROOT / "configs" / "t5_seq2seq.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny")
    for dotted, value in overrides.items():
        section, field = dotted.split(".")
        config[section][field] = value
    return config


def train_command(workdir: pathlib.Path, overrides: dict, *extra: str) -> list[str]:
    """The `distill-ret train` command line for configs/t5_seq2seq.py:tiny with dotted overrides."""
    flags = [f"--config.{dotted}={value}" for dotted, value in overrides.items()]
    return [sys.executable, "-m", "distill_ret.main", "train", "--config=configs/t5_seq2seq.py:tiny",
            f"--workdir={workdir}", *flags, *extra]


def train_records(workdir: pathlib.Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    return metrics.read_log(path) if path.exists() else []
