"""The training loop in-process on 8 fake devices: metrics, checkpoints, NaN guard, resume checks, frozen inputs."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import training_helpers
from distill_ret.data import pipeline
from distill_ret.errors import ConfigError
from distill_ret.training import checkpointing, metrics, partitioning, state as state_lib, trainer


def restore_latest(workdir, task, config):
    """(step, restored TrainState) of the latest checkpoint, laid out on the config's mesh."""
    mesh = partitioning.create_mesh({name: config.mesh[name] for name in partitioning.MESH_AXES})
    tx = state_lib.make_optimizer(state_lib.optimizer_config(config.train))
    abstract, _ = state_lib.state_shardings(task.init_params, tx, mesh, partitioning.axis_rules(config.mesh.rules))
    store = checkpointing.CheckpointStore(workdir / "checkpoints", keep=10)
    step = store.latest_step()
    state, _ = store.restore(step, abstract)
    store.close()
    return step, state


def test_training_logs_evaluates_checkpoints_and_learns(tmp_path):
    task = training_helpers.make_task()
    config = training_helpers.make_config(num_steps=12, train={"eval_every": 6, "learning_rate": 3e-2},
                                          mesh={"fsdp": 2, "model": 2})
    final = trainer.train(task, config, tmp_path)
    assert int(final.step) == 12
    train_records = metrics.read_log(tmp_path / "metrics.jsonl")
    assert [record["step"] for record in train_records] == list(range(1, 13))
    assert train_records[-1]["loss"] < 0.8 * train_records[0]["loss"]
    assert train_records[0]["learning_rate"] == 0.0 and train_records[2]["learning_rate"] == pytest.approx(3e-2)
    assert [record["step"] for record in metrics.read_log(tmp_path / "metrics.jsonl", "eval")] == [6, 12]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    store = checkpointing.CheckpointStore(tmp_path / "checkpoints", keep=3)
    assert store.all_steps() == [8, 10, 12]  # every 2 steps, keep 3
    store.close()
    step, restored = restore_latest(tmp_path, task, config)
    assert step == 12
    for restored_leaf, final_leaf in zip(jax.tree.leaves(restored), jax.tree.leaves(final)):
        np.testing.assert_array_equal(np.asarray(restored_leaf), np.asarray(final_leaf))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = training_helpers.make_config(num_steps=8, checkpoint={"every": 1})
    # The trainer's data order, as record indices: poison the first example of step 4's batch.
    order = pipeline.batch_dataset(range(256), np.array, global_batch_size=16, rows=slice(0, 16),
                                   seed=config.train.seed)
    poisoned = int(order[3][0])
    task = training_helpers.make_task(poisoned=poisoned)
    with pytest.raises(trainer.TrainingDiverged, match=r"non-finite .*'loss': inf.* at step 4; stopping without saving"):
        trainer.train(task, config, tmp_path)
    step, state = restore_latest(tmp_path, task, config)
    assert step == 3 and int(state.step) == 3
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(state.params))
    assert max(record["step"] for record in metrics.read_log(tmp_path / "metrics.jsonl")) == 3


def test_restart_resumes_and_an_incompatible_config_is_refused(tmp_path):
    config = training_helpers.make_config(num_steps=4)
    trainer.train(training_helpers.make_task(), config, tmp_path)

    relaxed = training_helpers.make_config(num_steps=4, train={"log_every": 2}, checkpoint={"keep": 5})
    resumed = trainer.train(training_helpers.make_task(), relaxed, tmp_path)  # nothing left to do
    assert int(resumed.step) == 4

    wider = training_helpers.make_config(num_steps=6, model={"width": 32})
    with pytest.raises(ConfigError) as error:
        trainer.train(training_helpers.make_task(width=32), wider, tmp_path)
    message = str(error.value)
    assert "checkpoint at step 4" in message
    assert "model.width: 16 -> 32" in message and "train.num_steps: 4 -> 6" in message
    assert "log_every" not in message


