"""The training loop: a jitted, sharded train step over a Task, with checkpoints, resume, metrics and guards.

Train step. `jax.jit` with explicit in/out shardings and the state donated. Gradient accumulation is a
`lax.scan` over `train.grad_accum_steps` micro-batches inside the step (not optax.MultiSteps): one call = one
optimizer update on the whole global batch, so step numbers, the schedule and checkpoints count updates. Micro-
batch j takes rows j, j+k, j+2k, ... of the global batch, so every device works on every micro-batch. The loss is
a `(sum, count)` pair (a scalar loss counts 1 per micro-batch): sums, counts and the gradients of the sums are added
over the micro-batches and the gradient is divided by the total count once, so accumulating a token-weighted loss
gives exactly the big batch's gradient. Every metric leaves the step as a (sum, count) pair (`training.metrics`).
The step's RNG is fold_in(state.rng, step) (and the micro-batch index), so a resumed run draws the same dropout
masks as an uninterrupted one.

Loop. Before anything is written, the config values, the workdir, the evaluators and the best metric are checked
(ConfigError naming the field). Each global batch comes from the grain pipeline (this process's rows) and becomes
one global array. Step metrics stay on the device until a log, eval or save step; then all of them since the last
check are fetched and the loss and gradient norm checked: a non-finite value stops the run (TrainingDiverged)
before anything is saved, so the last checkpoint is a good one. Named evaluators (`training.evaluators`) run at
their own `every`; a checkpoint carries only the metrics evaluated at its own step. SIGTERM (or, multi-host, the
preemption sync point) saves a checkpoint at the current step and returns normally. Restarting in the same workdir
restores the latest complete checkpoint (state and data-iterator position) after checking that the config is
compatible.
"""
import logging as std_logging
import os
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
from distill_ret.data import pipeline
from distill_ret.errors import ConfigError, UserError, section_integer, section_number
from distill_ret.training import checkpointing, partitioning
from distill_ret.training import evaluators as evaluators_lib
from distill_ret.training import metrics as metrics_lib
from distill_ret.training import state as state_lib
from distill_ret.training.state import TrainState
from distill_ret.training.tasks import Batch, Metrics, Task, build_task

# Metrics that must stay finite; any other task metric is logged as it is.
GUARDED_METRICS = ("loss", "grad_norm")


class TrainingDiverged(UserError):
    """The loss or gradient norm became NaN or infinite; nothing from that step on was saved."""


def make_train_step(
    loss_fn: Callable[..., tuple[Any, Metrics]],
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    grad_accum_steps: int = 1,
    micro_batch_sharding: NamedSharding | None = None,
) -> Callable[[TrainState, Batch, Any], tuple[TrainState, dict[str, metrics_lib.SumCount]]]:
    """The pure train step (state, global batch, frozen) -> (new state, {metric: (sum, count)})."""

    def loss_sum(params, batch, rng, frozen):
        """(sum of the loss, (its count, task metrics as (sum, count))); only the sum is differentiated."""
        if frozen is None:
            loss, task_metrics = loss_fn(params, batch, rng)
        else:
            loss, task_metrics = loss_fn(params, batch, rng, frozen=jax.lax.stop_gradient(frozen))
        total, count = metrics_lib.as_sum_count(loss)
        return total, (jax.lax.stop_gradient(count), metrics_lib.sum_counts(task_metrics))

    grad_fn = jax.value_and_grad(loss_sum, has_aux=True)

    def step(state: TrainState, batch: Batch, frozen: Any) -> tuple[TrainState, dict[str, metrics_lib.SumCount]]:
        rng = jax.random.fold_in(state.rng, state.step)
        if grad_accum_steps == 1:
            (total, (count, task_metrics)), grad_sums = grad_fn(state.params, batch, rng, frozen)
        else:
            (total, (count, task_metrics)), grad_sums = _accumulate(state.params, batch, rng, frozen)
        grads = jax.tree.map(lambda grad_sum: metrics_lib.safe_ratio(grad_sum, count), grad_sums)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        step_metrics = {
            **task_metrics,
            "loss": (total, count),
            "grad_norm": metrics_lib.as_sum_count(optax.tree.norm(grads)),
            "learning_rate": metrics_lib.as_sum_count(schedule(state.step)),
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), step_metrics

    def _accumulate(params, batch, rng, frozen):
        """grad_fn's outputs added over the micro-batches: ((loss sum, (count, metric pairs)), gradient sums)."""

        def split(x):  # [batch, ...] -> [k, batch / k, ...]; micro-batch j = rows j, j + k, ...
            if x.shape[0] % grad_accum_steps:
                raise ValueError(f"batch of {x.shape[0]} rows is not divisible by grad_accum_steps={grad_accum_steps}")
            micro = x.reshape((x.shape[0] // grad_accum_steps, grad_accum_steps) + x.shape[1:]).swapaxes(0, 1)
            if micro_batch_sharding is not None:
                micro = jax.lax.with_sharding_constraint(micro, micro_batch_sharding)
            return micro

        micro_batches = jax.tree.map(split, batch)
        first = jax.tree.map(lambda x: x[0], micro_batches)
        shapes = jax.eval_shape(grad_fn, params, first, rng, frozen)  # ((sum, (count, metrics)), grads)
        zeros = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)

        def body(totals, inputs):
            index, micro_batch = inputs
            outputs = grad_fn(params, micro_batch, jax.random.fold_in(rng, index), frozen)
            return jax.tree.map(jnp.add, totals, outputs), None

        totals, _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum_steps), micro_batches))
        return totals

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
    """Step metrics kept on the device until a check; checks fetch them, stop on non-finite values and add them to
    the log window's sums and counts."""

    def __init__(self):
        self._unchecked: list[tuple[int, Any]] = []
        self._window = metrics_lib.MetricTotals()

    def add(self, step: int, step_metrics: Any) -> None:
        self._unchecked.append((step, step_metrics))

    def check(self, last_checkpoint: int | None, checkpoint_dir: pathlib.Path) -> None:
        for step, device_metrics in self._unchecked:
            host = jax.device_get(device_metrics)
            values = {name: metrics_lib.ratio(host[name]) for name in GUARDED_METRICS}
            bad = {name: value for name, value in values.items() if not np.isfinite(value)}
            if bad:
                raise TrainingDiverged(
                    f"non-finite {bad} at step {step}; stopping without saving. The last good checkpoint is "
                    f"step {last_checkpoint} in {checkpoint_dir}. Lower train.learning_rate or check the data."
                )
            self._window.add(host)
        self._unchecked.clear()

    def window_means(self) -> dict[str, float]:
        """sum of sums / sum of counts of every metric since the last call."""
        means = self._window.means()
        self._window.clear()
        return means


