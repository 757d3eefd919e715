"""The training loop: a jitted, sharded train step over a Task, with checkpoints, resume, metrics and guards.

Train step. `jax.jit` with explicit in/out shardings and the state donated. Gradient accumulation is a
`lax.scan` over `train.grad_accum_steps` micro-batches inside the step (not optax.MultiSteps): one call = one
optimizer update on the whole global batch, so step numbers, the schedule and checkpoints count updates. Micro-
batch j takes rows j, j+k, j+2k, ... of the global batch, so every device works on every micro-batch. The
micro-batch losses are averaged with equal weights (the gradient is the mean of the micro-batch gradients, equal
to the full-batch gradient of a loss that is a mean over examples). The step's RNG is fold_in(state.rng, step)
(and the micro-batch index), so a resumed run draws the same dropout masks as an uninterrupted one.

Loop. Each global batch comes from the grain pipeline (this process's rows) and becomes one global array. Step
metrics stay on the device until a log, eval or save step; then all of them since the last check are fetched and
the loss and gradient norm checked: a non-finite value stops the run (TrainingDiverged) before anything is saved,
so the last checkpoint is a good one. SIGTERM (or, multi-host, the preemption sync point) saves a checkpoint at the
current step and returns normally. Restarting in the same workdir restores the latest complete checkpoint
(state and data-iterator position) after checking that the config is compatible.
"""
import logging as std_logging
import pathlib
import signal
import threading
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from distill_ret import distributed
from distill_ret.errors import ConfigError
from distill_ret.data import pipeline
from distill_ret.training import checkpointing, partitioning
from distill_ret.training import metrics as metrics_lib
from distill_ret.training import state as state_lib
from distill_ret.training.state import TrainState
from distill_ret.training.tasks import Batch, Metrics, Task, build_task

