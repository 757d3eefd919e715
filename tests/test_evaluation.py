"""Evaluation: ir-measures figures equal hand-computed values; outputs, conventions and errors of the evaluate mode."""
import json
import math

import ml_collections
import pytest

from distill_ret import evaluation
from distill_ret.data import formats
from distill_ret.errors import ConfigError

# q1: gains d1=3, d2=1, d4=2; q2: d5=1; q3: d6=2 and q3 is missing from the run; q4 is in the run only.
QRELS = {"q1": {"d1": 3, "d2": 1, "d4": 2}, "q2": {"d5": 1}, "q3": {"d6": 2}}
RUN = {
    # ranks: d2 (gain 1), d9 (unjudged), d1 (gain 3), d7 (unjudged), d4 (gain 2)
    "q1": {"d2": 0.9, "d9": 0.8, "d1": 0.7, "d7": 0.6, "d4": 0.5},
    # ranks: d8 (unjudged), d5 (gain 1)
    "q2": {"d8": 0.9, "d5": 0.4},
    "q4": {"d1": 1.0},
}


def _dcg(gains):
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def test_figures_equal_hand_computed_values():
    result = evaluation.evaluate(RUN, QRELS, ["nDCG@10", "MRR@10", "MRR@2", "R@2", "R@5", "MAP"])
    ndcg_q1 = _dcg([1, 0, 3, 0, 2]) / _dcg([3, 2, 1])
    ndcg_q2 = _dcg([0, 1]) / _dcg([1])
    ap_q1 = (1 / 1 + 2 / 3 + 3 / 5) / 3
    ap_q2 = (1 / 2) / 1
    expected_per_query = {
        "q1": {"nDCG@10": ndcg_q1, "MRR@10": 1.0, "MRR@2": 1.0, "R@2": 1 / 3, "R@5": 1.0, "MAP": ap_q1},
        "q2": {"nDCG@10": ndcg_q2, "MRR@10": 0.5, "MRR@2": 0.5, "R@2": 1.0, "R@5": 1.0, "MAP": ap_q2},
        "q3": dict.fromkeys(["nDCG@10", "MRR@10", "MRR@2", "R@2", "R@5", "MAP"], 0.0),
    }
    assert result.per_query.keys() == expected_per_query.keys()
    for qid, values in expected_per_query.items():
        assert result.per_query[qid] == pytest.approx(values, abs=1e-6), qid
    assert result.aggregate == pytest.approx(
        {name: sum(values[name] for values in expected_per_query.values()) / 3 for name in expected_per_query["q1"]},
        abs=1e-6,
    )
    assert result.missing_queries == ("q3",)
    assert result.ignored_queries == ("q4",)


def test_relevance_level_applies_to_binary_measures_only():
    result = evaluation.evaluate(RUN, QRELS, ["nDCG@10", "MRR@10", "MRR@2", "R@2", "MAP"], relevance_level=2)
    # At level 2, q1's relevant documents are d1 (rank 3) and d4 (rank 5); q2 has none; q3 is missing.
    assert result.per_query["q1"] == pytest.approx(
        {
            "nDCG@10": _dcg([1, 0, 3, 0, 2]) / _dcg([3, 2, 1]),
            "MRR@10": 1 / 3,
            "MRR@2": 0.0,
            "R@2": 0.0,
            "MAP": (1 / 3 + 2 / 5) / 2,
        },
        abs=1e-6,
    )
    assert result.per_query["q2"]["MRR@10"] == 0.0
    assert result.per_query["q2"]["MAP"] == 0.0
    assert result.aggregate["MRR@10"] == pytest.approx(1 / 9, abs=1e-9)


def test_explicit_relevance_level_in_a_measure_is_kept():
    parsed = evaluation.parse_measures(["AP(rel=3)", "R@5", "nDCG@10"], relevance_level=2)
    assert str(parsed["AP(rel=3)"]) == "AP(rel=3)"
    assert str(parsed["R@5"]) == "R(rel=2)@5"
    assert str(parsed["nDCG@10"]) == "nDCG@10"


