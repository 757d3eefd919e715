"""A tiny annotated model, its Task and a trainer config, shared by the training-core tests.

The model is built from `distill_ret.models.layers` with the same logical axis names as T5/BERT (vocab, embed,
mlp), so the partitioning rules shard it the way they shard the real models. The task predicts, for every
token, the next id (id + 1 mod vocab): every position counts, so a batch loss is a plain mean over examples.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from distill_ret.data import pipeline
from distill_ret.models import layers
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
