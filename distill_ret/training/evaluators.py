"""Named dev evaluators: each `config.evals.<name>` section is built, by the builder registered for its `kind`, into
an `Evaluator` whose `evaluate(params, mesh) -> {measure: value}` the trainer runs at the section's own `every`.

Kinds are registered as "module:function" strings (as tasks are), so training/ imports no teacher or method code.
A builder is `build(name, section, inputs, mesh) -> Evaluator`, where `inputs` is what the task supplies for that
kind (`Task.eval_inputs[kind]`) and `mesh` the trainer's. Every section has `kind` and `every` (steps between runs,
and always at the last step; 0 = never); the other fields belong to the kind. Results are logged as
`<name>/<measure>`, and `checkpoint.best_metric` names one of them.

Kinds: "batches" (below: the task's pure eval_fn averaged over a fixed list of batches, as sums and counts);
"rerank" (the cross-encoder's dev reranking, `teachers.cross_encoder_task`); "fgd_dense" (`fgd.retrieval`);
"generative" (constrained generative retrieval, `dgr.task`).
"""
import dataclasses
import importlib
from typing import Any, Callable, Mapping, Sequence

import jax
from jax.sharding import Mesh

from distill_ret.data import pipeline
from distill_ret.errors import ConfigError, section_integer
from distill_ret.training import metrics as metrics_lib
from distill_ret.training import partitioning
from distill_ret.training.tasks import Batch, Metrics, RandomAccessSource, Task

# evaluator kind -> "module:function" of its builder.
EVALUATOR_KINDS = {
    "batches": "distill_ret.training.evaluators:build_batch_evaluator",
    "rerank": "distill_ret.teachers.cross_encoder_task:build_rerank_evaluator",
    "fgd_dense": "distill_ret.fgd.retrieval:build_dense_evaluator",
    "generative": "distill_ret.dgr.task:build_generative_evaluator",
}


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """One named dev evaluation: `evaluate(params, mesh)` returns a value for each of `measures`."""

    name: str
    every: int  # steps between runs (and at the last step); 0 = never
    measures: tuple[str, ...]
    evaluate: Callable[[Any, Mesh], Mapping[str, float]]

    def due(self, step: int, num_steps: int) -> bool:
        return self.every > 0 and (step % self.every == 0 or step == num_steps)


def check_every(name: str, section: Any) -> int:
    """The section's `every` after checking it is an integer >= 0 (ConfigError naming the field)."""
    return section_integer(section, f"config.evals.{name}", "every", 0, "steps between runs; 0 = never")


def positive_field(name: str, section: Any, field: str) -> int:
    """An integer field of `config.evals.<name>` that must be >= 1 (ConfigError naming it otherwise)."""
    return section_integer(section, f"config.evals.{name}", field, 1)


def build_evaluators(config: Any, task: Task, mesh: Mesh) -> list[Evaluator]:
    """Every `config.evals.<name>` section that runs (every > 0) built into an Evaluator, by name; ConfigError naming
    the field on a bad section."""
    evaluators = []
    for name, section in sorted((config.get("evals") or {}).items()):
        kind = section.get("kind")
        if kind not in EVALUATOR_KINDS:
            raise ConfigError(f"config.evals.{name}.kind={kind!r}: expected one of {sorted(EVALUATOR_KINDS)}")
        if check_every(name, section) == 0:
            continue  # switched off: nothing to prepare
        if kind not in task.eval_inputs:
            raise ConfigError(f"config.evals.{name}.kind={kind!r}: task {config.task!r} provides no inputs for it "
                              f"(it supports {sorted(task.eval_inputs)})")
        module_name, function_name = EVALUATOR_KINDS[kind].split(":")
        builder = getattr(importlib.import_module(module_name), function_name)
        evaluators.append(builder(name, section, task.eval_inputs[kind], mesh))
    return evaluators


def check_best_metric(checkpoint: Any, evaluators: Sequence[Evaluator]) -> None:
    """`checkpoint.best_metric` ("" or "<evaluator>/<measure>") names a measure of an evaluator that runs, and every
    regular checkpoint is an evaluation step of it (`checkpoint.every` a multiple of its `every`)."""
    best = checkpoint.best_metric
    if not best:
        return
    by_name = {evaluator.name: evaluator for evaluator in evaluators}
    name, _, measure = best.partition("/")
    available = sorted(f"{e.name}/{m}" for e in evaluators for m in e.measures)
    if name not in by_name or measure not in by_name[name].measures:
        raise ConfigError(f"config.checkpoint.best_metric={best!r}: not a measure of a config.evals evaluator that "
                          f"runs (every > 0); expected '<evaluator>/<measure>', one of {available}")
    _check_checkpoint_multiple(checkpoint, name, by_name[name].every)