def test_perfect_run_scores_one_everywhere():
    run = {qid: {doc: float(gain) for doc, gain in docs.items()} for qid, docs in QRELS.items()}
    result = evaluation.evaluate(run, QRELS)
    assert result.aggregate == pytest.approx(dict.fromkeys(evaluation.DEFAULT_MEASURES, 1.0))
    assert result.missing_queries == ()


@pytest.mark.parametrize(
    ("run", "qrels", "measures", "message"),
    [
        (RUN, {}, ["nDCG@10"], "qrels are empty"),
        ({"q9": {"d1": 1.0}}, QRELS, ["nDCG@10"], "ranks no document"),
        (RUN, QRELS, ["nDCG@10", "bogus@3"], "unknown measure 'bogus@3'"),
        (RUN, QRELS, [], "no measures"),
    ],
)
def test_bad_input_raises_clear_errors(run, qrels, measures, message):
    with pytest.raises(ValueError, match=message):
        evaluation.evaluate(run, qrels, measures)


def test_measure_names_from_a_config_string():
    assert evaluation.measure_names(" nDCG@10, MRR@10 ,R@100,") == ("nDCG@10", "MRR@10", "R@100")
    assert evaluation.measure_names(["MAP"]) == ("MAP",)


def test_table_is_aligned():
    table = evaluation.format_table(
        {"bm25": {"nDCG@10": 0.29712, "MRR@10": 0.4}, "a-long-system-name": {"nDCG@10": 1.0}}, ["nDCG@10", "MRR@10"]
    )
    lines = table.splitlines()
    assert lines[0].split() == ["system", "nDCG@10", "MRR@10"]
    assert lines[2].split() == ["bm25", "0.2971", "0.4000"]
    assert lines[3].split() == ["a-long-system-name", "1.0000", "-"]
    assert len({len(line) for line in lines}) == 1
    column_end = lines[0].index("nDCG@10") + len("nDCG@10")
    assert all(line[column_end - 1] != " " for line in lines[2:])


def test_saved_json_and_per_query_tsv(tmp_path):
    result = evaluation.evaluate(RUN, QRELS, ["nDCG@10", "MRR@10"])
    paths = evaluation.save_evaluation(result, tmp_path / "out", "bm25", per_query=True, extra={"run": "x.trec"})
    payload = json.loads((tmp_path / "out" / "bm25.metrics.json").read_text())
    assert payload["run"] == "x.trec"
    assert payload["measures"] == pytest.approx(result.aggregate)
    assert (payload["num_queries"], payload["num_missing_queries"], payload["num_ignored_queries"]) == (3, 1, 1)
    rows = [line.split("\t") for line in (tmp_path / "out" / "bm25.per_query.tsv").read_text().splitlines()]
    assert rows[0] == ["query_id", "nDCG@10", "MRR@10"]
    assert {row[0]: float(row[2]) for row in rows[1:]} == {"q1": 1.0, "q2": 0.5, "q3": 0.0}
    assert set(paths) == {"metrics", "per_query"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bm25.metrics.json", "bm25.per_query.tsv"]


def _beir_fixture(directory):
    corpus = {f"d{i}": formats.Document(f"d{i}", f"title {i}", f"text {i}") for i in range(1, 10)}
    queries = {qid: f"query {qid}" for qid in ["q1", "q2", "q3", "q4"]}
    formats.write_beir(formats.BeirDataset(corpus, queries, {"test": QRELS}), directory)
    return directory


def _evaluate_config(**eval_fields):
    config = ml_collections.ConfigDict(
        {
            "data": {"name": "", "beir_dir": "", "split": "test"},
            "eval": {
                "run_path": "", "qrels_path": "", "qrels_format": "beir", "measures": "nDCG@10,MRR@10,R@5,MAP",
                "relevance_level": 1, "per_query": False, "name": "",
            },
        }
    )
    config.eval.update(eval_fields)
    return config


def test_evaluate_mode_on_a_beir_directory(tmp_path, capsys):
    beir = _beir_fixture(tmp_path / "beir")
    formats.write_run(RUN, tmp_path / "system.trec")
    config = _evaluate_config(run_path=str(tmp_path / "system.trec"), per_query=True)
    config.data.beir_dir = str(beir)
    result = evaluation.run_from_config(config, str(tmp_path / "work"))
    assert result.aggregate == pytest.approx(
        evaluation.evaluate(RUN, QRELS, ["nDCG@10", "MRR@10", "R@5", "MAP"]).aggregate
    )
    assert json.loads((tmp_path / "work" / "system.metrics.json").read_text())["measures"] == pytest.approx(
        result.aggregate
    )
    assert (tmp_path / "work" / "system.per_query.tsv").exists()
    assert "system" in capsys.readouterr().out


def test_evaluate_mode_with_a_trec_qrels_file(tmp_path):
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 {d} {g}\n"
                                                for q, docs in QRELS.items() for d, g in docs.items()))
    formats.write_run(RUN, tmp_path / "system.trec")
    config = _evaluate_config(
        run_path=str(tmp_path / "system.trec"), qrels_path=str(tmp_path / "qrels.txt"), qrels_format="trec", name="x"
    )
    result = evaluation.run_from_config(config, str(tmp_path / "work"))
    assert result.aggregate["MRR@10"] == pytest.approx(0.5)
    assert (tmp_path / "work" / "x.metrics.json").exists()


