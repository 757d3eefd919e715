"""The task interface the trainer runs, the model record a task saves with its checkpoints, and the registry that
maps `config.task` to a task builder.

A task is everything model- and data-specific; the trainer is everything else (mesh, optimizer, loop,
checkpoints, evaluation schedule). Parts that add a training objective (DGR, FGD) register a builder here and get
sharding, accumulation, checkpoints, resume, staged initialisation and logging for free.
"""
import dataclasses
import importlib
import json
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import numpy as np

from distill_ret.errors import ConfigError

Batch = Mapping[str, np.ndarray]
# A metric value: a scalar (a per-step value, averaged over steps) or a (sum, count) pair of scalars (a per-example
# or per-token quantity, averaged as sum of sums / sum of counts).
MetricValue = jax.Array | tuple[jax.Array, jax.Array]
Metrics = dict[str, MetricValue]

HEADS = ("cross_encoder", "bi_encoder", "t5")


class RandomAccessSource(Protocol):
    """A finite, indexable collection of examples (a grain RandomAccessDataSource satisfies it)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """What rebuilds a trained model without knowing the task that trained it; saved as checkpoint item "model".

    config: the Hugging Face config.json dict of the trained model (`BertConfig/T5Config.to_hf().to_dict()`).
    head: "cross_encoder" | "bi_encoder" | "t5".
    tokenizer_dir: absolute path of the tokenizer directory; "" when the model has none (toy tasks).
    options: head options, e.g. {"num_labels": 1} or a bi-encoder's {"pooling": "mean", "normalize": True}.
    """

    config: dict
    head: str
    tokenizer_dir: str = ""
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"model record head {self.head!r} is not one of {HEADS}")

    def to_dict(self) -> dict:
        """The record as the checkpoint stores it (JSON types: e.g. the integer keys of id2label become strings)."""
        return json.loads(json.dumps({"config": self.config, "head": self.head, "tokenizer_dir": self.tokenizer_dir,
                                      "options": self.options}))

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "ModelRecord":
        return cls(config=dict(record["config"]), head=str(record["head"]),
                   tokenizer_dir=str(record.get("tokenizer_dir", "")), options=dict(record.get("options", {})))


@dataclasses.dataclass(frozen=True)
class Task:
    """What a training objective supplies to the trainer.

    init_params: rng -> the model's "params" collection, boxed with logical axis names (flax
        `with_logical_partitioning`), float32. Called under `jax.eval_shape` for shardings, then under jit. A task
        that starts from other weights wraps its random init with `training.state.init_from_source`.
    loss_fn: pure (params, batch, rng) -> (loss, metrics); `batch` holds global arrays of shape [batch, ...].
        `loss` is a scalar (a mean over the batch) or a `(sum, count)` pair; the trainer differentiates
        sum / total count over all micro-batches. Each metric is a scalar or a `(sum, count)` pair (see Metrics).
        With a `frozen` tree, it is called as loss_fn(params, batch, rng, frozen=frozen).
    train_source: examples, indexed 0..len-1; `collate` turns a list of them into a padded host batch.
    frozen: optional pytree that the loss reads but never trains (a teacher's parameters, possibly boxed with
        logical axis names for sharding). It is passed as a separate jit argument, wrapped in stop_gradient,
        and never written to a checkpoint.
    model: the record of the trained model (config, head, tokenizer), saved with every checkpoint; None for toy
        models that no other stage or mode rebuilds.
    eval_inputs: evaluator kind -> what that kind's builder needs from this task (`training.evaluators`); a
        `config.evals.<name>` section of a kind the task does not list is refused.
    """

    init_params: Callable[[jax.Array], Any]
    loss_fn: Callable[..., tuple[MetricValue, Metrics]]
    train_source: RandomAccessSource
    collate: Callable[[Sequence[Any]], Batch]
    frozen: Any = None
    model: ModelRecord | None = None
    eval_inputs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# config.task -> "module:function"; the function takes the whole ConfigDict and returns a Task.
TASKS = {
    "t5_reverse": "distill_ret.training.reverse_task:build_task",
    "cross_encoder": "distill_ret.teachers.cross_encoder_task:build_task",
    "fgd": "distill_ret.fgd.task:build_task",
    "dgr": "distill_ret.dgr.task:build_task",
}


def build_task(config: Any) -> Task:
    """The Task named by `config.task`."""
    if config.task not in TASKS:
        raise ConfigError(f"config.task={config.task!r} is not a known task; expected one of {sorted(TASKS)}")
    module_name, function_name = TASKS[config.task].split(":")
    return getattr(importlib.import_module(module_name), function_name)(config)
