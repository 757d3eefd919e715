"""Shared by the training-core tests: a tiny annotated model, its Task, trainer configs, `train` command lines.

The model is built from `distill_ret.models.layers` with the same logical axis names as T5/BERT (vocab, embed,
mlp), so the partitioning rules shard it the way they shard the real models. The task predicts, for every
token, the next id (id + 1 mod vocab). By default every position counts and the loss is a plain mean over the
batch; with `token_loss=True` only the first `num_tokens(i)` positions of example i count and the loss is the
(sum, count) pair of their NLL, so batches carry different numbers of tokens.
"""
import importlib.util
import pathlib
import struct
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
from distill_ret.training.evaluators import BatchEvalInputs
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


def num_tokens(index: int) -> int:
    """How many leading positions of example `index` count under `token_loss` (1 .. LENGTH, varying with index)."""
    return 1 + int(np.random.default_rng((index, 1)).integers(LENGTH))


class NextTokenSource:
    """Example i: ids [LENGTH] from a generator seeded by i, labels = ids + 1 mod VOCAB; `scale` 1 (inf if poisoned);
    `mask` [LENGTH] bool, True on the first num_tokens(i) positions."""

    def __init__(self, size: int, poisoned: int | None = None):
        self._size, self._poisoned = size, poisoned

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        ids = np.random.default_rng(index).integers(0, VOCAB, LENGTH, dtype=np.int32)
        scale = np.float32(np.inf if index == self._poisoned else 1.0)
        return {"ids": ids, "labels": (ids + 1) % VOCAB, "scale": scale, "mask": np.arange(LENGTH) < num_tokens(index)}


def make_task(width: int = 16, hidden: int = 32, size: int = 256, poisoned: int | None = None,
              dropout_rate: float = 0.0, token_loss: bool = False) -> Task:
    model = TokenMlp(width, hidden, dropout_rate)

    def init_params(rng):
        return model.init(rng, jnp.zeros((1, LENGTH), jnp.int32))["params"]

    def loss_fn(params, batch, rng):
        rngs = {} if rng is None else {"dropout": rng}
        logits = model.apply({"params": params}, batch["ids"], deterministic=rng is None or dropout_rate == 0.0,
                             rngs=rngs)  # [batch, length, vocab]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])  # [batch, length]
        nll = nll * batch["scale"][:, None]  # [batch, length]
        correct = (jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32)  # [batch, length]
        if token_loss:
            mask = batch["mask"].astype(jnp.float32)  # [batch, length]
            count = jnp.sum(mask)
            return (jnp.sum(nll * mask), count), {
                "accuracy": (jnp.sum(correct * mask), count),
                "label_mean": (jnp.sum(batch["labels"] * mask), count),  # a token average that varies a lot by batch
            }
        return jnp.mean(nll), {"accuracy": jnp.mean(correct)}

    def eval_fn(params, batch):
        loss, metrics = loss_fn(params, batch, None)
        return {"loss": loss, **metrics}

    def collate(examples):
        return pipeline.pad_and_stack(examples, {})

    return Task(
        init_params=init_params, loss_fn=loss_fn, train_source=NextTokenSource(size, poisoned), collate=collate,
        eval_inputs={"batches": BatchEvalInputs(eval_fn, ("loss", "accuracy", "label_mean") if token_loss
                                                else ("loss", "accuracy"), NextTokenSource(64), collate)},
    )


def make_config(num_steps: int = 6, batch_size: int = 16, **sections) -> ml_collections.ConfigDict:
    """A trainer config; `sections` override fields, e.g. train={"grad_accum_steps": 2}, evals={"dev": {"every": 2}}."""
    config = ml_collections.ConfigDict({
        "task": "token_mlp",
        "model": {"width": 16, "hidden": 32},
        "train": {
            "seed": 0, "batch_size": batch_size, "grad_accum_steps": 1, "num_steps": num_steps,
            "learning_rate": 1e-2, "warmup_steps": 2, "decay": "linear", "end_learning_rate_fraction": 0.0,
            "weight_decay": 0.01, "adam_b1": 0.9, "adam_b2": 0.999, "adam_eps": 1e-8, "grad_clip_norm": 1.0,
            "log_every": 1, "prefetch": 0,
        },
        "mesh": {"data": -1, "fsdp": 1, "model": 1, "rules": "fsdp_model"},
        "evals": {"dev": {"kind": "batches", "every": 0, "batch_size": 16, "num_batches": 2}},
        "checkpoint": {"every": 2, "keep": 3, "async_save": True, "best_metric": "", "best_mode": "min"},
    })
    for section, values in sections.items():
        _merge(config[section], values)
    return config


def _merge(section: ml_collections.ConfigDict, values: dict) -> None:
    """Overrides fields of `section`, descending into nested dicts (evals={"dev": {"every": 2}})."""
    for field, value in values.items():
        if isinstance(value, dict):
            _merge(section[field], value)
        else:
            section[field] = value


REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# The toy `train` task shrunk so that a subprocess compiles and runs it in seconds (dotted config overrides).
TINY_T5 = {
    "model.vocab_size": 32, "model.d_model": 16, "model.d_kv": 4, "model.d_ff": 32, "model.num_layers": 1,
    "model.num_decoder_layers": 1, "model.num_heads": 4, "model.relative_attention_num_buckets": 8,
    "model.dropout_rate": 0.1, "data.vocab_size": 16, "data.max_length": 6, "data.num_train": 512,
    "train.batch_size": 8, "train.warmup_steps": 2, "train.log_every": 1, "evals.dev.every": 0,
}


def t5_config(overrides: dict) -> ml_collections.ConfigDict:
    """configs/t5_seq2seq.py:tiny with dotted overrides, as `--config.a.b=v` would give."""
    spec = importlib.util.spec_from_file_location("t5_seq2seq_config", REPO_ROOT / "configs" / "t5_seq2seq.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny")
    for dotted, value in overrides.items():
        *sections, field = dotted.split(".")
        target = config
        for section in sections:
            target = target[section]
        target[field] = value
    return config


def train_command(workdir: pathlib.Path, overrides: dict, *extra: str) -> list[str]:
    """The `distill-ret train` command line for configs/t5_seq2seq.py:tiny with dotted overrides."""
    flags = [f"--config.{dotted}={value}" for dotted, value in overrides.items()]
    return [sys.executable, "-m", "distill_ret.main", "train", "--config=configs/t5_seq2seq.py:tiny",
            f"--workdir={workdir}", *flags, *extra]


def train_records(workdir: pathlib.Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    return metrics.read_log(path) if path.exists() else []


def data_order(config: ml_collections.ConfigDict, num_batches: int, size: int = 256) -> list[list[int]]:
    """The record indices of the trainer's first `num_batches` global batches (same pipeline, same seed)."""
    order = pipeline.batch_dataset(range(size), np.array, global_batch_size=config.train.batch_size,
                                   rows=slice(0, config.train.batch_size), seed=config.train.seed)
    return [list(map(int, order[index])) for index in range(num_batches)]


def tensorboard_scalars(directory: pathlib.Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in a TensorBoard directory as TensorBoard shows them: event files in name
    order, and a SessionLog START event at step s purges what earlier events logged at steps >= s."""
    from tensorboardX.proto import event_pb2

    scalars = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):  # TFRecord: uint64 length, uint32 crc, payload, uint32 crc
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                scalars = [scalar for scalar in scalars if scalar[0] < event.step]
            scalars += [(event.step, value.tag, value.simple_value) for value in event.summary.value]
    return scalars