# Metrics that must stay finite; any other task metric is logged as it is.
GUARDED_METRICS = ("loss", "grad_norm")


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or infinite; nothing from that step on was saved."""


def make_train_step(
    loss_fn: Callable[..., tuple[jax.Array, Metrics]],
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    grad_accum_steps: int = 1,
    micro_batch_sharding: NamedSharding | None = None,
) -> Callable[[TrainState, Batch, Any], tuple[TrainState, Metrics]]:
    """The pure train step (state, global batch, frozen) -> (new state, scalar metrics)."""

    def compute_loss(params, batch, rng, frozen):
        if frozen is None:
            return loss_fn(params, batch, rng)
        return loss_fn(params, batch, rng, frozen=jax.lax.stop_gradient(frozen))

    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)

    def step(state: TrainState, batch: Batch, frozen: Any) -> tuple[TrainState, Metrics]:
        rng = jax.random.fold_in(state.rng, state.step)
        if grad_accum_steps == 1:
            (loss, task_metrics), grads = grad_fn(state.params, batch, rng, frozen)
        else:
            loss, task_metrics, grads = _accumulate(state.params, batch, rng, frozen)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        step_metrics = {
            **task_metrics,
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "learning_rate": schedule(state.step),
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), step_metrics

    def _accumulate(params, batch, rng, frozen):
        def split(x):  # [batch, ...] -> [k, batch / k, ...]; micro-batch j = rows j, j + k, ...
            if x.shape[0] % grad_accum_steps:
                raise ValueError(f"batch of {x.shape[0]} rows is not divisible by grad_accum_steps={grad_accum_steps}")
            micro = x.reshape((x.shape[0] // grad_accum_steps, grad_accum_steps) + x.shape[1:]).swapaxes(0, 1)
            if micro_batch_sharding is not None:
                micro = jax.lax.with_sharding_constraint(micro, micro_batch_sharding)
            return micro

        micro_batches = jax.tree.map(split, batch)
        first = jax.tree.map(lambda x: x[0], micro_batches)
        shapes = jax.eval_shape(grad_fn, params, first, rng, frozen)  # ((loss, metrics), grads)
        zeros = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)

        def body(totals, inputs):
            index, micro_batch = inputs
            outputs = grad_fn(params, micro_batch, jax.random.fold_in(rng, index), frozen)
            return jax.tree.map(jnp.add, totals, outputs), None

        totals, _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum_steps), micro_batches))
        (loss, task_metrics), grads = jax.tree.map(lambda total: total / grad_accum_steps, totals)
        return loss, task_metrics, grads

    return step


def compile_train_step(
    task: Task, tx: optax.GradientTransformation, schedule: optax.Schedule, mesh: Mesh, rules: partitioning.Rules,
    *, grad_accum_steps: int = 1,
) -> tuple[Callable, TrainState, TrainState, Any]:
    """(jitted step, abstract state with shardings, state shardings, frozen tree placed on the mesh)."""
    abstract, shardings = state_lib.state_shardings(task.init_params, tx, mesh, rules)
    frozen, frozen_shardings = place_frozen(task.frozen, mesh, rules)
    step = make_train_step(
        task.loss_fn, tx, schedule, grad_accum_steps=grad_accum_steps,
        micro_batch_sharding=NamedSharding(mesh, PartitionSpec(None, partitioning.BATCH_AXES)),
    )
    jitted = jax.jit(
        step,
        in_shardings=(shardings, partitioning.batch_sharding(mesh), frozen_shardings),
        out_shardings=(shardings, partitioning.replicated(mesh)),
        donate_argnums=(0,),
    )
    return jitted, abstract, shardings, frozen


def place_frozen(frozen: Any, mesh: Mesh, rules: partitioning.Rules) -> tuple[Any, Any]:
    """A frozen tree (e.g. teacher params, possibly boxed with logical axes) unboxed and sharded like the student."""
    if frozen is None:
        return None, None
    shardings = partitioning.logical_shardings(jax.eval_shape(lambda: frozen), mesh, rules)
    return jax.device_put(nn.unbox(frozen), shardings), shardings


class _PreemptionNotice:
    """Whether this job was asked to stop: SIGTERM on one process; the preemption sync point across processes."""

    def __init__(self, store: checkpointing.CheckpointStore):
        self._store = store
        self._received = threading.Event()
        self._multi_process = jax.process_count() > 1
        self._previous = None
        if not self._multi_process:
            self._previous = signal.signal(signal.SIGTERM, lambda signum, frame: self._received.set())

    def reached(self, step: int) -> bool:
        if self._multi_process:
            return self._store.reached_preemption(step)
        return self._received.is_set()

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class _MetricBuffer:
    """Step metrics kept on the device until a check; checks fetch them and stop on non-finite values."""

    def __init__(self):
        self._unchecked: list[tuple[int, Metrics]] = []
        self._checked: list[dict[str, float]] = []

    def add(self, step: int, step_metrics: Metrics) -> None:
        self._unchecked.append((step, step_metrics))

    def check(self, last_checkpoint: int | None, checkpoint_dir: pathlib.Path) -> None:
        for step, device_metrics in self._unchecked:
            host = {name: float(value) for name, value in jax.device_get(device_metrics).items()}
            bad = {name: host[name] for name in GUARDED_METRICS if not np.isfinite(host[name])}
            if bad:
                raise TrainingDiverged(
                    f"non-finite {bad} at step {step}; stopping without saving. The last good checkpoint is "
                    f"step {last_checkpoint} in {checkpoint_dir}. Lower train.learning_rate or check the data."
                )
            self._checked.append(host)
        self._unchecked.clear()

    def mean_and_reset(self) -> dict[str, float]:
        means = {name: float(np.mean([m[name] for m in self._checked])) for name in self._checked[0]}
        self._checked.clear()
        return means


def _evaluate(eval_step: Callable, batches: list[Batch], params: Any) -> dict[str, float]:
    """Mean of eval_step's metrics over a fixed list of global batches."""
    results = [jax.device_get(eval_step(params, batch)) for batch in batches]
    return {name: float(np.mean([result[name] for result in results])) for name in results[0]}


