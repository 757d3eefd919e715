"""Two processes on localhost (jax.distributed with a loopback coordinator, 4 CPU devices each) train as one job.

They run `distill-ret train --distributed` on a 2x2x2 (data, fsdp, model) mesh spanning both processes: each
loads only its half of every global batch, parameters are split across processes, and both write their shards
of each checkpoint. The result must agree with the same job run by one process on 8 devices: the same per-step
losses, and a final checkpoint (restored here) with the same parameters.
"""
import os
import socket
import subprocess

import jax
import numpy as np

import training_helpers
from distill_ret import distributed
from distill_ret.training import checkpointing, partitioning, reverse_task, state as state_lib, trainer
from training_helpers import REPO_ROOT, TINY_T5, train_command, train_records

MESH = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.model": 2, "mesh.rules": "fsdp_model"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path):
    overrides = {**TINY_T5, **MESH, "train.num_steps": 4, "checkpoint.every": 2}
    port = free_port()
    processes = []
    for process_id in range(2):
        env = {
            **os.environ,
            "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
            distributed.COORDINATOR_VARIABLE: f"127.0.0.1:{port}",
            distributed.NUM_PROCESSES_VARIABLE: "2",
            distributed.PROCESS_ID_VARIABLE: str(process_id),
        }
        processes.append(subprocess.Popen(
            train_command(tmp_path / "two", overrides, "--distributed"), cwd=REPO_ROOT, env=env,
            stderr=subprocess.PIPE, text=True,
        ))
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]

    config = training_helpers.t5_config(overrides)
    single = trainer.train(reverse_task.build_task(config), config, tmp_path / "one")

    two_losses = [record["loss"] for record in train_records(tmp_path / "two")]
    one_losses = [record["loss"] for record in train_records(tmp_path / "one")]
    assert len(two_losses) == 4
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-5)

    task = reverse_task.build_task(config)
    mesh = partitioning.create_mesh({"data": 2, "fsdp": 2, "model": 2})
    tx = state_lib.make_optimizer(state_lib.optimizer_config(config.train))
    abstract, _ = state_lib.state_shardings(task.init_params, tx, mesh, partitioning.axis_rules("fsdp_model"))
    store = checkpointing.CheckpointStore(tmp_path / "two" / "checkpoints", keep=3)
    assert store.all_steps() == [2, 4]
    restored, data_state = store.restore(4, abstract)
    store.close()
    assert data_state == {"next_index": 4} and int(restored.step) == 4
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(restored.params), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=jax.tree_util.keystr(path))
