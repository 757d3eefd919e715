"""The task interface the trainer runs, and the registry that maps `config.task` to a task builder.

A task is everything model- and data-specific; the trainer is everything else (mesh, optimizer, loop,
checkpoints). Parts that add a training objective (DGR, FGD) register a builder here and get sharding,
accumulation, checkpoints, resume and logging for free.
"""
import dataclasses
import importlib
from typing import Any, Callable, Mapping, Protocol, Sequence

import jax
import numpy as np

Batch = Mapping[str, np.ndarray]
Metrics = dict[str, jax.Array]


class RandomAccessSource(Protocol):
    """A finite, indexable collection of examples (a grain RandomAccessDataSource satisfies it)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Task:
    """What a training objective supplies to the trainer.

    init_params: rng -> the model's "params" collection, boxed with logical axis names (flax
        `with_logical_partitioning`), float32. Called under `jax.eval_shape` for shardings, then under jit.
    loss_fn: pure (params, batch, rng) -> (scalar loss, dict of scalar metrics); `batch` holds global arrays
        of shape [batch, ...]. With a `frozen` tree, it is called as loss_fn(params, batch, rng, frozen=frozen).
    train_source: examples, indexed 0..len-1; `collate` turns a list of them into a padded host batch.
    eval_fn: optional pure (params, batch) -> dict of scalar metrics, averaged over `eval.num_batches` batches
        of `eval_source`.
    frozen: optional pytree that the loss reads but never trains (a teacher's parameters, possibly boxed with
        logical axis names for sharding). It is passed as a separate jit argument, wrapped in stop_gradient,
        and never written to a checkpoint.
    host_eval: optional host-side evaluation params -> {measure: value}, run at eval steps beside eval_fn (e.g.
        rerank or retrieve a dev split and score the run with `distill_ret.evaluation`); its metrics are logged
        and can select the best checkpoint.
    """

    init_params: Callable[[jax.Array], Any]
    loss_fn: Callable[..., tuple[jax.Array, Metrics]]
    train_source: RandomAccessSource
    collate: Callable[[Sequence[Any]], Batch]
    eval_fn: Callable[[Any, Batch], Metrics] | None = None
    eval_source: RandomAccessSource | None = None
    frozen: Any = None
    host_eval: Callable[[Any], Mapping[str, float]] | None = None


# config.task -> "module:function"; the function takes the whole ConfigDict and returns a Task.
TASKS = {
    "t5_reverse": "distill_ret.training.reverse_task:build_task",
    "cross_encoder": "distill_ret.teachers.cross_encoder_task:build_task",
}


def build_task(config: Any) -> Task:
    """The Task named by `config.task`."""
    if config.task not in TASKS:
        raise ValueError(f"config.task = {config.task!r} is not a known task; expected one of {sorted(TASKS)}")
    module_name, function_name = TASKS[config.task].split(":")
    return getattr(importlib.import_module(module_name), function_name)(config)