def check_config(config: Any) -> None:
    """The trainer's config values (train, checkpoint), checked before anything is built or written."""
    train = config.train
    batch_size = section_integer(train, "config.train", "batch_size", 1)
    section_integer(train, "config.train", "num_steps", 1)
    accumulation = section_integer(train, "config.train", "grad_accum_steps", 1)
    if batch_size % accumulation:
        raise ConfigError(f"config.train.grad_accum_steps={accumulation} does not divide "
                          f"config.train.batch_size={batch_size}")
    section_integer(train, "config.train", "log_every", 1)
    section_integer(train, "config.train", "prefetch", 0)
    section_integer(train, "config.train", "warmup_steps", 0)
    for field in ("learning_rate", "weight_decay", "grad_clip_norm", "end_learning_rate_fraction"):
        section_number(train, "config.train", field, 0.0)
    for field in ("adam_b1", "adam_b2"):
        if not 0.0 <= section_number(train, "config.train", field, 0.0) < 1.0:
            raise ConfigError(f"config.train.{field}={train[field]!r}: must be in [0, 1)")
    section_number(train, "config.train", "adam_eps", 0.0, exclusive=True)
    if train.decay not in ("linear", "cosine", "constant"):
        raise ConfigError(f"config.train.decay={train.decay!r}: expected 'linear', 'cosine' or 'constant'")
    section_integer(config.checkpoint, "config.checkpoint", "every", 1)
    section_integer(config.checkpoint, "config.checkpoint", "keep", 1)
    if config.checkpoint.best_mode not in ("min", "max"):
        raise ConfigError(f"config.checkpoint.best_mode={config.checkpoint.best_mode!r}: expected 'min' or 'max'")
    evaluators_lib.check_best_metric_schedule(config)


