"""Staged runs: `model.init_from` names an earlier run's workdir (best, latest or a step) or a Hugging Face
directory, through one function every task calls (`training.state.init_from_source`); the run's model record
travels in its checkpoints; a different model is refused naming the fields."""

import flax.linen as nn
import jax
import numpy as np
import pytest

import training_helpers
from configs import cross_encoder as cross_encoder_config
from distill_ret import hf
from distill_ret.errors import ConfigError
from distill_ret.models.t5 import T5Config
from distill_ret.teachers import cross_encoder_task
from distill_ret.training import checkpointing, reverse_task, state, trainer
from distill_ret.training.tasks import ModelRecord
from tests.teacher_helpers import write_beir, write_tokenizer

TINY = {**training_helpers.TINY_T5, "model.dropout_rate": 0.0, "train.learning_rate": 1e-2,
        "checkpoint.async_save": False}


def unboxed_init(task, seed=123):
    return jax.tree.map(np.asarray, nn.unbox(jax.jit(task.init_params)(jax.random.PRNGKey(seed))))


def assert_same_params(left, right):
    assert jax.tree.structure(left) == jax.tree.structure(right)
    for a, b in zip(jax.tree.leaves(left), jax.tree.leaves(right)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def stage_1(tmp_path_factory):
    """A finished 4-step t5_reverse run with checkpoints at steps 2 and 4."""
    workdir = tmp_path_factory.mktemp("stage_1")
    config = training_helpers.t5_config({**TINY, "train.num_steps": 4, "checkpoint.every": 2})
    trainer.train(reverse_task.build_task(config), config, workdir)
    return workdir, config


def test_the_checkpoint_carries_the_model_record(stage_1):
    workdir, config = stage_1
    checkpoint = checkpointing.read_run_checkpoint(workdir, "latest")
    record = ModelRecord.from_dict(checkpoint.model)
    assert checkpoint.step == 4 and record.head == "t5" and record.tokenizer_dir == ""
    assert record.config["d_model"] == config.model.d_model and record.config["model_type"] == "t5"
    assert checkpoint.model == reverse_task.build_task(config).model.to_dict()


def test_stage_2_starts_exactly_where_stage_1_ended(stage_1, tmp_path):
    workdir, _ = stage_1
    overrides = {**TINY, "model.init_from": str(workdir), "model.init_step": "latest", "train.num_steps": 2,
                 "train.learning_rate": 0.0, "train.warmup_steps": 0}
    config = training_helpers.t5_config(overrides)
    task = reverse_task.build_task(config)
    stage_1_params = checkpointing.read_run_checkpoint(workdir, "latest").params
    assert_same_params(unboxed_init(task), stage_1_params)  # any rng: every parameter comes from stage 1
    final = trainer.train(task, config, tmp_path)  # learning rate 0: the trained params stay stage 1's
    assert_same_params(jax.tree.map(np.asarray, final.params), stage_1_params)

    by_step = training_helpers.t5_config({**overrides, "model.init_step": "2"})
    assert_same_params(unboxed_init(reverse_task.build_task(by_step)),
                       checkpointing.read_run_checkpoint(workdir, 2).params)


def test_a_different_model_or_a_missing_step_is_refused_naming_the_fields(stage_1):
    workdir, _ = stage_1
    wider = training_helpers.t5_config({**TINY, "model.init_from": str(workdir), "model.d_ff": 64,
                                        "model.num_heads": 2})
    with pytest.raises(ConfigError) as error:
        reverse_task.build_task(wider)
    message = str(error.value)
    assert f"config.model.init_from={str(workdir)!r}" in message and "holds a different model" in message
    assert "d_ff: 32 -> 64" in message and "num_heads: 4 -> 2" in message and "\n" not in message
    missing = training_helpers.t5_config({**TINY, "model.init_from": str(workdir), "model.init_step": "3"})
    with pytest.raises(ConfigError, match=r"step=3 is not in .*saved steps: \[2, 4\]"):
        reverse_task.build_task(missing)
    for bad in ("first", "0"):
        with pytest.raises(ConfigError, match="config.model.init_step="):
            reverse_task.build_task(training_helpers.t5_config({**TINY, "model.init_from": str(workdir),
                                                                "model.init_step": bad}))
    with pytest.raises(ConfigError, match="neither a training run's workdir"):
        reverse_task.build_task(training_helpers.t5_config({**TINY, "model.init_from": str(workdir / "checkpoints")}))


def test_a_hugging_face_directory_starts_the_same_weights(stage_1, tmp_path):
    workdir, config = stage_1
    params = jax.tree.map(np.asarray, checkpointing.read_run_checkpoint(workdir, "latest").params)
    model_config = T5Config(**{name: value for name, value in config.model.items()
                               if name not in reverse_task.INIT_FIELDS})
    hf.export_to_hf(params, model_config, tmp_path / "hf")
    from_hf = training_helpers.t5_config({**TINY, "model.init_from": str(tmp_path / "hf")})
    assert_same_params(unboxed_init(reverse_task.build_task(from_hf)), params)
    other = training_helpers.t5_config({**TINY, "model.init_from": str(tmp_path / "hf"),
                                        "model.relative_attention_max_distance": 16})
    with pytest.raises(ConfigError, match="relative_attention_max_distance: 32 -> 16"):
        reverse_task.build_task(other)


def test_weights_that_do_not_fit_are_refused_with_their_path():
    boxed = {"dense": {"kernel": np.ones((2, 3), np.float32)}, "head": {"bias": np.ones(3, np.float32)}}
    placed = state.place_weights(boxed, {"dense": {"kernel": np.zeros((2, 3))}}, partial=True, where="here")
    assert placed["dense"]["kernel"].tolist() == [[0.0] * 3] * 2 and placed["head"]["bias"].tolist() == [1.0] * 3
    for weights, partial, message in [
        ({"dense": {"kernel": np.zeros((3, 2))}}, True, r"here: weight dense/kernel has shape \(3, 2\)"),
        ({"dense": {"kernel": np.zeros((2, 3))}}, False, r"missing \['head/bias'\]"),
        ({"dense": {"kernel": np.zeros((2, 3)), "bias": np.zeros(3)}}, True, r"unexpected \['dense/bias'\]"),
    ]:
        with pytest.raises(ConfigError, match=message):
            state.place_weights(boxed, weights, partial=partial, where="here")


def test_a_cross_encoder_stage_takes_model_and_tokenizer_from_the_earlier_run(tmp_path):
    write_tokenizer(tmp_path / "tokenizer")
    config = cross_encoder_config.get_config("tiny")
    config.data.beir_dir, config.model.tokenizer_dir = str(write_beir(tmp_path / "beir")), str(tmp_path / "tokenizer")
    config.data.max_length, config.model.max_position_embeddings = 32, 32
    config.train.num_steps, config.evals.dev.every, config.checkpoint.async_save = 2, 0, False
    trainer.train(cross_encoder_task.build_task(config), config, tmp_path / "stage_1")
    stage_1 = checkpointing.read_run_checkpoint(tmp_path / "stage_1", "latest")
    assert stage_1.model["tokenizer_dir"] == str((tmp_path / "tokenizer").absolute())

    config.model.init_from, config.model.tokenizer_dir = str(tmp_path / "stage_1"), ""  # the record names both
    config.model.hidden_size = 64  # a random-init field: ignored, the architecture is the earlier run's
    task = cross_encoder_task.build_task(config)
    assert task.model.to_dict() == stage_1.model
    assert_same_params(unboxed_init(task), stage_1.params)
