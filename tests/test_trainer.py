"""The training loop in-process on 8 fake devices: metrics as sums and counts, checkpoints and their metrics, NaN
guard, resume checks, config validation, TensorBoard, frozen inputs."""
import dataclasses
import json
import logging
import subprocess

import flax.linen as nn

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import training_helpers
from distill_ret.errors import ConfigError, UserError
from distill_ret.data import pipeline
from distill_ret.training import checkpointing, metrics, partitioning, state as state_lib, trainer
from training_helpers import REPO_ROOT, TINY_T5, train_command


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
    config = training_helpers.make_config(num_steps=12, train={"learning_rate": 3e-2}, evals={"dev": {"every": 6}},
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
    poisoned = training_helpers.data_order(config, 4)[3][0]
    task = training_helpers.make_task(poisoned=poisoned)
    diverged = r"non-finite .*'loss': inf.* at step 4; stopping without saving"
    with pytest.raises(trainer.TrainingDiverged, match=diverged) as error:
        trainer.train(task, config, tmp_path)
    assert isinstance(error.value, UserError) and "\n" not in str(error.value)  # main prints it as one line
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
    current = {"model": {"width": 32, "remat": True}, "train": {"lr": 0.1, "log_every": 5, "seed": 1},
               "mesh": {"data": 4}}
    assert checkpointing.config_differences(saved, current) == [
        "model.layers: 2 -> <absent>", "model.width: 16 -> 32", "train.seed: <absent> -> 1",
    ]


def test_best_checkpoint_is_kept_beside_the_latest(tmp_path):
    config = training_helpers.make_config(
        num_steps=8, train={"learning_rate": 0.3, "warmup_steps": 0}, evals={"dev": {"every": 2}},
        checkpoint={"keep": 1, "best_metric": "dev/loss", "best_mode": "min", "async_save": False},
    )
    trainer.train(training_helpers.make_task(), config, tmp_path)
    evaluations = metrics.read_log(tmp_path / "metrics.jsonl", "eval")
    best = min(evaluations, key=lambda record: record["dev/loss"])["step"]
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


# --- metrics as sums and counts -------------------------------------------------------------------------------------

def test_metric_sums_and_counts_hand_computed():
    assert [float(x) for x in metrics.as_sum_count(jnp.float32(0.5))] == [0.5, 1.0]
    assert [float(x) for x in metrics.as_sum_count((jnp.float32(6.0), jnp.float32(4.0)))] == [6.0, 4.0]
    totals = metrics.MetricTotals()
    totals.add({"nll": (6.0, 4.0), "lr": (0.1, 1.0), "empty": (0.0, 0.0)})
    totals.add({"nll": (1.0, 1.0), "lr": (0.3, 1.0), "empty": (0.0, 0.0)})
    assert totals.means() == pytest.approx({"nll": 7.0 / 5.0, "lr": 0.2})  # not (6/4 + 1/1) / 2 = 1.25
    assert float(metrics.safe_ratio(jnp.float32(0.0), jnp.float32(0.0))) == 0.0


def _initial_params(task, config):
    """The parameters the trainer starts from (create_state calls init_params with PRNGKey(train.seed))."""
    return nn.unbox(jax.jit(task.init_params)(jax.random.PRNGKey(config.train.seed)))


def _batch(source, indices):
    return pipeline.pad_and_stack([source[index] for index in indices], {})


def _token_mean(source, indices, field):
    """Token-weighted mean of `field` over the masked tokens of the examples, by hand with numpy."""
    examples = [source[index] for index in indices]
    return (sum(float(e[field][e["mask"]].sum()) for e in examples), sum(int(e["mask"].sum()) for e in examples))


def test_log_windows_and_evaluations_are_token_weighted_means(tmp_path):
    """Two steps with different token counts in one log window: every value is sum of sums / sum of counts."""
    task = training_helpers.make_task(token_loss=True)
    config = training_helpers.make_config(
        num_steps=2, train={"learning_rate": 0.0, "warmup_steps": 0, "decay": "constant", "log_every": 2},
        evals={"dev": {"every": 2}},
    )
    trainer.train(task, config, tmp_path)
    [record] = metrics.read_log(tmp_path / "metrics.jsonl")
    assert record["step"] == 2
    (sum_1, count_1), (sum_2, count_2) = [_token_mean(task.train_source, indices, "labels")
                                          for indices in training_helpers.data_order(config, 2)]
    assert count_1 != count_2  # the two batches carry different numbers of tokens
    assert record["label_mean"] == pytest.approx((sum_1 + sum_2) / (count_1 + count_2), rel=1e-6)
    assert abs(record["label_mean"] - (sum_1 / count_1 + sum_2 / count_2) / 2) > 1e-3  # not the mean of means

    params = _initial_params(task, config)  # learning rate 0: the loss of both steps is that of the initial params
    losses = [task.loss_fn(params, _batch(task.train_source, indices), None)[0]
              for indices in training_helpers.data_order(config, 2)]
    expected_loss = sum(float(total) for total, _ in losses) / sum(float(count) for _, count in losses)
    assert record["loss"] == pytest.approx(expected_loss, rel=2e-6)

    eval_source = task.eval_inputs["batches"].source  # two fixed batches of 16: examples 0-15 and 16-31
    (sum_1, count_1), (sum_2, count_2) = [_token_mean(eval_source, indices, "labels")
                                          for indices in (range(16), range(16, 32))]
    assert count_1 != count_2
    [evaluation] = metrics.read_log(tmp_path / "metrics.jsonl", "eval")
    assert evaluation["dev/label_mean"] == pytest.approx((sum_1 + sum_2) / (count_1 + count_2), rel=1e-6)
    assert abs(evaluation["dev/label_mean"] - (sum_1 / count_1 + sum_2 / count_2) / 2) > 1e-3


def test_accumulating_a_token_loss_gives_the_big_batch_gradient():
    task = training_helpers.make_task(token_loss=True)
    params = nn.unbox(jax.jit(task.init_params)(jax.random.PRNGKey(0)))
    batch = _batch(task.train_source, range(16))
    micro_counts = [int(batch["mask"][j::4].sum()) for j in range(4)]  # micro-batch j = rows j, j + 4, ...
    assert len(set(micro_counts)) > 1
    tx = optax.sgd(1.0)  # new params = params - gradient
    state = state_lib.TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params), rng=jax.random.PRNGKey(1))
    schedule = optax.constant_schedule(1.0)
    new = {}
    for accumulation in (1, 4):
        step = jax.jit(trainer.make_train_step(task.loss_fn, tx, schedule, grad_accum_steps=accumulation))
        new[accumulation], step_metrics = step(state, batch, None)
        assert [float(x) for x in step_metrics["loss"]][1] == sum(micro_counts)  # the loss counts every token once
    gradient = jax.tree.map(lambda before, after: before - after, params, new[1].params)
    for whole, accumulated in zip(jax.tree.leaves(new[1].params), jax.tree.leaves(new[4].params)):
        np.testing.assert_allclose(accumulated, whole, rtol=1e-5, atol=1e-7)

    def mean_of_micro_means(p):  # what averaging per-micro-batch means would differentiate
        means = [metrics.safe_ratio(*task.loss_fn(p, jax.tree.map(lambda x: x[j::4], batch), None)[0])
                 for j in range(4)]
        return sum(means) / 4

    naive = jax.grad(mean_of_micro_means)(params)
    difference = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(naive), jax.tree.leaves(gradient)))
    assert difference > 1e-4  # so the equality above is not a coincidence of equal weights


