"""Named evaluators: the registry builds `config.evals.<name>` sections by kind, runs each at its own `every`, averages
in-graph evaluations as sums and counts, and refuses bad sections and best metrics naming the field; the
cross-encoder's "rerank" kind scores exactly what the trainer logs."""
import flax.linen as nn
import jax
import ml_collections
import pytest

import training_helpers
from configs import cross_encoder as cross_encoder_config
from distill_ret.data import pipeline
from distill_ret.errors import ConfigError
from distill_ret.teachers import cross_encoder_task
from distill_ret.training import evaluators, partitioning
from tests.teacher_helpers import write_beir, write_tokenizer


@pytest.fixture(scope="module")
def mesh():
    return partitioning.create_mesh({"data": -1, "fsdp": 1, "model": 1})


def evals(**sections) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"task": "token_mlp", "evals": sections})


def batches(every=2, batch_size=16, num_batches=2, kind="batches"):
    return {"kind": kind, "every": every, "batch_size": batch_size, "num_batches": num_batches}


def test_each_evaluator_runs_at_its_own_every_and_always_at_the_last_step():
    fast = evaluators.Evaluator("fast", 2, ("a",), lambda params, mesh: {"a": 1.0})
    slow = evaluators.Evaluator("slow", 5, ("b", "c"), lambda params, mesh: {"b": 2.0, "c": 3.0, "ignored": 4.0})
    assert [step for step in range(1, 12) if fast.due(step, 11)] == [2, 4, 6, 8, 10, 11]
    assert [step for step in range(1, 12) if slow.due(step, 11)] == [5, 10, 11]
    assert evaluators.run_due([fast, slow], 4, 11, None, None) == {"fast/a": 1.0}
    assert evaluators.run_due([fast, slow], 10, 11, None, None) == {"fast/a": 1.0, "slow/b": 2.0, "slow/c": 3.0}
    assert evaluators.run_due([fast, slow], 3, 11, None, None) == {}


def test_a_batches_evaluation_is_the_token_weighted_mean_over_its_batches(mesh):
    task = training_helpers.make_task(token_loss=True)
    [evaluator] = evaluators.build_evaluators(evals(dev=batches(num_batches=2)), task, mesh)
    assert (evaluator.name, evaluator.every, evaluator.measures) == ("dev", 2, ("loss", "accuracy", "label_mean"))
    params = nn.unbox(jax.jit(task.init_params)(jax.random.PRNGKey(0)))
    source = task.eval_inputs["batches"].source
    loss_sums, label_sums, counts = [], [], []
    for indices in (range(16), range(16, 32)):  # the first two batches, unshuffled
        loss, _ = task.loss_fn(params, pipeline.pad_and_stack([source[i] for i in indices], {}), None)
        loss_sums.append(float(loss[0]))
        label_sums.append(sum(float(source[i]["labels"][source[i]["mask"]].sum()) for i in indices))  # by hand
        counts.append(sum(int(source[i]["mask"].sum()) for i in indices))
    assert counts[0] != counts[1]
    with partitioning.sharding_context(mesh, partitioning.axis_rules("fsdp_model")):
        values = evaluator.evaluate(params, mesh)
    assert values["loss"] == pytest.approx(sum(loss_sums) / sum(counts), rel=2e-6)
    assert values["label_mean"] == pytest.approx(sum(label_sums) / sum(counts), rel=1e-6)
    assert abs(values["label_mean"] - (label_sums[0] / counts[0] + label_sums[1] / counts[1]) / 2) > 1e-3


