"""Cross-encoder training task: loss, hard negatives, groups, a training run that lowers the loss with dev
evaluation and checkpoint reload, and a distillation run whose checkpoint holds no teacher parameters."""
import hashlib
import json
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cross_encoder as cross_encoder_config
from distill_ret import losses
from distill_ret.data import builders, formats
from distill_ret.models.heads import CrossEncoder
from distill_ret.teachers import cross_encoder_task
from distill_ret.teachers.cross_encoder import CrossEncoderTeacher, cross_encoder_scores
from distill_ret.training import checkpointing, evaluators, partitioning, trainer
from distill_ret.training import metrics as metrics_lib
from distill_ret.training.tasks import Task
from tests.teacher_helpers import QRELS, write_beir, write_tokenizer


def test_group_softmax_cross_entropy_hand_computed():
    scores = jnp.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    loss, accuracy = (losses.mean(losses.group_softmax_cross_entropy(scores)),
                      losses.mean(losses.group_accuracy(scores)))
    first = math.log(1 + math.exp(-1) + math.exp(-2))  # -log softmax(2, 1, 0)[0]
    second = math.log(2 + math.exp(3))  # -log softmax(0, 0, 3)[0]
    np.testing.assert_allclose(float(loss), (first + second) / 2, rtol=1e-6)
    assert float(accuracy) == 0.5


def test_group_distillation_loss_hand_computed():
    # guide [0, 0] -> (1/2, 1/2); model [ln 3, 0] -> (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    scores, guide = jnp.array([[math.log(3.0), 0.0]]), jnp.array([[0.0, 0.0]])
    np.testing.assert_allclose(float(losses.mean(losses.group_distillation_loss(scores, guide, 1.0))),
                               0.5 * math.log(4 / 3), rtol=1e-6)
    # temperature 0.5 doubles the guide logits: guide [ln 3 / 2, 0] -> (3/4, 1/4) matches the model exactly
    guide = jnp.array([[math.log(3.0) / 2, 0.0]])
    assert abs(float(losses.mean(losses.group_distillation_loss(scores, guide, 0.5)))) < 1e-6
    two = losses.mean(losses.group_distillation_loss(jnp.array([[0.0, 0.0], [math.log(3.0), 0.0]]),
                                                     jnp.array([[math.log(3.0), 0.0], [0.0, 0.0]]), 1.0))
    kl_first = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # guide (3/4, 1/4), model (1/2, 1/2)
    np.testing.assert_allclose(float(two), (kl_first + 0.5 * math.log(4 / 3)) / 2, rtol=1e-6)


def test_sample_negatives_skips_judged_and_tops_up_from_the_pool():
    ranked = ["a", "b", "c", "d", "e"]
    first = cross_encoder_task.sample_negatives(ranked, {"b", "d"}, 2, np.random.default_rng(3), ranked)
    again = cross_encoder_task.sample_negatives(ranked, {"b", "d"}, 2, np.random.default_rng(3), ranked)
    assert first == again and len(set(first)) == 2 and set(first) <= {"a", "c", "e"}
    topped = cross_encoder_task.sample_negatives(["a", "b"], {"b"}, 3, np.random.default_rng(0), list("abcdefg"))
    assert topped[0] == "a" and len(set(topped)) == 3 and "b" not in topped
    with pytest.raises(ValueError, match="only 2 unjudged documents"):
        cross_encoder_task.sample_negatives(["a"], {"c"}, 3, np.random.default_rng(0), ["a", "b", "c"])


@pytest.fixture(scope="module")
def fixture_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cross_encoder")
    write_tokenizer(root / "tokenizer")
    return write_beir(root / "beir"), root / "tokenizer"


def tiny_config(fixture_dirs, **train):
    beir_dir, tokenizer_dir = fixture_dirs
    config = cross_encoder_config.get_config("tiny")
    config.data.beir_dir, config.model.tokenizer_dir = str(beir_dir), str(tokenizer_dir)
    config.data.max_length, config.model.max_position_embeddings = 32, 32
    config.checkpoint.async_save = False
    config.train.update(train)
    return config