# --- checkpoints carry only their own step's metrics ----------------------------------------------------------------

def test_a_preemption_save_at_a_non_eval_step_does_not_change_the_best_checkpoint(tmp_path, monkeypatch):
    config = training_helpers.make_config(
        num_steps=6, train={"learning_rate": 0.3, "warmup_steps": 0}, evals={"dev": {"every": 2}},
        checkpoint={"every": 2, "keep": 1, "best_metric": "dev/loss", "best_mode": "max", "async_save": False},
    )
    monkeypatch.setattr(trainer._PreemptionNotice, "reached", lambda self, step: step == 3)
    preempted = trainer.train(training_helpers.make_task(), config, tmp_path)
    assert int(preempted.step) == 3
    store = checkpointing.CheckpointStore(tmp_path / "checkpoints", keep=1)
    assert store.all_steps() == [2, 3] and store.latest_step() == 3  # the preemption save is kept for resume
    store.close()
    best = checkpointing.read_run_checkpoint(tmp_path, "best")
    assert best.step == 2  # not step 3, which carries no evaluation of its own
    latest = checkpointing.read_run_checkpoint(tmp_path, "latest")
    assert latest.step == 3 and any(
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(best.params), jax.tree.leaves(latest.params)))

    monkeypatch.setattr(trainer._PreemptionNotice, "reached", lambda self, step: False)
    trainer.train(training_helpers.make_task(), config, tmp_path)  # resumes at 3, evaluates at 4 and 6
    evaluations = {record["step"]: record["dev/loss"]
                   for record in metrics.read_log(tmp_path / "metrics.jsonl", "eval")}
    assert sorted(evaluations) == [2, 4, 6]
    assert checkpointing.read_run_checkpoint(tmp_path, "best").step == max(evaluations, key=evaluations.get)
    store = checkpointing.CheckpointStore(tmp_path / "checkpoints", keep=1)
    assert 3 not in store.all_steps() and store.latest_step() == 6
    store.close()