def check_batch_layout(train: Any, mesh: Mesh) -> None:
    """Every micro-batch splits evenly over the mesh's batch devices (data x fsdp)."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    micro_batch = train.batch_size // train.grad_accum_steps
    if micro_batch % shards:
        raise ConfigError(
            f"config.train.batch_size={train.batch_size} / grad_accum_steps={train.grad_accum_steps} = {micro_batch} "
            f"rows per micro-batch, not divisible by the {shards} devices of the mesh's data x fsdp axes")


def check_workdir(workdir: str | os.PathLike) -> pathlib.Path:
    """The workdir as a path, after checking it can be created or written; nothing is created here."""
    path = pathlib.Path(workdir).absolute()
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not existing.is_dir():
        raise ConfigError(f"--workdir={workdir}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir={workdir}: {existing} is not writable")
    return path


def _mesh_and_rules(config: Any) -> tuple[Mesh, partitioning.Rules]:
    try:
        mesh = partitioning.create_mesh({name: int(config.mesh[name]) for name in partitioning.MESH_AXES})
        rules = partitioning.axis_rules(config.mesh.rules)
    except ValueError as error:
        raise ConfigError(f"config.mesh: {error}") from None
    return mesh, rules


def train(task: Task, config: Any, workdir: str | pathlib.Path) -> TrainState:
    """Runs (or resumes) training of `task` as configured; returns the final state."""
    check_config(config)
    workdir = check_workdir(workdir)
    train_config = config.train
    mesh, rules = _mesh_and_rules(config)
    check_batch_layout(train_config, mesh)
    evaluators = evaluators_lib.build_evaluators(config, task, mesh)
    evaluators_lib.check_best_metric(config.checkpoint, evaluators)
    optimizer_config = state_lib.optimizer_config(train_config)
    schedule = state_lib.learning_rate_schedule(optimizer_config)
    tx = state_lib.make_optimizer(optimizer_config)
    batch_size, num_steps = int(train_config.batch_size), int(train_config.num_steps)
    if len(task.train_source) < batch_size:
        raise ConfigError(f"config.train.batch_size={batch_size} exceeds the {len(task.train_source)} "
                          "training examples")

    train_step, abstract, shardings, frozen = compile_train_step(
        task, tx, schedule, mesh, rules, grad_accum_steps=int(train_config.grad_accum_steps),
    )
    rows = partitioning.process_batch_rows(mesh, batch_size)
    dataset = pipeline.batch_dataset(
        task.train_source, task.collate, global_batch_size=batch_size, rows=rows, seed=int(train_config.seed),
    )
    iterator = pipeline.resumable_iterator(dataset, prefetch=int(train_config.prefetch))

    workdir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = workdir / checkpointing.CHECKPOINTS_DIR
    store = checkpointing.CheckpointStore(
        checkpoint_dir, keep=int(config.checkpoint.keep), async_save=bool(config.checkpoint.async_save),
        best_metric=config.checkpoint.best_metric or None, best_mode=config.checkpoint.best_mode,
    )
    config_record = config.to_dict()
    model_record = task.model.to_dict() if task.model is not None else None
    start = store.latest_step()
    if start is None:
        start = 0
        state = state_lib.create_state(task.init_params, tx, shardings, int(train_config.seed))
    else:
        checkpointing.check_resumable(store.saved_config(start), config_record, checkpoint_dir, start)
        state, data_state = store.restore(start, abstract)
        iterator.set_state(data_state)
        logging.info("resumed from the checkpoint at step %d in %s", start, checkpoint_dir)

    log_every = int(train_config.log_every)
    writer = metrics_lib.MetricWriter(
        workdir, start_step=start, num_steps=num_steps, enabled=distributed.is_main_process(),
    )
    preemption = _PreemptionNotice(store)
    buffer = _MetricBuffer()
    try:
        with partitioning.sharding_context(mesh, rules):
            for step in range(start + 1, num_steps + 1):
                batch = partitioning.host_to_global(next(iterator), mesh, batch_size)
                state, step_metrics = train_step(state, batch, frozen)
                buffer.add(step, step_metrics)
                preempted = preemption.reached(step)
                save = step % int(config.checkpoint.every) == 0 or step == num_steps or preempted
                evaluate = any(evaluator.due(step, num_steps) for evaluator in evaluators)
                if save or evaluate or step % log_every == 0:
                    buffer.check(store.latest_step(), checkpoint_dir)
                if step % log_every == 0 or step == num_steps or preempted:
                    writer.write(step, "train", buffer.window_means())
                eval_metrics = None  # only this step's evaluation may reach this step's checkpoint
                if evaluate:
                    eval_metrics = evaluators_lib.run_due(evaluators, step, num_steps, state.params, mesh)
                    writer.write(step, "eval", eval_metrics)
                if save:
                    store.save(step, state, iterator.get_state(), config_record, model=model_record,
                               metrics=eval_metrics)
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


def run_from_config(config: Any, workdir: str) -> None:
    """Mode `train`: builds the task named by config.task and trains it in `workdir`.

    The config values and the workdir are checked before the task reads its inputs; nothing is written before
    the task, its evaluators and the best metric are known to be valid.
    """
    check_config(config)
    check_workdir(workdir)
    # orbax reports every save at INFO through absl, which would break up the progress bar: keep its warnings.
    logging.get_absl_handler().addFilter(checkpointing.orbax_log_filter(std_logging.WARNING))
    train(build_task(config), config, workdir)