def test_evaluate_mode_rejects_unknown_ids_and_leaves_no_output(tmp_path):
    beir = _beir_fixture(tmp_path / "beir")
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 nowhere 2 1.0 t\n")
    config = _evaluate_config(run_path=str(tmp_path / "bad.trec"))
    config.data.beir_dir = str(beir)
    with pytest.raises(formats.FormatError, match=r"bad\.trec:2: .*nowhere"):
        evaluation.run_from_config(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_evaluate_mode_rejects_a_run_without_judged_queries(tmp_path):
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "other.trec").write_text("q7 Q0 d1 1 2.0 t\n")
    config = _evaluate_config(run_path=str(tmp_path / "other.trec"), qrels_path=str(tmp_path / "qrels.tsv"))
    with pytest.raises(formats.FormatError, match=r"other\.trec: no query of this run has judgements"):
        evaluation.run_from_config(config, str(tmp_path / "work"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "run_path is required"),
        ({"run_path": "x.trec"}, "set config.data.beir_dir"),
        ({"run_path": "x.trec", "qrels_path": "q.tsv", "qrels_format": "csv"}, "qrels_format"),
    ],
)
def test_evaluate_mode_config_errors(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message):
        evaluation.run_from_config(_evaluate_config(**fields), str(tmp_path))


def test_evaluate_mode_unknown_split(tmp_path):
    beir = _beir_fixture(tmp_path / "beir")
    formats.write_run(RUN, tmp_path / "system.trec")
    config = _evaluate_config(run_path=str(tmp_path / "system.trec"))
    config.data.beir_dir, config.data.split = str(beir), "dev"
    with pytest.raises(ConfigError, match=r"split='dev' has no qrels .*\['test'\]"):
        evaluation.run_from_config(config, str(tmp_path))


