"""Mesh and sharding: rule resolution, batch assembly, and a sharded train step equal to the single-device one.

The equality tests run one full train step (forward, backward, clipping, AdamW update) on one device and on the
8 fake CPU devices, with data-parallel rules (mesh 8x1x1) and with fsdp/model rules (mesh 2x2x2, parameters
really split: checked), for T5 (with dropout: the masks must not depend on the layout) and the BERT bi-encoder.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from distill_ret.models.bert import BertConfig
from distill_ret.models.heads import BiEncoder
from distill_ret.training import partitioning, reverse_task, state as state_lib, trainer
from distill_ret.training import metrics as metrics_lib
from distill_ret.training.tasks import Task
import training_helpers

SINGLE = {"data": 1, "fsdp": 1, "model": 1}
SHARDED = [("data_parallel", {"data": 8, "fsdp": 1, "model": 1}), ("fsdp_model", {"data": 2, "fsdp": 2, "model": 2})]


def test_mesh_shape_fills_the_free_axis():
    assert partitioning.mesh_shape({"data": -1, "fsdp": 2, "model": 1}, 8) == (4, 2, 1)
    assert partitioning.mesh_shape({"data": 2, "fsdp": 2, "model": 2}, 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="at most one may be -1"):
        partitioning.mesh_shape({"data": -1, "fsdp": -1, "model": 1}, 8)
    with pytest.raises(ValueError, match="do not divide"):
        partitioning.mesh_shape({"data": -1, "fsdp": 3, "model": 1}, 8)
    with pytest.raises(ValueError, match="needs 4 devices"):
        partitioning.mesh_shape({"data": 2, "fsdp": 2, "model": 1}, 8)


def test_unknown_rules_are_an_error():
    with pytest.raises(ValueError, match="unknown logical-axis rules 'tp'"):
        partitioning.axis_rules("tp")


def test_logical_shardings_follow_the_rules_and_replicate_indivisible_dimensions():
    mesh = partitioning.create_mesh({"data": 2, "fsdp": 2, "model": 2})
    task = training_helpers.make_task(width=16, hidden=6)
    abstract = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
    shardings = partitioning.logical_shardings(abstract, mesh, partitioning.axis_rules("fsdp_model"))
    assert shardings["wi"]["kernel"].spec == PartitionSpec("fsdp", "model")  # [embed 16, mlp 6]
    assert shardings["wo"]["kernel"].spec == PartitionSpec("model", "fsdp")
    assert shardings["embed"]["embedding"].spec == PartitionSpec("model", "fsdp")  # [vocab, embed]
    odd = jax.eval_shape(training_helpers.make_task(width=16, hidden=3).init_params, jax.random.PRNGKey(0))
    odd_shardings = partitioning.logical_shardings(odd, mesh, partitioning.axis_rules("fsdp_model"))
    assert odd_shardings["wi"]["kernel"].spec == PartitionSpec("fsdp", None)  # mlp=3 cannot be split in 2
    data_parallel = partitioning.logical_shardings(abstract, mesh, partitioning.axis_rules("data_parallel"))
    assert all(s.spec == PartitionSpec(None, None) for s in jax.tree.leaves(data_parallel) if len(s.spec) == 2)


def test_host_batch_becomes_one_global_array_split_over_the_batch_axes():
    mesh = partitioning.create_mesh({"data": 2, "fsdp": 2, "model": 2})
    rows = partitioning.process_batch_rows(mesh, 16)
    assert rows == slice(0, 16)  # one process holds every row
    host = {"ids": np.arange(16 * 3).reshape(16, 3)}
    batch = partitioning.host_to_global(host, mesh, 16)
    np.testing.assert_array_equal(np.asarray(batch["ids"]), host["ids"])
    assert batch["ids"].sharding.spec == PartitionSpec(("data", "fsdp"))
    assert {shard.data.shape for shard in batch["ids"].addressable_shards} == {(4, 3)}
    with pytest.raises(ValueError, match="not divisible by data x fsdp = 4"):
        partitioning.process_batch_rows(mesh, 6)


def _optimizer():
    # eps 1e-3: Adam's first update is lr * g / (|g| + eps), whose sensitivity to float noise in a tiny gradient
    # is lr / eps; with the usual 1e-8 a 1e-9 difference in a near-zero gradient would move a parameter by 1e-3.
    config = state_lib.OptimizerConfig(learning_rate=1e-2, warmup_steps=0, decay_steps=10, weight_decay=0.01, eps=1e-3)
    return state_lib.make_optimizer(config), state_lib.learning_rate_schedule(config)


def one_step(task: Task, batch: dict, sizes: dict, rules: str, initial=None, devices=None, grad_accum_steps: int = 1):
    """(initial state, state after one train step, metrics) on a mesh, fetched to the host.

    The initial state is created on this mesh when `initial` is None, else `initial` (a host tree) is placed on it.
    """
    mesh = partitioning.create_mesh(sizes, devices)
    rule_set = partitioning.axis_rules(rules)
    tx, schedule = _optimizer()
    step, _, shardings, frozen = trainer.compile_train_step(
        task, tx, schedule, mesh, rule_set, grad_accum_steps=grad_accum_steps,
    )
    if initial is None:
        state = state_lib.create_state(task.init_params, tx, shardings, seed=0)
        initial = jax.device_get(state)
    else:
        state = jax.device_put(initial, shardings)
    batch_size = len(next(iter(batch.values())))
    with partitioning.sharding_context(mesh, rule_set):
        new_state, metrics = step(state, partitioning.host_to_global(batch, mesh, batch_size), frozen)
    param_shardings = jax.tree.map(lambda leaf: leaf.sharding, new_state.params)
    host_metrics = {name: metrics_lib.ratio(pair) for name, pair in jax.device_get(metrics).items()}  # sum / count
    return initial, jax.device_get(new_state), host_metrics, param_shardings


def assert_trees_close(actual, expected, atol):
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


def check_sharded_step_equals_single_device(task: Task, batch: dict, sharded_param: tuple[str, ...]):
    """One step with each SHARDED layout from the single-device initial state equals the single-device step."""
    initial, reference, reference_metrics, _ = one_step(task, batch, SINGLE, "data_parallel", devices=jax.devices()[:1])
    assert reference_metrics["grad_norm"] > 0
    for rules, sizes in SHARDED:
        _, after, metrics, shardings = one_step(task, batch, sizes, rules, initial=initial)
        for name in ("loss", "grad_norm"):
            np.testing.assert_allclose(metrics[name], reference_metrics[name], rtol=1e-5, err_msg=f"{rules} {name}")
        assert_trees_close(after.params, reference.params, atol=1e-5)
        assert_trees_close(after.opt_state, reference.opt_state, atol=1e-6)  # Adam mu = 0.1 * clipped gradient
        sharding = shardings
        for key in sharded_param:
            sharding = sharding[key]
        replicated = sharding.is_fully_replicated
        assert replicated == (rules == "data_parallel"), (rules, sharding)


def token_batch(size: int = 16) -> dict:
    source = training_helpers.NextTokenSource(size)
    return {key: np.stack([source[i][key] for i in range(size)]) for key in ("ids", "labels", "scale")}


def test_sharded_init_equals_single_device_init():
    task = training_helpers.make_task(width=16, hidden=32)
    tx, _ = _optimizer()
    states = []
    for sizes, devices in ((SINGLE, jax.devices()[:1]), (SHARDED[1][1], None)):
        mesh = partitioning.create_mesh(sizes, devices)
        _, shardings = state_lib.state_shardings(task.init_params, tx, mesh, partitioning.axis_rules("fsdp_model"))
        states.append(jax.device_get(state_lib.create_state(task.init_params, tx, shardings, seed=0)))
    assert_trees_close(states[1], states[0], atol=0)


def test_gradient_accumulation_equals_one_large_batch():
    task = training_helpers.make_task(width=16, hidden=32)
    batch = token_batch(16)
    initial, whole, whole_metrics, _ = one_step(task, batch, SHARDED[1][1], "fsdp_model")
    _, accumulated, accumulated_metrics, _ = one_step(
        task, batch, SHARDED[1][1], "fsdp_model", initial=initial, grad_accum_steps=4,
    )
    np.testing.assert_allclose(accumulated_metrics["loss"], whole_metrics["loss"], rtol=1e-6)
    np.testing.assert_allclose(accumulated_metrics["grad_norm"], whole_metrics["grad_norm"], rtol=1e-5)
    assert_trees_close(accumulated.params, whole.params, atol=1e-6)
    assert_trees_close(accumulated.opt_state, whole.opt_state, atol=1e-7)


def _t5_task():
    config = ml_collections.ConfigDict({
        "model": {"vocab_size": 32, "d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_decoder_layers": 1,
                  "num_heads": 4, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16,
                  "dropout_rate": 0.1, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False,
                  "dtype": "float32", "init_from": "", "init_step": "best"},
        "data": {"seed": 0, "vocab_size": 32, "min_length": 2, "max_length": 7, "num_train": 64, "num_eval": 16},
    })
    return reverse_task.build_task(config)


def test_sharded_t5_step_equals_single_device():
    task = _t5_task()
    batch = task.collate([task.train_source[i] for i in range(16)])
    check_sharded_step_equals_single_device(task, batch, ("decoder", "layers_0", "mlp", "wi_0", "kernel"))


def _bert_bi_encoder_task():
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = BiEncoder(config, pooling="cls", normalize=False, tied=True)

    def init_params(rng):
        ids = jnp.ones((1, 8), jnp.int32)
        return model.init(rng, ids, ids, ids, ids)["params"]

    def loss_fn(params, batch, rng):
        queries, documents = model.apply(
            {"params": params}, batch["query_ids"], batch["query_mask"], batch["doc_ids"], batch["doc_mask"],
            deterministic=False, rngs={"dropout": rng},
        )  # [batch, hidden] each
        scores = queries @ documents.T  # [batch, batch]: in-batch negatives
        loss = optax.softmax_cross_entropy_with_integer_labels(scores, jnp.arange(scores.shape[0])).mean()
        return loss, {}

    return Task(init_params=init_params, loss_fn=loss_fn, train_source=[], collate=list)


def test_sharded_bert_bi_encoder_step_equals_single_device():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 9, size=(2, 16))
    batch = {
        "query_ids": rng.integers(5, 64, (16, 8)).astype(np.int32),
        "query_mask": (np.arange(8)[None] < lengths[0][:, None]).astype(np.int32),
        "doc_ids": rng.integers(5, 64, (16, 8)).astype(np.int32),
        "doc_mask": (np.arange(8)[None] < lengths[1][:, None]).astype(np.int32),
    }
    check_sharded_step_equals_single_device(
        _bert_bi_encoder_task(), batch, ("encoder", "embeddings", "word_embeddings", "embedding"),
    )