def check_best_metric_schedule(config: Any) -> None:
    """From the config alone, before any task is built: when `checkpoint.best_metric` names an evaluator of
    `config.evals` that runs, `checkpoint.every` is a multiple of its `every` (`check_best_metric` checks the rest
    once the evaluators exist)."""
    if not config.checkpoint.best_metric:
        return
    name = config.checkpoint.best_metric.partition("/")[0]
    section = (config.get("evals") or {}).get(name)
    every = check_every(name, section) if section is not None else 0
    if every:
        _check_checkpoint_multiple(config.checkpoint, name, every)


def _check_checkpoint_multiple(checkpoint: Any, name: str, every: int) -> None:
    if checkpoint.every % every:
        raise ConfigError(
            f"config.checkpoint.every={checkpoint.every} is not a multiple of config.evals.{name}.every={every}: "
            f"checkpoint.best_metric={checkpoint.best_metric!r} needs an evaluation at every checkpoint")


def run_due(evaluators: Sequence[Evaluator], step: int, num_steps: int, params: Any, mesh: Mesh) -> dict[str, float]:
    """{"<name>/<measure>": value} of every evaluator due at `step`; {} when none is."""
    results = {}
    for evaluator in evaluators:
        if evaluator.due(step, num_steps):
            values = evaluator.evaluate(params, mesh)
            results.update({f"{evaluator.name}/{measure}": float(values[measure]) for measure in evaluator.measures})
    return results


@dataclasses.dataclass(frozen=True)
class BatchEvalInputs:
    """What kind "batches" needs from a task: a pure `eval_fn(params, batch) -> metrics` (each a scalar or a
    (sum, count) pair) naming `measures`, and the examples and collate function of its batches."""

    eval_fn: Callable[[Any, Batch], Metrics]
    measures: tuple[str, ...]
    source: RandomAccessSource
    collate: Callable[[Sequence[Any]], Batch]


class BatchEvaluation:
    """eval_fn over the first `num_batches` global batches of the source (fixed, unshuffled), jitted per mesh;
    each metric is the sum of its sums over the count of its counts."""

    def __init__(self, inputs: BatchEvalInputs, batch_size: int, num_batches: int):
        self._inputs, self._batch_size, self._num_batches = inputs, batch_size, num_batches
        self._prepared: dict[Mesh, tuple[Callable, list[Batch]]] = {}

    def prepare(self, mesh: Mesh) -> tuple[Callable, list[Batch]]:
        """(jitted eval_fn, global batches) on `mesh`, made once per mesh."""
        if mesh not in self._prepared:
            rows = partitioning.process_batch_rows(mesh, self._batch_size)
            dataset = pipeline.batch_dataset(self._inputs.source, self._inputs.collate,
                                             global_batch_size=self._batch_size, rows=rows, seed=0, shuffle=False,
                                             num_epochs=1)
            batches = [partitioning.host_to_global(batch, mesh, self._batch_size)
                       for batch in pipeline.first_batches(dataset, self._num_batches)]
            eval_step = jax.jit(lambda params, batch: metrics_lib.sum_counts(self._inputs.eval_fn(params, batch)),
                                out_shardings=partitioning.replicated(mesh))
            self._prepared[mesh] = eval_step, batches
        return self._prepared[mesh]

    def __call__(self, params: Any, mesh: Mesh) -> dict[str, float]:
        eval_step, batches = self.prepare(mesh)
        totals = metrics_lib.MetricTotals()
        for batch in batches:
            totals.add(jax.device_get(eval_step(params, batch)))
        return totals.means()


def build_batch_evaluator(name: str, section: Any, inputs: BatchEvalInputs, mesh: Mesh) -> Evaluator:
    """Kind "batches": fields batch_size (global) and num_batches."""
    batch_size = positive_field(name, section, "batch_size")
    num_batches = positive_field(name, section, "num_batches")
    if batch_size * num_batches > len(inputs.source):
        raise ConfigError(f"config.evals.{name}.batch_size={batch_size} x num_batches={num_batches} exceeds the "
                          f"{len(inputs.source)} evaluation examples")
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % shards:
        raise ConfigError(f"config.evals.{name}.batch_size={batch_size} is not divisible by the {shards} devices of "
                          "the mesh's data x fsdp axes")
    evaluation = BatchEvaluation(inputs, batch_size, num_batches)
    return Evaluator(name=name, every=check_every(name, section), measures=tuple(inputs.measures), evaluate=evaluation)
