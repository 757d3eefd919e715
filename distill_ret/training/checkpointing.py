"""Checkpoints of a training run: orbax CheckpointManager with async saves, keep-N and optional best-by-metric.

A checkpoint at step s is one directory `<workdir>/checkpoints/<s>/` with three items:
  state   the TrainState (params, optimizer state, step, RNG), written shard by shard by every process;
  data    the data iterator's state ({"next_index": global batches consumed}), identical on all processes;
  config  the job config as JSON, to refuse a restart whose config is incompatible.
orbax writes into a temporary directory and renames it when every item is complete, so a run killed during an
async save leaves at most a temporary directory that `latest_step` ignores: what is restored is always complete.
Frozen models (teachers) are not part of TrainState and therefore never reach a checkpoint.
"""
import json
import os
import pathlib
from typing import Any, Iterable

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from distill_ret.errors import ConfigError

# Config fields that may change between a run and its resumption (prefix match on dotted paths); any other
# difference (model shape, data, optimizer, batch size, seeds, number of steps) stops the restart.
RESUMABLE_CHANGES = ("checkpoint.", "mesh.", "eval.", "train.log_every", "train.eval_every", "train.prefetch")


class CheckpointStore:
    """Saves and restores (state, data-iterator state, config) under `directory` with orbax."""

    def __init__(
        self,
        directory: str | pathlib.Path,
        *,
        keep: int,
        async_save: bool = True,
        best_metric: str | None = None,
        best_mode: str = "min",
    ):
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
            pathlib.Path(directory).absolute(),
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "data": ocp.JsonCheckpointHandler(),
                "config": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def reached_preemption(self, step: int) -> bool:
        """True on every process at the same step once any process received a preemption notice (multi-host)."""
        return self._manager.reached_preemption(step)

    def save(self, step: int, state: Any, data_state: dict, config: dict, metrics: dict | None = None) -> None:
        """Starts an (async) save of step `step`; returns once the arrays are copied off the devices."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                config=ocp.args.JsonSave(config),
            ),
            metrics=metrics,
            force=True,
        )

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


def read_run_checkpoint(run_workdir: str | os.PathLike, step: int | str = "best") -> tuple[int, dict, Any]:
    """(step, saved job config, params) of a training run's checkpoint, restored on the first local device.

    The checkpoints are opened read-only, so reading while the run still trains is safe. `step`: "best" (by the
    run's `checkpoint.best_metric`; the latest when the run had none), "latest", or a saved step number.
    Raises ConfigError naming the directory when it has no complete checkpoint or not the requested step.
    """
    directory = (pathlib.Path(run_workdir) / "checkpoints").absolute()
    if not directory.is_dir():
        raise ConfigError(f"{directory} does not exist (no checkpoints were written there)")
    handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()}
    with ocp.CheckpointManager(directory, item_handlers=handlers,
                               options=ocp.CheckpointManagerOptions(read_only=True)) as manager:
        steps = sorted(manager.all_steps())
        if not steps:
            raise ConfigError(f"{directory} holds no complete checkpoint")
        config = manager.restore(steps[-1], args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    saved = config.get("checkpoint", {})
    metric = saved.get("best_metric") or None
    options = ocp.CheckpointManagerOptions(
        read_only=True, best_fn=None if metric is None else (lambda metrics: metrics[metric]),
        best_mode=saved.get("best_mode", "max"),
    )
    with ocp.CheckpointManager(directory, item_handlers=handlers, options=options) as manager:
        if step == "best":
            step = (manager.best_step() if metric is not None else None) or steps[-1]
        elif step == "latest":
            step = steps[-1]
        elif step not in steps:
            raise ConfigError(f"step={step} is not in {directory} (saved steps: {steps})")
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                              dict(manager.item_metadata(step).state))
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                 config=ocp.args.JsonRestore()))
    return step, dict(restored.config), restored.state["params"]


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