def test_outputs_are_named_by_the_full_stem_and_never_replace_another_runs_metrics(tmp_path):
    beir = _beir_fixture(tmp_path / "beir")
    formats.write_run(RUN, tmp_path / "run.bm25.trec")
    formats.write_run({"q1": {"d1": 1.0}}, tmp_path / "run.rerank.trec")
    work = str(tmp_path / "work")
    for run_name in ("run.bm25.trec", "run.rerank.trec"):
        config = _evaluate_config(run_path=str(tmp_path / run_name))
        config.data.beir_dir = str(beir)
        evaluation.run_from_config(config, work)
    saved = {name: json.loads((tmp_path / "work" / f"{name}.metrics.json").read_text())
             for name in ("run.bm25", "run.rerank")}
    assert saved["run.bm25"]["run"] == str(tmp_path / "run.bm25.trec")
    assert saved["run.rerank"]["run"] == str(tmp_path / "run.rerank.trec")
    assert saved["run.bm25"]["measures"]["MRR@10"] != saved["run.rerank"]["measures"]["MRR@10"]

    (tmp_path / "elsewhere").mkdir()
    formats.write_run(RUN, tmp_path / "elsewhere" / "run.bm25.trec")  # another run file with the same name
    config = _evaluate_config(run_path=str(tmp_path / "elsewhere" / "run.bm25.trec"))
    config.data.beir_dir = str(beir)
    before = (tmp_path / "work" / "run.bm25.metrics.json").read_bytes()
    with pytest.raises(ConfigError,
                       match=r"run.bm25.metrics.json already holds the metrics of .*/run.bm25.trec; "
                             r"set config.eval.name"):
        evaluation.run_from_config(config, work)
    assert (tmp_path / "work" / "run.bm25.metrics.json").read_bytes() == before
    config.eval.name = "elsewhere"
    evaluation.run_from_config(config, work)
    config = _evaluate_config(run_path=str(tmp_path / "run.bm25.trec"))  # the same run again may refresh its metrics
    config.data.beir_dir = str(beir)
    evaluation.run_from_config(config, work)


def test_a_metrics_file_the_tool_did_not_write_is_never_replaced(tmp_path):
    beir = _beir_fixture(tmp_path / "beir")
    formats.write_run(RUN, tmp_path / "system.trec")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "system.metrics.json").write_text("my notes\n")
    config = _evaluate_config(run_path=str(tmp_path / "system.trec"))
    config.data.beir_dir = str(beir)
    with pytest.raises(ConfigError, match="already holds a file this tool did not write"):
        evaluation.run_from_config(config, str(tmp_path / "work"))
    assert (tmp_path / "work" / "system.metrics.json").read_text() == "my notes\n"


def test_output_name():
    assert evaluation.output_name("", "/x/run.bm25.trec") == "run.bm25"
    assert evaluation.output_name("", "run") == "run"
    assert evaluation.output_name("mine", "/x/run.bm25.trec") == "mine"
    with pytest.raises(ConfigError, match="config.eval.name='a/b': must be a plain file name"):
        evaluation.output_name("a/b", "run.trec")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"measures": "nDCG@10,FOO"}, r"config.eval.measures='nDCG@10,FOO': unknown measure 'FOO'"),
        ({"measures": "P@0"}, r"measure 'P@0': cutoff must be a positive integer"),  # trec_eval would abort the process
        ({"measures": "AP(rel=0)"}, r"measure 'AP\(rel=0\)': rel must be a positive integer"),
        ({"measures": "alpha_nDCG@10"}, "no installed ir-measures provider"),
        ({"measures": " , "}, "no measures given"),
        ({"relevance_level": 0}, r"config.eval.relevance_level=0: must be an integer >= 1"),
        ({"relevance_level": True}, r"config.eval.relevance_level=True"),
    ],
)
def test_eval_section_is_checked_before_any_input_is_read(tmp_path, fields, message):
    config = _evaluate_config(run_path=str(tmp_path / "absent.trec"), **fields)  # the run is never opened
    with pytest.raises(ConfigError, match=message):
        evaluation.run_from_config(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_empty_qrels_file_is_a_user_error_naming_it(tmp_path):
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n")
    formats.write_run(RUN, tmp_path / "system.trec")
    config = _evaluate_config(run_path=str(tmp_path / "system.trec"), qrels_path=str(tmp_path / "qrels.tsv"))
    with pytest.raises(formats.FormatError, match=r"qrels.tsv: no judgements"):
        evaluation.run_from_config(config, str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_data_label_names_the_data_really_read():
    def data(name, beir_dir):
        return ml_collections.ConfigDict({"name": name, "beir_dir": beir_dir})

    assert evaluation.data_label(data("cranfield", "/shared/data/cranfield")) == "cranfield"
    assert evaluation.data_label(data("cranfield", "/shared/data/cranfield/")) == "cranfield"
    assert evaluation.data_label(data("cranfield", "/data/scifact")) == "scifact"
    assert evaluation.data_label(data("pydocs", "")) == "pydocs"  # builder data: the builder's name