def test_training_groups_put_the_positive_first_and_sample_unjudged_negatives(fixture_dirs):
    task = cross_encoder_task.build_task(tiny_config(fixture_dirs))
    source = task.train_source
    positives = [(q, d) for q, docs in sorted(QRELS["train"].items()) for d, gain in sorted(docs.items()) if gain >= 1]
    assert source.examples == positives and len(source) == len(positives) * 4
    for index in range(len(source)):
        query_id, doc_ids = source.group(index)
        assert (query_id, doc_ids[0]) == positives[index % len(positives)]
        assert len(set(doc_ids)) == 4 and not set(doc_ids[1:]) & set(QRELS["train"][query_id])
    assert source.group(5) == source.group(5) and source.group(1)[1][1:] != source.group(1 + len(positives))[1][1:]
    example = source[0]
    assert example["input_ids"].shape == (4, 32)
    row_types = example["token_type_ids"][0][example["attention_mask"][0] == 1]
    assert row_types[0] == 0 and row_types[-1] == 1 and np.all(np.diff(row_types) >= 0)  # query part, then passage
    batch = task.collate([source[0], source[1]])
    assert batch["input_ids"].shape == (2, 4, 32)


def test_training_groups_come_from_a_builders_export_without_a_beir_dir(fixture_dirs, tmp_path):
    config = tiny_config(fixture_dirs)
    config.data = cross_encoder_config.get_config("pydocs").data  # beir_dir "": the pydocs builder's export
    config.data.update(packages=("json",), data_dir=str(tmp_path / "tfds"), max_length=32, title_queries=False)
    source = cross_encoder_task.build_task(config).train_source
    export = formats.read_beir(builders.beir_dir(config, ""))
    positives = [(q, d) for q, docs in sorted(export.qrels["train"].items()) for d, gain in sorted(docs.items())]
    assert positives and source.examples == positives
    assert all(doc_id.startswith("json") for _, doc_ids in map(source.group, range(len(source))) for doc_id in doc_ids)


def test_title_queries_add_one_group_per_document_asking_for_its_own_text(fixture_dirs):
    from tests.teacher_helpers import DOCS

    config = tiny_config(fixture_dirs)
    config.data.title_queries = True
    source = cross_encoder_task.build_task(config).train_source
    positives = [(q, d) for q, docs in sorted(QRELS["train"].items()) for d, gain in sorted(docs.items()) if gain >= 1]
    assert source.title_documents == sorted(DOCS) and len(source) == (len(positives) + len(DOCS)) * 4
    per_round = len(positives) + len(DOCS)
    for index in range(len(positives), per_round):
        assert source.is_title_example(index) and source.is_title_example(index + per_round)
        doc_id, doc_ids = source.group(index)
        assert doc_id == sorted(DOCS)[index - len(positives)] and doc_ids[0] == doc_id
        assert len(set(doc_ids)) == 4 and doc_id not in doc_ids[1:]
    assert not source.is_title_example(0) and source.group(0)[0] == positives[0][0]
    tokenizer = cross_encoder_task.load_tokenizer(config.model.tokenizer_dir)
    doc_id, doc_ids = source.group(len(positives))
    example = source[len(positives)]
    expected = tokenizer(DOCS[doc_id].title, DOCS[doc_id].text, truncation="longest_first", max_length=32)["input_ids"]
    assert list(example["input_ids"][0][example["attention_mask"][0] == 1]) == expected  # the title is not in the text


def fit_fixed_batch(task, batch, metric, steps=25):
    """`steps` Adam steps on one batch from seeded init -> the metric's value after each step."""
    import optax

    from distill_ret.training.state import TrainState

    params = nn.unbox(jax.jit(task.init_params)(jax.random.PRNGKey(0)))
    tx = optax.adam(5e-3)
    state = TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params), rng=jax.random.PRNGKey(1))
    step = jax.jit(trainer.make_train_step(task.loss_fn, tx, optax.constant_schedule(5e-3)))
    values = []
    for _ in range(steps):
        state, metrics = step(state, batch, None)
        values.append(metrics_lib.ratio(jax.device_get(metrics[metric])))
    return values


def test_the_train_step_lowers_the_loss_on_a_fixed_batch(fixture_dirs):
    task = cross_encoder_task.build_task(tiny_config(fixture_dirs))
    batch = task.collate([task.train_source[i] for i in range(8)])  # [8 groups, 4, 32]
    losses = fit_fixed_batch(task, batch, "loss")
    assert losses[0] > 1.3 and np.mean(losses[-3:]) < losses[0] - 0.4, losses  # log(4) = 1.386 at the start