# --- config values are checked before anything is written ---------------------------------------------------------

@pytest.mark.parametrize("sections, field", [
    ({"checkpoint": {"every": 0}}, "config.checkpoint.every=0"),
    ({"checkpoint": {"keep": 0}}, "config.checkpoint.keep=0"),
    ({"checkpoint": {"best_mode": "mean"}}, "config.checkpoint.best_mode='mean'"),
    ({"train": {"log_every": 0}}, "config.train.log_every=0"),
    ({"train": {"num_steps": 0}}, "config.train.num_steps=0"),
    ({"train": {"num_steps": -3}}, "config.train.num_steps=-3"),
    ({"train": {"batch_size": 12}}, "config.train.batch_size=12 / grad_accum_steps=1 = 12 rows"),
    ({"train": {"grad_accum_steps": 3}}, "config.train.grad_accum_steps=3 does not divide config.train.batch_size=16"),
    ({"train": {"learning_rate": -1.0}}, "config.train.learning_rate=-1.0"),
    ({"train": {"learning_rate": float("nan")}}, "config.train.learning_rate=nan: must be a finite number >= 0.0"),
    ({"train": {"adam_b2": 1.0}}, "config.train.adam_b2=1.0: must be in [0, 1)"),
    ({"train": {"adam_eps": 0.0}}, "config.train.adam_eps=0.0: must be a finite number > 0.0"),
    ({"train": {"adam_eps": float("inf")}}, "config.train.adam_eps=inf: must be a finite number > 0.0"),
    ({"train": {"decay": "exponential"}}, "config.train.decay='exponential'"),
    ({"train": {"lr_multipliers": "embed"}}, "config.train.lr_multipliers='embed'"),
    ({"mesh": {"fsdp": 3}}, "config.mesh:"),
    ({"evals": {"dev": {"every": -1}}}, "config.evals.dev.every=-1"),
    ({"evals": {"dev": {"kind": "bleu"}}}, "config.evals.dev.kind='bleu'"),
    ({"evals": {"dev": {"every": 2, "num_batches": 5}}}, "config.evals.dev.batch_size=16 x num_batches=5"),
    ({"evals": {"dev": {"every": 2, "batch_size": 12}}}, "config.evals.dev.batch_size=12 is not divisible"),
    ({"checkpoint": {"best_metric": "dev/loss"}}, "config.checkpoint.best_metric='dev/loss'"),  # dev never runs
    ({"checkpoint": {"best_metric": "test/loss"}, "evals": {"dev": {"every": 2}}}, "config.checkpoint.best_metric="),
    ({"checkpoint": {"best_metric": "dev/bleu"}, "evals": {"dev": {"every": 2}}},
     "one of ['dev/accuracy', 'dev/loss']"),
    ({"checkpoint": {"every": 3, "best_metric": "dev/loss"}, "evals": {"dev": {"every": 2}}},
     "config.checkpoint.every=3 is not a multiple of config.evals.dev.every=2"),
])
def test_nonsense_values_are_refused_before_anything_is_written(tmp_path, sections, field):
    config = training_helpers.make_config(**sections)
    with pytest.raises(ConfigError) as error:
        trainer.train(training_helpers.make_task(), config, tmp_path / "run")
    assert field in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_every_off_the_best_metrics_evaluations_is_refused_from_the_config_alone():
    config = training_helpers.make_config(checkpoint={"every": 3, "best_metric": "dev/loss"},
                                          evals={"dev": {"every": 2}})
    with pytest.raises(ConfigError, match="config.checkpoint.every=3 is not a multiple of config.evals.dev.every=2"):
        trainer.check_config(config)  # what run_from_config checks before the task (and its teacher) is built
    config.checkpoint.every = 4
    trainer.check_config(config)
    config.evals.dev.every = 0  # dev never runs: check_best_metric refuses the metric once the evaluators exist
    trainer.check_config(config)


