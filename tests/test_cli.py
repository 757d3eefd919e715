"""The command line in subprocesses: modes, `--config.a.b=v` overrides, usage errors, bad input with clean exits."""
import importlib.util
import json
import logging
import os
import pathlib
import subprocess
import sys

import pytest

from distill_ret import bm25, main
from distill_ret.data import formats

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
BM25_CONFIG = REPO_ROOT / "configs" / "bm25.py"
EVALUATE_CONFIG = REPO_ROOT / "configs" / "evaluate.py"


def _cli(*args, cwd):
    """Runs `python -m distill_ret.main ARGS` from `cwd` (not the repository root: configs must not depend on it)."""
    return subprocess.run(
        [sys.executable, "-m", "distill_ret.main", *map(str, args)], cwd=cwd, capture_output=True, text=True,
        timeout=300,
    )


def test_bm25_mode_with_overrides_then_evaluate_mode(cranfield_dir, tmp_path):
    work = tmp_path / "bm25"
    done = _cli(
        "bm25", f"--config={BM25_CONFIG}:cranfield", f"--workdir={work}", "--config.bm25.k1=1.2",
        "--config.bm25.top_k=50", "--config.eval.per_query=True", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no third-party chatter (jax's "Unable to initialize backend 'tpu'", bm25s's INFO lines)
    assert "nDCG@10" in done.stdout.splitlines()[0] and "bm25 cranfield/test" in done.stdout

    run = formats.read_run(work / "bm25-test.trec")
    dataset = formats.read_beir(cranfield_dir)
    assert set(run) == set(dataset.qrels["test"])
    assert max(map(len, run.values())) == 50
    first = next(iter(dataset.qrels["test"]))
    expected = bm25.Bm25Index.build(dataset.corpus, bm25.Bm25Params(k1=1.2)).search({first: dataset.queries[first]}, 50)
    assert run[first] == pytest.approx(expected[first], rel=1e-6)
    default = bm25.Bm25Index.build(dataset.corpus).search({first: dataset.queries[first]}, 50)
    assert run[first] != pytest.approx(default[first], rel=1e-6)

    metrics = json.loads((work / "bm25-test.metrics.json").read_text())
    assert metrics["bm25"]["k1"] == 1.2 and metrics["top_k"] == 50
    assert (work / "bm25-test.per_query.tsv").exists()

    evaluated = _cli(
        "evaluate", f"--config={EVALUATE_CONFIG}:cranfield", f"--workdir={tmp_path / 'eval'}",
        f"--config.eval.run_path={work / 'bm25-test.trec'}", "--config.eval.name=k1_1.2", cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "k1_1.2" in evaluated.stdout
    again = json.loads((tmp_path / "eval" / "k1_1.2.metrics.json").read_text())
    assert again["measures"] == pytest.approx(metrics["measures"])


def test_malformed_run_is_one_clear_error_and_writes_nothing(tmp_path):
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "bad.trec").write_text("q1 Q0 d1 1 2.5 tag\nq1 Q0 d2 2 not-a-number tag\n")
    done = _cli(
        "evaluate", f"--config={EVALUATE_CONFIG}:qrels", f"--workdir={tmp_path / 'work'}",
        f"--config.eval.run_path={tmp_path / 'bad.trec'}", f"--config.eval.qrels_path={tmp_path / 'qrels.tsv'}",
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert f"{tmp_path / 'bad.trec'}:2: score must be a number" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nomode", f"--config={BM25_CONFIG}", "--workdir=w"], "MODE is one of"),
        ([f"--config={BM25_CONFIG}", "--workdir=w"], "MODE is one of"),
        (["bm25", f"--config={BM25_CONFIG}"], "--config and --workdir are required"),
        (["bm25", f"--config={BM25_CONFIG}", "--workdir=w", "--config.bm25.kk=1"], "the config has no field 'kk'"),
        (["bm25", f"--config={BM25_CONFIG}", "--workdir=w", "--config.bm25.k1=abc"],
         "could not convert string to float"),
        (["bm25", f"--config={BM25_CONFIG}:nope", "--workdir=w"], "unknown preset 'nope'"),
        (["bm25", f"--config={BM25_CONFIG}", "--workdir=w", "--config.data.beir_dir=missing"],
         "corpus.jsonl: file not found"),
        (["bm25", f"--config={BM25_CONFIG}", "--workdir=w", "--config.bm25.method=bm26"],
         "config.bm25.method='bm26': must be one of"),
    ],
)
def test_usage_and_config_errors_exit_non_zero(tmp_path, args, message):
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "w").exists()