def train(task: Task, config: Any, workdir: str | pathlib.Path) -> TrainState:
    """Runs (or resumes) training of `task` as configured; returns the final state."""
    workdir = pathlib.Path(workdir)
    train_config = config.train
    mesh = partitioning.create_mesh({name: int(config.mesh[name]) for name in partitioning.MESH_AXES})
    rules = partitioning.axis_rules(config.mesh.rules)
    optimizer_config = state_lib.optimizer_config(train_config)
    schedule = state_lib.learning_rate_schedule(optimizer_config)
    tx = state_lib.make_optimizer(optimizer_config)
    batch_size, num_steps = int(train_config.batch_size), int(train_config.num_steps)

    train_step, abstract, shardings, frozen = compile_train_step(
        task, tx, schedule, mesh, rules, grad_accum_steps=int(train_config.grad_accum_steps),
    )
    rows = partitioning.process_batch_rows(mesh, batch_size)
    dataset = pipeline.batch_dataset(
        task.train_source, task.collate, global_batch_size=batch_size, rows=rows, seed=int(train_config.seed),
    )
    iterator = pipeline.resumable_iterator(dataset, prefetch=int(train_config.prefetch))

    checkpoint_dir = workdir / "checkpoints"
    store = checkpointing.CheckpointStore(
        checkpoint_dir, keep=int(config.checkpoint.keep), async_save=bool(config.checkpoint.async_save),
        best_metric=config.checkpoint.best_metric or None, best_mode=config.checkpoint.best_mode,
    )
    config_record = config.to_dict()
    start = store.latest_step()
    if start is None:
        start = 0
        state = state_lib.create_state(task.init_params, tx, shardings, int(train_config.seed))
    else:
        checkpointing.check_resumable(store.saved_config(start), config_record, checkpoint_dir, start)
        state, data_state = store.restore(start, abstract)
        iterator.set_state(data_state)
        logging.info("resumed from the checkpoint at step %d in %s", start, checkpoint_dir)

    log_every, eval_every = int(train_config.log_every), int(train_config.eval_every)
    evaluation = _evaluation_setup(task, config, mesh, rules, shardings.params) if eval_every > 0 else None
    evaluates = eval_every > 0 and (evaluation is not None or task.host_eval is not None)
    if config.checkpoint.best_metric and not evaluates:
        raise ConfigError(
            f"checkpoint.best_metric={config.checkpoint.best_metric!r} needs evaluation: set train.eval_every > 0 "
            "(and a task with an eval function)"
        )
    writer = metrics_lib.MetricWriter(
        workdir, start_step=start, num_steps=num_steps, enabled=distributed.is_main_process(),
    )
    preemption = _PreemptionNotice(store)
    buffer = _MetricBuffer()
    eval_metrics = None
    try:
        with partitioning.sharding_context(mesh, rules):
            for step in range(start + 1, num_steps + 1):
                batch = partitioning.host_to_global(next(iterator), mesh, batch_size)
                state, step_metrics = train_step(state, batch, frozen)
                buffer.add(step, step_metrics)
                preempted = preemption.reached(step)
                save = step % int(config.checkpoint.every) == 0 or step == num_steps or preempted
                evaluate = evaluates and (step % eval_every == 0 or step == num_steps)
                if save or evaluate or step % log_every == 0:
                    buffer.check(store.latest_step(), checkpoint_dir)
                if step % log_every == 0 or step == num_steps or preempted:
                    writer.write(step, "train", buffer.mean_and_reset())
                if evaluate:
                    eval_metrics = _evaluate(*evaluation, state.params) if evaluation is not None else {}
                    if task.host_eval is not None:
                        eval_metrics.update(task.host_eval(state.params))
                    writer.write(step, "eval", eval_metrics)
                if save:
                    store.save(step, state, iterator.get_state(), config_record, metrics=eval_metrics)
                writer.advance(1)
                if preempted:
                    logging.warning("preemption notice: saved the checkpoint at step %d and stopping", step)
                    break
    finally:
        store.wait()
        store.close()
        writer.close()
        preemption.close()
    return state


def _evaluation_setup(
    task: Task, config: Any, mesh: Mesh, rules: partitioning.Rules, param_shardings: Any,
) -> tuple[Callable, list[Batch]] | None:
    """(jitted eval step, fixed global eval batches), or None when the task has no evaluation."""
    if task.eval_fn is None or task.eval_source is None:
        return None
    batch_size = int(config.eval.batch_size)
    dataset = pipeline.batch_dataset(
        task.eval_source, task.collate, global_batch_size=batch_size,
        rows=partitioning.process_batch_rows(mesh, batch_size), seed=0, shuffle=False, num_epochs=1,
    )
    batches = [
        partitioning.host_to_global(batch, mesh, batch_size)
        for batch in pipeline.first_batches(dataset, int(config.eval.num_batches))
    ]
    eval_step = jax.jit(
        task.eval_fn,
        in_shardings=(param_shardings, partitioning.batch_sharding(mesh)),
        out_shardings=partitioning.replicated(mesh),
    )
    return eval_step, batches


def run_from_config(config: Any, workdir: str) -> None:
    """Mode `train`: builds the task named by config.task and trains it in `workdir`."""
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    # orbax reports every save at INFO through absl, which would break up the progress bar: keep its warnings.
    logging.get_absl_handler().addFilter(
        lambda record: record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname
    )
    train(build_task(config), config, workdir)
