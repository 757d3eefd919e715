"""Mode `retrieve` with an FGD config: the run written is `fgd.retrieval.retrieval_run` of the student (single and
multi-vector), metrics are written when the split has qrels, bad fields are one ConfigError with nothing written,
and the router still sends other configs to DGR's retrieve."""
import json

import numpy as np
import pytest
import torch
import transformers
from test_fgd_chain import _config, _load_config_file, beir_dir, tokenizer_dir  # noqa: F401 (fixtures)

from distill_ret import evaluation, index, retrieve_mode
from distill_ret.data import formats
from distill_ret.errors import ConfigError
from distill_ret.fgd import inputs, mine, mining, retrieval


@pytest.fixture(scope="module")
def student_dir(tokenizer_dir, tmp_path_factory):
    """A random 2-layer BERT saved as a Hugging Face directory with the fixture's tokenizer."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128))
    path = tmp_path_factory.mktemp("student")
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def _retrieve_config(beir_dir, data_dir, tokenizer_dir, student_dir, **overrides):
    return _config("tiny", beir_dir, data_dir, tokenizer_dir, model__init_from=str(student_dir),
                   model__tokenizer_dir="", **{"retrieve__depth": 5, **overrides})


def _expected_run(config, query_ids):
    student = inputs.student(config)
    params = mine.student_params(student)
    documents = inputs.long_documents(config, student.tokenizer)
    encoder = index.TextEncoder(index.bi_encoder_fn(student.model, "query"), student.tokenizer,
                                max_length=config.data.query_max_length, batch_size=3)
    queries = encoder.encode(encoder.replicate(params), [documents.dataset.queries[q] for q in query_ids])
    corpus = mining.document_piece_embeddings(student.model, params, documents.segmented,
                                              length=config.data.max_length, batch_size=5)
    # every document scored: a near-tie at the cut may put the mode's fifth document sixth here
    run = retrieval.retrieval_run(query_ids, queries, corpus, len(corpus), config.retrieve.gamma)
    return run, documents.dataset.qrels


@pytest.mark.parametrize("gamma", [0.0, 0.4])
def test_run_is_the_students_retrieval_run(beir_dir, data_dir, tokenizer_dir, student_dir, tmp_path, gamma):
    config = _retrieve_config(beir_dir, data_dir, tokenizer_dir, student_dir, retrieve__gamma=gamma)
    result = retrieve_mode.run_from_config(config, str(tmp_path))
    assert result["run"] == str(tmp_path / "retrieve-test.trec")
    written = formats.read_run(result["run"])
    expected, qrels = _expected_run(config, ["q6", "q7"])
    assert list(written) == ["q6", "q7"]
    for qid, scores in expected.items():
        # The mode and this recomputation batch the texts differently, so near-equal scores may swap by float
        # rounding: the written documents are the expected top 5 up to ties within the score tolerance, their
        # scores the recomputed ones.
        documents = list(written[qid])
        assert len(documents) == 5
        np.testing.assert_allclose([written[qid][d] for d in documents], [scores[d] for d in documents], rtol=1e-5,
                                   atol=1e-6)
        fifth = sorted(scores.values(), reverse=True)[4]
        assert all(scores[d] >= fifth - 1e-5 * abs(fifth) for d in documents)
        assert [written[qid][d] for d in documents] == sorted(written[qid].values(), reverse=True)
    if gamma:  # the passage and sentence terms change the scores
        single, _ = _expected_run(_retrieve_config(beir_dir, data_dir, tokenizer_dir, student_dir), ["q6", "q7"])
        assert single["q6"] != expected["q6"]
    metrics = json.loads((tmp_path / "retrieve-test.metrics.json").read_text())
    # The metrics of the written run (the same documents as the recomputation's up to near-ties, checked above).
    aggregate = evaluation.evaluate(written, qrels["test"], config.retrieve.measures.split(",")).aggregate
    assert result["metrics"] == pytest.approx(aggregate) and set(aggregate) == {"MRR@100", "nDCG@10", "R@100"}
    assert metrics["run"] == result["run"] and metrics["gamma"] == gamma
    assert metrics["measures"] == pytest.approx(aggregate) and metrics["num_queries"] == 2
    margins = json.loads((tmp_path / "retrieve-test.margins.json").read_text())
    assert margins == {"system": "retrieve-test", "positive_minus_negative": pytest.approx(
        evaluation.margins_from_scores(written, qrels["test"]))}


def test_every_query_without_qrels_writes_no_metrics(beir_dir, data_dir, tokenizer_dir, student_dir, tmp_path):
    config = _retrieve_config(beir_dir, data_dir, tokenizer_dir, student_dir, retrieve__split="",
                              retrieve__name="all")
    result = retrieve_mode.run_from_config(config, str(tmp_path))
    assert result == {"run": str(tmp_path / "all.trec"), "metrics": None}
    assert sorted(formats.read_run(result["run"])) == [f"q{i}" for i in range(8)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.trec"]


@pytest.mark.parametrize("field,value,message", [
    ("retrieve__depth", 0, "config.retrieve.depth=0: must be an integer >= 1"),
    ("retrieve__gamma", -0.1, "config.retrieve.gamma=-0.1: must be a finite number >= 0"),
    ("retrieve__split", "nope", "config.retrieve.split='nope': no such split; splits: ['test', 'train']"),
    ("retrieve__name", "a/b", "config.retrieve.name='a/b': must be a plain file name"),
])
def test_bad_field_is_one_config_error_and_nothing_is_written(beir_dir, data_dir, tokenizer_dir, student_dir,
                                                              tmp_path, field, value, message):
    config = _retrieve_config(beir_dir, data_dir, tokenizer_dir, student_dir, **{field: value})
    workdir = tmp_path / "work"
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        retrieve_mode.run_from_config(config, str(workdir))
    assert not workdir.exists()


def test_other_configs_go_to_dgr_retrieve(tmp_path):
    config = _load_config_file("retrieve.py", "cranfield")
    config.retrieve.num_beams = 0
    with pytest.raises(ConfigError, match="config.retrieve.num_beams=0: must be an integer >= 1"):
        retrieve_mode.run_from_config(config, str(tmp_path))
