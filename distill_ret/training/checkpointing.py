"""Checkpoints of a training run: orbax CheckpointManager with async saves, keep-N and optional best-by-metric.

A checkpoint at step s is one directory `<workdir>/checkpoints/<s>/` with these items:
  state   the TrainState (params, optimizer state, step, RNG), written shard by shard by every process;
  data    the data iterator's state ({"next_index": global batches consumed}), identical on all processes;
  config  the job config as JSON, to refuse a restart whose config is incompatible;
  model   the task's model record as JSON (`tasks.ModelRecord.to_dict()`: HF config, head, tokenizer directory,
          options), so another stage or mode rebuilds the model without knowing the task; absent for toy tasks
          and for checkpoints written before records existed.
orbax writes into a temporary directory and renames it when every item is complete, so a run killed during an
async save leaves at most a temporary directory that `latest_step` ignores: what is restored is always complete.
Frozen models (teachers) are not part of TrainState and therefore never reach a checkpoint.

Dev metrics: a checkpoint carries the metrics of an evaluation at its own step, or none (a preemption save, or a
step where the best metric's evaluator did not run). Best-checkpoint selection ignores checkpoints without metrics,
and the latest checkpoint is always kept for resume.
"""
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
from typing import Any, Iterable, Iterator

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from distill_ret.errors import ConfigError

# Config fields that may change between a run and its resumption (prefix match on dotted paths; model.remat changes
# memory, not the math); any other difference (model shape, data, optimizer, batch size, seeds, number of steps)
# stops the restart.
RESUMABLE_CHANGES = ("checkpoint.", "mesh.", "evals.", "train.log_every", "train.prefetch", "model.remat")
CHECKPOINTS_DIR = "checkpoints"  # a run workdir is recognised by this sub-directory


def _item_handlers() -> dict[str, Any]:
    return {
        "state": ocp.StandardCheckpointHandler(),
        "data": ocp.JsonCheckpointHandler(),
        "config": ocp.JsonCheckpointHandler(),
        "model": ocp.JsonCheckpointHandler(),
    }


def orbax_log_filter(min_level: int):
    """A logging filter that drops orbax's records below `min_level` and passes every other record."""
    return lambda record: record.levelno >= min_level or "/orbax/" not in record.pathname


@contextlib.contextmanager
def quiet_orbax(min_level: int = logging.ERROR) -> Iterator[None]:
    """Silences orbax's absl records below `min_level` for the duration (its read-only restores warn about the
    read-only directory and the items they skip, which is exactly what a reader asks for)."""
    absl_logger = logging.getLogger("absl")
    record_filter = orbax_log_filter(min_level)
    absl_logger.addFilter(record_filter)
    try:
        yield
    finally:
        absl_logger.removeFilter(record_filter)


def is_run_workdir(path: str | os.PathLike) -> bool:
    """Whether `path` is a training run's workdir (it has a checkpoints/ directory)."""
    return (pathlib.Path(path) / CHECKPOINTS_DIR).is_dir()