def test_build_data_then_bm25_on_the_pydocs_export(tmp_path):
    packages = "--config.data.packages=('http', 'json')"
    data_dir = f"--config.data.data_dir={tmp_path / 'data'}"
    built = _cli(
        "build-data", f"--config={REPO_ROOT / 'configs' / 'build_data.py'}:pydocs", f"--workdir={tmp_path / 'build'}",
        packages, data_dir, cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    assert built.stderr == "" and "Downloading" not in built.stdout  # nothing downloads, and TFDS no longer says so
    assert built.stdout.startswith("pydocs/py")
    exports = sorted((tmp_path / "data" / "beir_layout" / "pydocs").glob("*/passages"))
    assert len(exports) == 1
    searched = _cli(
        "bm25", f"--config={BM25_CONFIG}:pydocs", f"--workdir={tmp_path / 'bm25'}", packages, data_dir,
        "--config.data.split=train", cwd=tmp_path,
    )
    assert searched.returncode == 0, searched.stderr
    dataset = formats.read_beir(exports[0])
    run = formats.read_run(tmp_path / "bm25" / "bm25-train.trec", queries=dataset.queries, corpus=dataset.corpus)
    expected = bm25.Bm25Index.build(dataset.corpus).search(
        {qid: dataset.queries[qid] for qid in dataset.qrels["train"]}, 1000
    )
    assert run == {qid: docs for qid, docs in expected.items() if docs}  # scores are written with repr(): exact
    assert "bm25 pydocs/train" in searched.stdout


def _load_config_module(name):
    spec = importlib.util.spec_from_file_location(f"config_{name}", REPO_ROOT / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cranfield_default_is_resolved_from_the_config_file(cranfield_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ["bm25", "evaluate"]:
        assert pathlib.Path(_load_config_module(name).get_config("cranfield").data.beir_dir) == cranfield_dir
    assert pathlib.Path(_load_config_module("build_data").get_config("cranfield").data.raw_dir) == cranfield_dir


def test_check_workdir(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    main.check_workdir(str(tmp_path / "new" / "deeper"))  # creatable: fine, and nothing is created
    assert not (tmp_path / "new").exists()
    with pytest.raises(main.CommandLineError, match=r"--workdir=.*afile is a file, not a directory"):
        main.check_workdir(str(tmp_path / "afile"))
    with pytest.raises(main.CommandLineError, match=r"cannot be created: .*afile is a file"):
        main.check_workdir(str(tmp_path / "afile" / "sub"))
    monkeypatch.setattr(main.os, "access", lambda path, mode: False)  # a read-only directory (root writes anyway)
    with pytest.raises(main.CommandLineError, match=r"--workdir=.* is not writable"):
        main.check_workdir(str(tmp_path))
    with pytest.raises(main.CommandLineError, match=r"cannot be created: .* is not writable"):
        main.check_workdir(str(tmp_path / "new"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_workdir_is_one_line(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    done = _cli("bm25", f"--config={BM25_CONFIG}", f"--workdir={tmp_path / 'ro'}", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "is not writable" in done.stderr
    assert list((tmp_path / "ro").iterdir()) == []


def test_is_own_or_important_drops_third_party_info_only():
    def record(level, path):
        return logging.LogRecord("absl", level, path, 1, "message", None, None)

    jax_path = "/venv/site-packages/jax/_src/xla_bridge.py"
    assert not main.is_own_or_important(record(logging.INFO, jax_path))
    assert main.is_own_or_important(record(logging.WARNING, jax_path))
    assert main.is_own_or_important(record(logging.INFO, os.path.join(main.PACKAGE_DIR, "training", "trainer.py")))