def test_train_mode_evaluates_on_dev_and_reloads_the_best_checkpoint_as_a_teacher(fixture_dirs, tmp_path):
    config = tiny_config(fixture_dirs, num_steps=4)
    config.evals.dev.every, config.checkpoint.every, config.checkpoint.best_metric = 2, 2, "dev/nDCG@10"
    task = cross_encoder_task.build_task(config)
    trainer.train(task, config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in dev] == [2, 4] and all(0.0 <= r["dev/nDCG@10"] <= 1.0 for r in dev)

    checkpoint = checkpointing.read_run_checkpoint(tmp_path)
    step, saved, params = checkpoint.step, checkpoint.job_config, checkpoint.params
    assert checkpoint.model == task.model.to_dict()  # the record travels with the weights
    by_step = {r["step"]: r["dev/nDCG@10"] for r in dev}
    assert by_step[step] == max(by_step.values()) and saved["task"] == "cross_encoder"  # the best dev checkpoint
    best = step
    teacher = CrossEncoderTeacher.from_checkpoint(tmp_path, batch_size=8, show_progress=False)
    assert teacher.checkpoint_step == best and teacher.scorer.max_length == 32
    queries, passages = ["wing lift", "shock wave"], ["wing lift drag", "slab heat"]
    mesh = partitioning.create_mesh({"data": -1, "fsdp": 1, "model": 1})
    reranking = evaluators.build_evaluators(config, task, mesh)[0].evaluate  # the trainer's dev evaluator
    direct = reranking.scorer(mesh).score_pairs(reranking.scorer(mesh).replicate(params), queries, passages)
    np.testing.assert_allclose(teacher.score_pairs(queries, passages), direct, atol=1e-6)
    # The dev metric the trainer logged is what distill_ret.evaluation gives for the teacher's rerank of BM25.
    from distill_ret import evaluation
    from distill_ret.teachers import rerank_run
    dataset = formats.read_beir(config.data.beir_dir)
    run = rerank_run(teacher, reranking.candidates, dataset.queries, dataset.corpus)
    expected = evaluation.evaluate(run, dataset.qrels["dev"], ["nDCG@10"]).aggregate["nDCG@10"]
    assert math.isclose([r for r in dev if r["step"] == best][0]["dev/nDCG@10"], expected, abs_tol=1e-6)


def _leaf_digests(tree):
    return {hashlib.sha256(np.ascontiguousarray(np.asarray(leaf)).tobytes()).hexdigest()
            for leaf in jax.tree.leaves(tree) if np.asarray(leaf).size > 1}


def test_a_student_trained_against_a_frozen_teacher_never_checkpoints_it(fixture_dirs, tmp_path):
    """Distillation: a student cross-encoder regresses a frozen teacher's scores; the trainer passes the teacher
    as `frozen`, so the saved state holds only the student (and its optimizer moments)."""
    config = tiny_config(fixture_dirs, num_steps=2)
    config.evals.dev.every = 0  # this hand-made task supplies no evaluator inputs
    base = cross_encoder_task.build_task(config)
    model = CrossEncoder(cross_encoder_task.model_config(config, base.train_source._tokenizer))
    teacher_params = jax.tree.map(np.asarray, nn.unbox(jax.jit(base.init_params)(jax.random.PRNGKey(42))))

    def loss_fn(params, batch, rng, frozen):
        size, group, length = batch["input_ids"].shape
        flat = {name: batch[name].reshape(size * group, length) for name in cross_encoder_task.FEATURES}
        teacher = cross_encoder_scores(frozen, model.config, flat)  # [batch * group]
        student = model.apply({"params": params}, *flat.values(), deterministic=True)[:, 0]  # [batch * group]
        return jnp.mean((student - teacher) ** 2), {}

    task = Task(init_params=base.init_params, loss_fn=loss_fn, train_source=base.train_source,
                collate=base.collate, frozen=teacher_params)
    state = trainer.train(task, config, tmp_path)
    saved_params = checkpointing.read_run_checkpoint(tmp_path).params
    student_structure = jax.tree.structure(jax.tree.map(np.asarray, state.params))
    assert jax.tree.structure(saved_params) == student_structure
    import orbax.checkpoint as ocp
    with ocp.StandardCheckpointer() as checkpointer:  # the whole saved state: params, optimizer state, step, rng
        directory = (tmp_path / "checkpoints" / "2" / "state").absolute()
        metadata = dict(checkpointer.metadata(directory).item_metadata.tree)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        saved_state = checkpointer.restore(directory, jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), metadata))
    assert sorted(saved_state) == ["opt_state", "params", "rng", "step"]
    embedding_shape = teacher_params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape
    copies = [leaf for leaf in jax.tree.leaves(saved_state) if leaf.shape == embedding_shape]
    assert len(copies) == 3  # student embeddings + two Adam moments; the teacher's would be a fourth
    assert not _leaf_digests(teacher_params) & _leaf_digests(saved_state)
    assert not _leaf_digests(teacher_params) & _leaf_digests(saved_params)


def _guide_run(directory, fixture_dirs):
    """A run ranking every document for every train query, with distinct scores."""
    dataset = formats.read_beir(fixture_dirs[0])
    run = {qid: {doc_id: float(rank) / 7 - len(qid) for rank, doc_id in enumerate(sorted(dataset.corpus))}
           for qid in QRELS["train"]}
    formats.write_run(run, directory / "guide.trec", tag="guide")
    return run, directory / "guide.trec"


