"""Mode `rerank`: a teacher reranks a candidate run into a valid TREC run covering every candidate."""
import json

import numpy as np
import pytest

from configs import rerank as rerank_config
from distill_ret.data import formats
from distill_ret.errors import ConfigError
from distill_ret.teachers import loader, rerank
from tests.teacher_helpers import DOCS, QUERIES, torch_scores, write_beir, write_torch_cross_encoder

CANDIDATES = {  # test split queries q7, q8 (and q1, outside the split: ignored)
    "q7": {"d12": 3.0, "d1": 2.5, "d7": 2.0, "d3": 1.0, "d9": 0.5},
    "q8": {"d7": 1.0, "d2": 0.9, "d15": 0.1},
    "q1": {"d0": 1.0},
}


def make_config(tmp_path, teacher_kind, teacher_path, depth):
    config = rerank_config.get_config("cranfield")
    config.data.beir_dir = str(write_beir(tmp_path / "beir"))
    config.rerank.run_path = str(tmp_path / "candidates.trec")
    formats.write_run(CANDIDATES, config.rerank.run_path, tag="bm25")
    config.rerank.depth = depth
    config.teacher.kind, config.teacher.path = teacher_kind, str(teacher_path)
    config.teacher.batch_size, config.teacher.max_length, config.teacher.show_progress = 8, 24, False
    config.eval.measures = "nDCG@10,MRR@10"
    return config


def test_cross_encoder_rerank_writes_a_valid_run_of_every_candidate_with_pytorch_scores(tmp_path, capsys):
    model = write_torch_cross_encoder(tmp_path / "ce")
    config = make_config(tmp_path, "cross_encoder", tmp_path / "ce", depth=4)
    result = rerank.run_from_config(config, str(tmp_path / "out"))
    run = formats.read_run(result["run"], queries=QUERIES, corpus=DOCS)  # validates the TREC format and ids
    assert set(run) == {"q7", "q8"}
    assert set(run["q7"]) == {"d12", "d1", "d7", "d3"} and set(run["q8"]) == {"d7", "d2", "d15"}  # top-4 / all
    tokenizer = loader.load_teacher(config.teacher).scorer.tokenizer
    for query_id, scores in run.items():
        doc_ids = list(scores)
        expected = torch_scores(model, tokenizer, [QUERIES[query_id]] * len(doc_ids),
                                [f"{DOCS[d].title} {DOCS[d].text}" for d in doc_ids], 24)
        np.testing.assert_allclose([scores[d] for d in doc_ids], expected, atol=1e-5)
    lines = (tmp_path / "out" / "rerank-cross_encoder-test.trec").read_text().splitlines()
    ranks = [(line.split()[0], int(line.split()[3]), float(line.split()[4])) for line in lines]
    for query_id in ("q7", "q8"):
        mine = [(rank, score) for qid, rank, score in ranks if qid == query_id]
        assert [rank for rank, _ in mine] == list(range(1, len(mine) + 1))
        assert all(a >= b for (_, a), (_, b) in zip(mine, mine[1:]))  # best first
    printed = capsys.readouterr().out
    assert "candidates" in printed and "nDCG@10" in printed
    assert set(result["metrics"]) == {"nDCG@10", "MRR@10"}
    assert (tmp_path / "out" / "rerank-cross_encoder-test.metrics.json").exists()


def test_run_file_teacher_rerank_and_bad_configs(tmp_path):
    formats.write_run({"q7": {"d3": 5.0, "d9": 4.0}, "q8": {"d15": 1.0}}, tmp_path / "teacher.trec")
    config = make_config(tmp_path, "run_file", tmp_path / "teacher.trec", depth=0)
    result = rerank.run_from_config(config, str(tmp_path / "out"))
    run = formats.read_run(result["run"])
    assert list(run["q7"])[:2] == ["d3", "d9"] and set(run["q7"]) == set(CANDIDATES["q7"])
    assert list(run["q8"])[0] == "d15" and set(run["q8"]) == set(CANDIDATES["q8"])
    config.teacher.kind = "oracle"
    with pytest.raises(ConfigError, match="teacher.kind must be one of"):
        rerank.run_from_config(config, str(tmp_path / "out2"))
    config.teacher.kind, config.rerank.run_path = "run_file", ""
    with pytest.raises(ConfigError, match="rerank.run_path is required"):
        rerank.run_from_config(config, str(tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize(
    ("section", "field", "value", "message"),
    [
        ("eval", "measures", "nDCG@10,FOO", r"config.eval.measures='nDCG@10,FOO': unknown measure 'FOO'"),
        ("eval", "relevance_level", 0, r"config.eval.relevance_level=0"),
        ("rerank", "depth", -1, r"config.rerank.depth=-1: must be an integer >= 0"),
        ("rerank", "name", "../up", r"config.rerank.name='../up': must be a plain file name"),
        ("teacher", "path", "/no/such/teacher", r"config.teacher.path='/no/such/teacher' does not exist"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(tmp_path, section, field, value, message):
    formats.write_run({"q7": {"d3": 5.0}}, tmp_path / "teacher.trec")
    config = make_config(tmp_path, "run_file", tmp_path / "teacher.trec", depth=0)
    config[section][field] = value
    with pytest.raises(ConfigError, match=message):
        rerank.run_from_config(config, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_split_without_judgements_writes_nothing(tmp_path):
    formats.write_run({"q7": {"d3": 5.0}}, tmp_path / "teacher.trec")
    config = make_config(tmp_path, "run_file", tmp_path / "teacher.trec", depth=0)
    (tmp_path / "beir" / "qrels" / "empty.tsv").write_text("query-id\tcorpus-id\tscore\n")
    config.data.split = "empty"
    with pytest.raises(formats.FormatError, match=r"empty.tsv: no judgements"):
        rerank.run_from_config(config, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_metrics_record_the_data_label(tmp_path):
    formats.write_run({"q7": {"d3": 5.0}, "q8": {"d2": 1.0}}, tmp_path / "teacher.trec")
    config = make_config(tmp_path, "run_file", tmp_path / "teacher.trec", depth=0)  # cranfield preset, other data
    rerank.run_from_config(config, str(tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / "rerank-run_file-test.metrics.json").read_text())
    assert saved["data"] == "beir" and saved["qrels"] == f"{tmp_path / 'beir'} [test]"


def test_a_bm25_teacher_of_the_jobs_corpus_reranks_bm25_into_the_same_scores(tmp_path):
    from distill_ret import bm25

    config = make_config(tmp_path, "bm25", "", depth=0)
    dataset = formats.read_beir(config.data.beir_dir)
    queries = {qid: dataset.queries[qid] for qid in ("q7", "q8")}
    candidates = bm25.Bm25Index.build(dataset.corpus).search(queries, k=5)
    formats.write_run(candidates, config.rerank.run_path, tag="bm25")
    result = rerank.run_from_config(config, str(tmp_path / "out"))
    run = formats.read_run(result["run"])
    for query_id, scores in candidates.items():  # the job's corpus gives the statistics: BM25 scores again
        assert list(run[query_id]) == list(scores)
        np.testing.assert_allclose([run[query_id][d] for d in scores], list(scores.values()), rtol=1e-5)
    metrics = json.loads((tmp_path / "out" / "rerank-bm25-test.metrics.json").read_text())
    assert metrics["teacher"]["path"] == "" and metrics["teacher"]["fingerprint"]["kind"] == "bm25"
