"""Checkpoints under failure: SIGKILL mid-run then restart reproduces the uninterrupted losses exactly; SIGTERM
saves and exits 0; an interrupted (temporary) save is never what gets restored.

The runs are `distill-ret train` subprocesses on the tiny T5 toy task with dropout (so the RNG must resume too);
the uninterrupted reference runs in this process with the same 8 fake devices.
"""
import logging
import os
import signal
import subprocess
import time

import jax.numpy as jnp
import pytest

import training_helpers
from distill_ret.errors import ConfigError
from distill_ret.training import checkpointing, trainer
from training_helpers import REPO_ROOT, TINY_T5, train_command, train_records


def wait_for_step(process: subprocess.Popen, workdir, step: int, timeout: float = 240.0) -> None:
    """Polls the metrics log until a train record for `step` (or later) exists; fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = train_records(workdir)
        if records and records[-1]["step"] >= step:
            return
        if process.poll() is not None:
            pytest.fail(f"training ended (rc={process.returncode}) before step {step}: {process.stderr.read()[-3000:]}")
        time.sleep(0.01)
    process.kill()
    pytest.fail(f"no step {step} within {timeout}s")


def start(workdir, overrides) -> subprocess.Popen:
    return subprocess.Popen(train_command(workdir, overrides), cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)


def test_sigkill_then_restart_reproduces_the_uninterrupted_losses_exactly(tmp_path):
    overrides = {**TINY_T5, "train.num_steps": 24, "checkpoint.every": 4}
    killed = start(tmp_path / "run", overrides)
    wait_for_step(killed, tmp_path / "run", 9)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    store = checkpointing.CheckpointStore(tmp_path / "run" / "checkpoints", keep=3)
    resumed_from = store.latest_step()
    store.close()
    assert resumed_from is not None and 4 <= resumed_from < 24
    assert train_records(tmp_path / "run")[-1]["step"] < 24  # killed mid-way

    restarted = subprocess.run(train_command(tmp_path / "run", overrides), cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert f"resumed from the checkpoint at step {resumed_from}" in restarted.stderr

    trainer.run_from_config(training_helpers.t5_config(overrides), str(tmp_path / "reference"))
    resumed_losses = [(record["step"], record["loss"]) for record in train_records(tmp_path / "run")]
    reference_losses = [(record["step"], record["loss"]) for record in train_records(tmp_path / "reference")]
    assert [step for step, _ in reference_losses] == list(range(1, 25))
    assert resumed_losses == reference_losses  # exact: same data order, same dropout masks, same arithmetic


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    overrides = {**TINY_T5, "train.num_steps": 100_000, "checkpoint.every": 100_000}
    process = start(tmp_path, overrides)
    wait_for_step(process, tmp_path, 3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    store = checkpointing.CheckpointStore(tmp_path / "checkpoints", keep=3)
    steps = store.all_steps()
    store.close()
    assert len(steps) == 1 and 3 <= steps[0] < 100_000
    assert train_records(tmp_path)[-1]["step"] == steps[0]  # the checkpoint is at the last step that ran
    assert "preemption notice: saved the checkpoint" in stderr
    orbax_info = [line for line in stderr.splitlines() if line.startswith("I") and "checkpoint" in line]
    assert not orbax_info, orbax_info[:3]  # orbax's INFO lines stay out of the progress bar


def test_an_unfinished_save_is_ignored(tmp_path):
    store = checkpointing.CheckpointStore(tmp_path, keep=3, async_save=False)
    state = {"w": jnp.arange(4.0)}
    store.save(2, state, {"next_index": 2}, {"task": "x"})
    store.close()
    # What a SIGKILL during the save of step 4 leaves behind: orbax's temporary directory, never renamed.
    os.makedirs(tmp_path / "4.orbax-checkpoint-tmp-1234" / "state")
    reopened = checkpointing.CheckpointStore(tmp_path, keep=3)
    assert reopened.latest_step() == 2
    restored, data_state = reopened.restore(2, {"w": jnp.zeros(4)})
    assert data_state == {"next_index": 2} and restored["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert reopened.saved_config(2) == {"task": "x"}
    reopened.close()


def test_a_save_without_the_best_metric_carries_no_metrics_and_reading_is_quiet(tmp_path, caplog):
    store = checkpointing.CheckpointStore(tmp_path / "checkpoints", keep=1, async_save=False,
                                          best_metric="dev/loss", best_mode="min")
    config = {"task": "x", "checkpoint": {"best_metric": "dev/loss", "best_mode": "min"}}
    record = {"config": {"model_type": "t5", "d_model": 4}, "head": "t5", "tokenizer_dir": "", "options": {}}
    for step, metrics in [(2, {"dev/loss": 1.0}), (4, {"dev/loss": 0.5}), (5, {"other/loss": 0.1}), (6, None)]:
        store.save(step, {"params": {"w": jnp.full(2, float(step))}}, {"next_index": step}, config, model=record,
                   metrics=metrics)
    assert store.all_steps() == [4, 6] and store.best_step() == 4  # 5 and 6 carry no dev/loss: never "best"
    store.close()
    with caplog.at_level(logging.INFO):
        best = checkpointing.read_run_checkpoint(tmp_path, "best")
        latest = checkpointing.read_run_checkpoint(tmp_path, "latest")
    assert (best.step, best.params["w"].tolist(), best.model) == (4, [4.0, 4.0], record)
    assert latest.step == 6 and latest.job_config == config
    orbax_records = [r for r in caplog.records if "/orbax/" in r.pathname]
    assert not orbax_records, [r.getMessage() for r in orbax_records][:3]  # no read-only or skipped-item warnings
    assert checkpointing.read_run_record(tmp_path, 4) == (4, config, record)
    with pytest.raises(ConfigError, match=r"step=5 is not in .*saved steps: \[4, 6\]"):
        checkpointing.read_run_checkpoint(tmp_path, 5)


def test_a_checkpoint_without_a_model_record_reads_as_none(tmp_path):
    store = checkpointing.CheckpointStore(tmp_path / "checkpoints", keep=1, async_save=False)
    store.save(1, {"params": {"w": jnp.zeros(1)}}, {"next_index": 1}, {"task": "x"})
    store.close()
    checkpoint = checkpointing.read_run_checkpoint(tmp_path)
    assert checkpoint.model is None and checkpoint.step == 1