def test_a_checkpoint_every_that_is_not_an_eval_multiple_is_fine_without_a_best_metric(tmp_path):
    config = training_helpers.make_config(num_steps=3, evals={"dev": {"every": 2}}, checkpoint={"every": 3})
    trainer.train(training_helpers.make_task(), config, tmp_path)
    assert [record["step"] for record in metrics.read_log(tmp_path / "metrics.jsonl", "eval")] == [2, 3]


def test_a_workdir_that_is_a_file_or_not_writable_is_refused_in_one_line_and_left_alone(tmp_path, monkeypatch):
    workdir = tmp_path / "notes.txt"
    workdir.write_text("mine")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        trainer.train(training_helpers.make_task(), training_helpers.make_config(), workdir)
    with pytest.raises(ConfigError, match="is a file"):
        trainer.train(training_helpers.make_task(), training_helpers.make_config(), workdir / "run")
    assert workdir.read_text() == "mine"
    process = subprocess.run(train_command(workdir, TINY_T5), cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=300)
    assert process.returncode == 1
    assert process.stderr.strip().splitlines()[-1].startswith("distill-ret train: error: --workdir=")
    assert "Traceback" not in process.stderr and workdir.read_text() == "mine"
    # as for a read-only directory (tests run as root)
    monkeypatch.setattr(trainer.os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match=f"--workdir={tmp_path / 'new'}: {tmp_path} is not writable"):
        trainer.train(training_helpers.make_task(), training_helpers.make_config(), tmp_path / "new")
    assert not (tmp_path / "new").exists()


# --- TensorBoard ----------------------------------------------------------------------------------------------------

def test_tensorboard_tags_are_legal_and_a_resume_does_not_repeat_steps(tmp_path, caplog):
    assert metrics.tensorboard_tag("eval/dev/nDCG@10") == "eval/dev/nDCG_at_10"
    assert metrics.tensorboard_tag("eval/dev/P(rel=2)@5") == "eval/dev/P_rel_2__at_5"
    config = training_helpers.make_config(num_steps=6, checkpoint={"every": 2, "async_save": False})
    poisoned = training_helpers.data_order(config, 4)[3][0]  # step 4 diverges after steps 1-3 were logged
    with pytest.raises(trainer.TrainingDiverged):
        trainer.train(training_helpers.make_task(poisoned=poisoned), config, tmp_path)
    with caplog.at_level(logging.INFO):
        trainer.train(training_helpers.make_task(), config, tmp_path)  # resumes at 2: steps 3 and 4 again
    assert "is illegal" not in caplog.text
    scalars = [(step, value) for step, tag, value in training_helpers.tensorboard_scalars(tmp_path / "tensorboard")
               if tag == "train/loss"]
    assert [step for step, _ in scalars] == [1, 2, 3, 4, 5, 6]
    logged = {record["step"]: record["loss"] for record in metrics.read_log(tmp_path / "metrics.jsonl")}
    assert [value for _, value in scalars] == pytest.approx([logged[step] for step in range(1, 7)], rel=1e-6)

    (tmp_path / "tags").mkdir()
    writer = metrics.MetricWriter(tmp_path / "tags", start_step=0, num_steps=1, enabled=True)
    with caplog.at_level(logging.INFO):
        writer.write(1, "eval", {"dev/nDCG@10": 0.5})
    writer.close()
    assert "is illegal" not in caplog.text
    assert training_helpers.tensorboard_scalars(tmp_path / "tags" / "tensorboard") == [(1, "eval/dev/nDCG_at_10", 0.5)]


def test_a_restart_within_the_same_second_keeps_the_earlier_event_file(tmp_path, monkeypatch):
    # tensorboardX names event files by the second they were opened: without a unique suffix, the resumed run's
    # file replaced the interrupted run's, losing its steps 1-2.
    import tensorboardX.event_file_writer

    monkeypatch.setattr(tensorboardX.event_file_writer.time, "time", lambda: 1_700_000_000.0)
    first = metrics.MetricWriter(tmp_path, start_step=0, num_steps=4, enabled=True)
    for step in range(1, 5):
        first.write(step, "train", {"loss": float(step)})
    first.close()
    resumed = metrics.MetricWriter(tmp_path, start_step=2, num_steps=4, enabled=True)
    for step in (3, 4):
        resumed.write(step, "train", {"loss": 10.0 * step})
    resumed.close()
    scalars = training_helpers.tensorboard_scalars(tmp_path / "tensorboard")
    assert [(step, value) for step, tag, value in scalars if tag == "train/loss"] == [
        (1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