@pytest.mark.parametrize("section, message", [
    (batches(kind="bleu"), "config.evals.dev.kind='bleu': expected one of "
                           "['batches', 'fgd_dense', 'generative', 'rerank']"),
    (batches(kind="rerank"), "config.evals.dev.kind='rerank': task 'token_mlp' provides no inputs for it "
                             "(it supports ['batches'])"),
    (batches(every=-2), "config.evals.dev.every=-2: must be an integer >= 0"),
    (batches(every=True), "config.evals.dev.every=True"),
    (batches(batch_size=0), "config.evals.dev.batch_size=0: must be an integer >= 1"),
    (batches(num_batches=9), "config.evals.dev.batch_size=16 x num_batches=9 exceeds the 64 evaluation examples"),
    (batches(batch_size=4, num_batches=1), "config.evals.dev.batch_size=4 is not divisible by the 8 devices"),
])
def test_bad_sections_are_refused_naming_the_field(mesh, section, message):
    with pytest.raises(ConfigError) as error:
        evaluators.build_evaluators(evals(dev=section), training_helpers.make_task(), mesh)
    assert message in str(error.value)


def test_a_switched_off_evaluator_is_not_built(mesh):
    assert evaluators.build_evaluators(evals(dev=batches(every=0, kind="rerank")), training_helpers.make_task(),
                                       mesh) == []


def test_the_best_metric_names_a_measure_of_a_running_evaluator_with_a_compatible_every():
    dev = evaluators.Evaluator("dev", 4, ("loss", "accuracy"), lambda params, mesh: {})

    def check(best_metric, every=8):
        evaluators.check_best_metric(ml_collections.ConfigDict({"best_metric": best_metric, "every": every}), [dev])

    check("")
    check("dev/loss")
    check("", every=3)  # no best metric: any checkpoint interval
    for best, message in [("loss", "one of ['dev/accuracy', 'dev/loss']"), ("test/loss", "'<evaluator>/<measure>'"),
                          ("dev/bleu", "config.checkpoint.best_metric='dev/bleu'")]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            check(best)
    with pytest.raises(ConfigError, match=r"config.checkpoint.every=6 is not a multiple of config.evals.dev.every=4"):
        check("dev/loss", every=6)


@pytest.fixture(scope="module")
def cross_encoder_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank")
    write_tokenizer(root / "tokenizer")
    config = cross_encoder_config.get_config("tiny")
    config.data.beir_dir, config.model.tokenizer_dir = str(write_beir(root / "beir")), str(root / "tokenizer")
    config.data.max_length, config.model.max_position_embeddings = 32, 32
    return config, cross_encoder_task.build_task(config)


@pytest.mark.parametrize("field, value, message", [
    ("split", "validation", "config.evals.dev.split='validation' has no qrels; splits: ['dev', 'test', 'train']"),
    ("depth", 0, "config.evals.dev.depth=0: must be an integer >= 1"),
    ("measures", "nDCG@ten", "config.evals.dev.measures='nDCG@ten'"),
    ("relevance_level", 0, "config.evals.dev.relevance_level=0"),
    ("batch_size", -1, "config.evals.dev.batch_size=-1"),
])
def test_bad_rerank_sections_are_refused_naming_the_field(cross_encoder_setup, mesh, field, value, message):
    config, task = cross_encoder_setup
    bad = ml_collections.ConfigDict(config.to_dict())
    bad.evals.dev[field] = value
    with pytest.raises(ConfigError) as error:
        evaluators.build_evaluators(bad, task, mesh)
    assert message in str(error.value)


def test_the_rerank_evaluator_reranks_bm25_candidates_of_its_split(cross_encoder_setup, mesh):
    config, task = cross_encoder_setup
    [dev] = evaluators.build_evaluators(config, task, mesh)
    assert (dev.name, dev.every, dev.measures) == ("dev", 2, ("nDCG@10", "MRR@10"))
    reranking = dev.evaluate
    assert sorted(reranking.candidates) == ["q5", "q6"]  # the dev queries, BM25's top `depth` each
    assert all(0 < len(docs) <= config.evals.dev.depth for docs in reranking.candidates.values())
    params = nn.unbox(jax.jit(task.init_params)(jax.random.PRNGKey(0)))
    values = dev.evaluate(params, mesh)
    assert set(values) == {"nDCG@10", "MRR@10"} and all(0.0 <= value <= 1.0 for value in values.values())
    assert dev.evaluate(params, mesh) == values and reranking.scorer(mesh) is reranking.scorer(mesh)