class CheckpointStore:
    """Saves and restores (state, data-iterator state, config, model record) under `directory` with orbax."""

    def __init__(
        self,
        directory: str | pathlib.Path,
        *,
        keep: int,
        async_save: bool = True,
        best_metric: str | None = None,
        best_mode: str = "min",
    ):
        self._best_metric = best_metric
        if best_metric is None:
            preservation = checkpoint_managers.LatestN(n=keep)
        else:
            # The best `keep` by the metric, plus always the latest (a restart resumes from it).
            preservation = checkpoint_managers.AnyPreservationPolicy([
                checkpoint_managers.LatestN(n=1),
                checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric], reverse=best_mode == "min", n=keep,
                    keep_checkpoints_without_metrics=False,
                ),
            ])
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save,
            preservation_policy=preservation,
            best_fn=None if best_metric is None else (lambda metrics: metrics[best_metric]),
            best_mode=best_mode,
            # Saves are decided by the trainer; a save waits for the previous one instead of being skipped.
            enable_should_save_is_saving_in_progress_check=False,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(
            pathlib.Path(directory).absolute(), options=options, item_handlers=_item_handlers(),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def best_step(self) -> int | None:
        """The step whose metrics are best by `best_metric` (None without a best metric or an evaluated checkpoint)."""
        if self._best_metric is None:
            return None
        return self._manager.best_step()

    def reached_preemption(self, step: int) -> bool:
        """True on every process at the same step once any process received a preemption notice (multi-host)."""
        return self._manager.reached_preemption(step)

    def save(self, step: int, state: Any, data_state: dict, config: dict, *, model: dict | None = None,
             metrics: dict | None = None) -> None:
        """Starts an (async) save of step `step`; returns once the arrays are copied off the devices.

        `metrics` are the dev metrics evaluated at this very step (never an earlier step's); without the best
        metric among them the checkpoint is saved without metrics, so best-checkpoint selection ignores it.
        """
        if not metrics or (self._best_metric is not None and self._best_metric not in metrics):
            metrics = None
        items = {
            "state": ocp.args.StandardSave(state),
            "data": ocp.args.JsonSave(data_state),
            "config": ocp.args.JsonSave(config),
        }
        if model is not None:
            items["model"] = ocp.args.JsonSave(model)
        # Without metrics orbax warns that the best metric is tracked: exactly what this save means to say.
        with quiet_orbax() if metrics is None and self._best_metric is not None else contextlib.nullcontext():
            self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """(state laid out as `abstract_state`'s shardings, data-iterator state) of a saved step."""
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()),
        )
        return restored.state, restored.data

    def saved_config(self, step: int) -> dict:
        return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config

    def wait(self) -> None:
        """Blocks until pending async saves are complete."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


@dataclasses.dataclass(frozen=True)
class RunCheckpoint:
    """One checkpoint of a training run, read back: its step, the job config it was trained with, the params
    (restored on the first local device) and the model record (`ModelRecord.to_dict()`; None for checkpoints
    written before records existed, and for toy tasks)."""

    step: int
    job_config: dict
    params: Any
    model: dict | None


def _read_only_manager(directory: pathlib.Path, best_metric: str | None = None,
                       best_mode: str = "max") -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        read_only=True, best_fn=None if best_metric is None else (lambda metrics: metrics[best_metric]),
        best_mode=best_mode,
    )
    return ocp.CheckpointManager(directory, item_handlers=_item_handlers(), options=options)


def _resolve_step(directory: pathlib.Path, step: int | str) -> tuple[int, dict]:
    """(saved step that `step` names, the job config saved with it); ConfigError naming the directory otherwise."""
    if not directory.is_dir():
        raise ConfigError(f"{directory} does not exist (no checkpoints were written there)")
    with _read_only_manager(directory) as manager:
        steps = sorted(manager.all_steps())
        if not steps:
            raise ConfigError(f"{directory} holds no complete checkpoint")
        latest_config = manager.restore(steps[-1], args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    saved = latest_config.get("checkpoint", {})
    metric = saved.get("best_metric") or None
    if step == "latest":
        return steps[-1], latest_config
    if step == "best":
        if metric is None:
            return steps[-1], latest_config
        with _read_only_manager(directory, metric, saved.get("best_mode", "max")) as manager:
            best = manager.best_step()
        step = steps[-1] if best is None else best
    elif step not in steps:
        raise ConfigError(f"step={step} is not in {directory} (saved steps: {steps})")
    if step == steps[-1]:
        return step, latest_config
    with _read_only_manager(directory) as manager:
        return step, manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config


def _read_model(directory: pathlib.Path, step: int) -> dict | None:
    if not (directory / str(step) / "model").is_dir():
        return None
    with _read_only_manager(directory) as manager:
        return dict(manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore())).model)


def read_run_record(run_workdir: str | os.PathLike, step: int | str = "best") -> tuple[int, dict, dict | None]:
    """(step, saved job config, model record dict or None) of a run's checkpoint, without reading the params.

    `step` as in `read_run_checkpoint`.
    """
    directory = (pathlib.Path(run_workdir) / CHECKPOINTS_DIR).absolute()
    with quiet_orbax():
        step, job_config = _resolve_step(directory, step)
        return step, dict(job_config), _read_model(directory, step)


def read_run_checkpoint(run_workdir: str | os.PathLike, step: int | str = "best") -> RunCheckpoint:
    """A training run's checkpoint, params restored on the first local device.

    The checkpoints are opened read-only, so reading while the run still trains is safe. `step`: "best" (by the
    run's `checkpoint.best_metric` among the checkpoints that carry metrics; the latest when the run had none),
    "latest", or a saved step number. Raises ConfigError naming the directory when it has no complete checkpoint
    or not the requested step.
    """
    directory = (pathlib.Path(run_workdir) / CHECKPOINTS_DIR).absolute()
    with quiet_orbax():
        step, job_config = _resolve_step(directory, step)
        with _read_only_manager(directory) as manager:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                                  dict(manager.item_metadata(step).state))
            state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
        return RunCheckpoint(step=step, job_config=dict(job_config), params=state["params"],
                             model=_read_model(directory, step))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def config_differences(saved: dict, current: dict, allowed: Iterable[str] = RESUMABLE_CHANGES) -> list[str]:
    """'field: saved -> current' for every dotted field that differs (or exists in only one) and is not allowed to."""
    saved_flat = _flatten(json.loads(json.dumps(saved)))
    current_flat = _flatten(json.loads(json.dumps(current)))
    missing = object()
    differences = []
    for field in sorted(set(saved_flat) | set(current_flat)):
        if any(field.startswith(prefix) for prefix in allowed):
            continue
        old, new = saved_flat.get(field, missing), current_flat.get(field, missing)
        if old != new:
            show = lambda value: "<absent>" if value is missing else json.dumps(value)
            differences.append(f"{field}: {show(old)} -> {show(new)}")
    return differences


def check_resumable(saved: dict, current: dict, directory: str | pathlib.Path, step: int) -> None:
    """Raises ConfigError naming every field in which `current` differs incompatibly from the checkpoint's config."""
    differences = config_differences(saved, current)
    if differences:
        raise ConfigError(
            f"the checkpoint at step {step} in {directory} was written with a different config; these fields "
            f"differ (saved -> now): {'; '.join(differences)}. Use a new --workdir, or restore the old values."
        )