def test_a_guide_scores_every_group_in_model_order_and_joins_the_loss(fixture_dirs, tmp_path):
    run, path = _guide_run(tmp_path, fixture_dirs)
    config = tiny_config(fixture_dirs)
    config.guide.kind, config.guide.path, config.guide.weight, config.guide.temperature = (
        "run_file", str(path), 1.0, 0.1
    )
    task = cross_encoder_task.build_task(config)
    source = task.train_source
    assert isinstance(source, cross_encoder_task.GuidedGroups) and len(source) == len(source.groups)
    for index in range(len(source)):
        query_id, doc_ids = source.groups.group(index)
        np.testing.assert_allclose(source[index]["guide_scores"], [run[query_id][d] for d in doc_ids], rtol=1e-6)
    batch = task.collate([source[i] for i in range(8)])
    assert batch["guide_scores"].shape == (8, 4) and batch["input_ids"].shape == (8, 4, 32)

    params = nn.unbox(jax.jit(task.init_params)(jax.random.PRNGKey(0)))
    loss, metrics = task.loss_fn(params, batch, jax.random.PRNGKey(1))
    np.testing.assert_allclose(float(losses.mean(loss)), float(losses.mean(metrics["guide_kl"])),
                               rtol=1e-6)  # weight 1: the KL alone
    kls = fit_fixed_batch(task, batch, "guide_kl")
    assert np.mean(kls[-3:]) < 0.5 * kls[0], kls


@pytest.mark.parametrize("field,value,message", [
    ("weight", 1.5, r"config.guide.weight=1.5: must be in \(0, 1\]"),
    ("weight", 0.0, "config.guide.weight=0.0: must be a finite number > 0.0 \\(at most 1\\)"),
    ("weight", float("nan"), "config.guide.weight=nan: must be a finite number > 0.0"),
    ("temperature", 0.0, "config.guide.temperature=0.0: must be a finite number > 0.0"),
    ("temperature", float("inf"), "config.guide.temperature=inf: must be a finite number > 0.0"),
    ("temperature", float("nan"), "config.guide.temperature=nan: must be a finite number > 0.0"),
])
def test_a_guide_weight_or_temperature_out_of_range_is_refused_before_any_file_is_read(fixture_dirs, tmp_path,
                                                                                        field, value, message):
    from distill_ret.errors import ConfigError

    config = tiny_config(fixture_dirs)
    (tmp_path / "guide.trec").write_text("")  # never read: the check comes first
    config.guide.kind, config.guide.path = "run_file", str(tmp_path / "guide.trec")
    config.data.beir_dir = str(tmp_path / "absent")  # the check comes before the data is read
    config.guide[field] = value
    with pytest.raises(ConfigError, match=message):
        cross_encoder_task.build_task(config)


@pytest.mark.parametrize("field,value,message", [
    ("max_length", 4, "config.data.max_length=4: must be an integer >= 5 ([CLS] query [SEP] text [SEP])"),
    ("num_negatives", 0, "config.data.num_negatives=0: must be an integer >= 1"),
    ("negative_depth", 0, "config.data.negative_depth=0: must be an integer >= 1"),
    ("negative_rounds", 0, "config.data.negative_rounds=0: must be an integer >= 1"),
    ("seed", -1, "config.data.seed=-1: must be an integer >= 0"),
    ("min_positive_gain", 0,
     "config.data.min_positive_gain=0: must be an integer >= 1 (a gain of 0 is judged not relevant)"),
])
def test_a_data_field_out_of_range_is_refused_before_any_file_is_read(fixture_dirs, tmp_path, field, value, message):
    from distill_ret.errors import ConfigError

    config = tiny_config(fixture_dirs)
    config.data.beir_dir = str(tmp_path / "absent")
    config.data[field] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        cross_encoder_task.build_task(config)


def test_a_guide_with_a_missing_path_or_title_queries_is_refused(fixture_dirs, tmp_path):
    from distill_ret.errors import ConfigError

    _, path = _guide_run(tmp_path, fixture_dirs)
    config = tiny_config(fixture_dirs)
    config.guide.kind, config.guide.path, config.guide.weight = "run_file", str(path), 0.5
    config.guide.weight, config.guide.path = 0.5, str(tmp_path / "missing.trec")
    with pytest.raises(ConfigError, match="config.guide.path="):
        cross_encoder_task.build_task(config)
    config.guide.path, config.data.title_queries = str(path), True
    with pytest.raises(ConfigError, match="title_queries=False"):
        cross_encoder_task.build_task(config)