def test_config_differences_lists_changed_added_and_removed_fields():
    saved = {"model": {"width": 16, "layers": 2}, "train": {"lr": 0.1, "log_every": 1}, "mesh": {"data": 8}}
    current = {"model": {"width": 32}, "train": {"lr": 0.1, "log_every": 5, "seed": 1}, "mesh": {"data": 4}}
    assert checkpointing.config_differences(saved, current) == [
        "model.layers: 2 -> <absent>", "model.width: 16 -> 32", "train.seed: <absent> -> 1",
    ]


def test_best_checkpoint_is_kept_beside_the_latest(tmp_path):
    config = training_helpers.make_config(
        num_steps=8, train={"eval_every": 2, "learning_rate": 0.3, "warmup_steps": 0},
        checkpoint={"keep": 1, "best_metric": "loss", "best_mode": "min", "async_save": False},
    )
    trainer.train(training_helpers.make_task(), config, tmp_path)
    evaluations = metrics.read_log(tmp_path / "metrics.jsonl", "eval")
    best = min(evaluations, key=lambda record: record["loss"])["step"]
    store = checkpointing.CheckpointStore(tmp_path / "checkpoints", keep=1)
    assert set(store.all_steps()) == {best, 8}
    store.close()


def test_frozen_inputs_reach_the_loss_but_never_the_checkpoint(tmp_path):
    base = training_helpers.make_task()

    def loss_with_teacher(params, batch, rng, frozen):
        loss, task_metrics = base.loss_fn(params, batch, rng)
        # A distillation-like term: pull the student's embedding towards the frozen teacher's.
        distance = jnp.mean(jnp.square(params["embed"]["embedding"] - frozen["teacher_embedding"]))
        return loss + distance, {**task_metrics, "distance": distance}

    teacher = {"teacher_embedding": jnp.full((training_helpers.VOCAB, 16), 0.5)}
    task = dataclasses.replace(base, loss_fn=loss_with_teacher, frozen=teacher)
    config = training_helpers.make_config(num_steps=2)
    trainer.train(task, config, tmp_path)
    distances = [record["distance"] for record in metrics.read_log(tmp_path / "metrics.jsonl")]
    assert distances[0] > 0.2  # the initial embedding is ~N(0, 0.02), the teacher's 0.5
    saved = json.loads((tmp_path / "checkpoints" / "2" / "state" / "_METADATA").read_text())
    saved_paths = json.dumps(saved)
    assert "teacher_embedding" not in saved_paths and "embedding" in saved_paths


def test_lr_multipliers_scale_the_named_subtrees_updates():
    # First Adam step with gradient 1 everywhere: update = -lr * 1 / (1 + eps) (no weight decay, no clipping).
    config = state_lib.OptimizerConfig(learning_rate=0.1, warmup_steps=0, decay_steps=10, decay="constant",
                                       grad_clip_norm=0.0, lr_multipliers=state_lib.parse_lr_multipliers("head=10"))
    params = {"body": {"w": jnp.zeros((2, 2))}, "head": {"w": jnp.zeros((2, 1)), "b": jnp.zeros((1,))}}
    tx = state_lib.make_optimizer(config)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["body"]["w"], -0.1, rtol=1e-5)  # float32 bias correction: ~7e-6 off
    np.testing.assert_allclose(updates["head"]["w"], 10 * updates["body"]["w"][:, :1], rtol=1e-6)
    np.testing.assert_allclose(updates["head"]["b"], 10 * updates["body"]["w"][0, :1], rtol=1e-6)
    assert state_lib.parse_lr_multipliers(" pooler=10, classifier=2.5 ") == (("pooler", 10.0), ("classifier", 2.5))
    assert state_lib.parse_lr_multipliers("") == ()
    for bad in ("pooler", "pooler=x", "pooler=0", "=3"):
        with pytest.raises(ValueError, match="train.lr_multipliers"):
            state_lib.parse_lr_multipliers(bad)
    wrong = state_lib.make_optimizer(dataclasses.replace(config, lr_multipliers=(("heads", 10.0),)))
    with pytest.raises(ValueError, match=r"names \['heads'\]"):
        wrong.init(params)
