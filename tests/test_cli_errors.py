"""Every mode, given bad config values, missing or corrupt files or a bad workdir: exit status 1, exactly one line
`distill-ret MODE: error: ...` on stderr naming the field or file, no traceback, and every file and directory the
case could touch (its workdir and its inputs) exactly as it was: paths, bytes and permission bits.

Cases run in groups through `tests/cli_driver.py`, which calls the command line's own parse_flags and main in one
process per group while capturing file descriptor 2; a few cases run as real `python -m distill_ret.main`
subprocesses to prove the console script itself.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest

from distill_ret import evaluation
from distill_ret.data import formats

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
DRIVER = REPO_ROOT / "tests" / "cli_driver.py"
MODES = ("build-data", "bm25", "evaluate", "train", "rerank", "export", "demo", "report")
TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # "{S}" is the case's sandbox directory, "{C}" the configs directory
    message: str  # a substring of the one error line

    @property
    def mode(self) -> str:
        """The mode the error line names, or "cli" when the command line names none."""
        return self.argv[0] if self.argv and self.argv[0] in MODES else "cli"


def case(id_: str, *argv: str, message: str) -> Case:
    return Case(id_, argv, message)


BM25 = ("bm25", "--config={C}/bm25.py:cranfield", "--workdir={S}/work", "--config.data.beir_dir={S}/beir")
EVALUATE = ("evaluate", "--config={C}/evaluate.py:cranfield", "--workdir={S}/work", "--config.data.beir_dir={S}/beir",
            "--config.eval.run_path={S}/run.trec")
BUILD = ("build-data", "--config={C}/build_data.py:beir", "--workdir={S}/work", "--config.data.raw_dir={S}/beir",
         "--config.data.data_dir={S}/data")
RERANK = ("rerank", "--config={C}/rerank.py:cranfield", "--workdir={S}/work", "--config.data.beir_dir={S}/beir",
          "--config.rerank.run_path={S}/run.trec", "--config.teacher.kind=run_file",
          "--config.teacher.path={S}/run.trec")
DEMO = ("demo", "--config={C}/demo.py:small", "--workdir={S}/work")
TRAIN = ("train", "--config={C}/t5_seq2seq.py:tiny", "--workdir={S}/work")
EXPORT_HF = ("export", "--config={C}/export.py:hf", "--workdir={S}/work")
EXPORT_CHECKPOINT = ("export", "--config={C}/export.py:checkpoint", "--workdir={S}/work")
RETRIEVE = ("retrieve", "--config={C}/retrieve.py:cranfield", "--workdir={S}/work", "--config.data.beir_dir={S}/beir",
            "--config.model.path={S}/hf_bad")
MINE = ("mine", "--config={C}/fgd.py:tiny", "--workdir={S}/work", "--config.data.raw_dir={S}/beir",
        "--config.data.data_dir={S}/data", "--config.model.init_from={S}/hf_bad")
CANDIDATES = ("candidates", "--config={C}/dgr.py:tiny_stage2", "--workdir={S}/work", "--config.data.beir_dir={S}/beir",
              "--config.identifiers.dir={S}/ids", "--config.model.init_from={S}/hf_bad",
              "--config.teacher.path={S}/run.trec")
REPORT = ("report", "--config={C}/report.py", "--workdir={S}/work")
REPORTED = ("report", "--config={C}/report.py", "--workdir={S}/reported")

IN_PROCESS_CASES = [
    # build-data
    case("build-unknown-builder", *BUILD, "--config.data.name=nope", message="config.data.name='nope'"),
    case("build-missing-raw-dir", *BUILD, "--config.data.raw_dir={S}/absent", message="config.data.raw_dir="),
    case("build-corrupt-input", *BUILD, "--config.data.raw_dir={S}/bad_beir", message="bad_beir/corpus.jsonl:2"),
    case("build-data-dir-is-a-file", *BUILD, "--config.data.data_dir={S}/afile", message="config.data.data_dir="),
    case("build-bad-variant-name", *BUILD, "--config.data.config_name=My Data", message="config.data.config_name="),
    case("build-long-docs-sizes", "build-data", "--config={C}/build_data.py:cranfield_long", "--workdir={S}/work",
         "--config.data.raw_dir={S}/beir", "--config.data.data_dir={S}/data", "--config.data.passages_per_doc=(3, 2)",
         message="config.data.passages_per_doc=(3, 2)"),
    case("build-pydocs-fraction", "build-data", "--config={C}/build_data.py:pydocs", "--workdir={S}/work",
         "--config.data.data_dir={S}/data", "--config.data.dev_fraction=1.5", message="config.data.dev_fraction=1.5"),
    case("build-pydocs-unknown-package", "build-data", "--config={C}/build_data.py:pydocs", "--workdir={S}/work",
         "--config.data.data_dir={S}/data", "--config.data.packages=('no_such_package',)",
         message="config.data.packages="),
    # bm25
    case("bm25-top-k-zero", *BM25, "--config.bm25.top_k=0", message="config.bm25.top_k=0"),
    case("bm25-negative-k1", *BM25, "--config.bm25.k1=-1.0", message="config.bm25.k1=-1.0"),
    case("bm25-unknown-stemmer", *BM25, "--config.bm25.stemmer=klingon", message="config.bm25.stemmer='klingon'"),
    case("bm25-unknown-stopwords", *BM25, "--config.bm25.stopwords=klingon", message="config.bm25.stopwords='klingon'"),
    case("bm25-unknown-measure", *BM25, "--config.eval.measures=nDCG@10,FOO", message="unknown measure 'FOO'"),
    case("bm25-zero-cutoff", *BM25, "--config.eval.measures=R@0", message="cutoff must be a positive integer"),
    case("bm25-relevance-level", *BM25, "--config.eval.relevance_level=0", message="config.eval.relevance_level=0"),
    case("bm25-missing-data", *BM25, "--config.data.beir_dir={S}/absent",
         message="absent/corpus.jsonl: file not found"),
    case("bm25-corrupt-corpus", *BM25, "--config.data.beir_dir={S}/bad_beir", message="bad_beir/corpus.jsonl:2"),
    case("bm25-unknown-split", *BM25, "--config.data.split=nope", message="config.data.split='nope'"),
    case("bm25-split-without-judgements", *BM25, "--config.data.split=empty", message="empty.tsv: no judgements"),
    case("bm25-pydocs-bad-level", "bm25", "--config={C}/bm25.py:pydocs", "--workdir={S}/work",
         "--config.data.data_dir={S}/data", "--config.data.level=sentences", message="config.data.level='sentences'"),
    case("bm25-workdir-under-a-file", "bm25", "--config={C}/bm25.py:cranfield", "--workdir={S}/afile/work",
         "--config.data.beir_dir={S}/beir", message="--workdir="),
    # evaluate
    case("evaluate-no-run", *EVALUATE, "--config.eval.run_path=", message="config.eval.run_path is required"),
    case("evaluate-missing-run", *EVALUATE, "--config.eval.run_path={S}/absent.trec", message="absent.trec"),
    case("evaluate-corrupt-run", *EVALUATE, "--config.eval.run_path={S}/bad.trec", message="bad.trec:2"),
    case("evaluate-missing-qrels", *EVALUATE, "--config.eval.qrels_path={S}/absent.tsv", message="absent.tsv"),
    case("evaluate-qrels-format", *EVALUATE, "--config.eval.qrels_path={S}/qrels.tsv", "--config.eval.qrels_format=csv",
         message="config.eval.qrels_format='csv'"),
    case("evaluate-bad-name", *EVALUATE, "--config.eval.name=a/b", message="config.eval.name='a/b'"),
    case("evaluate-other-runs-metrics", *EVALUATE, "--workdir={S}/evaluated", message="already holds the metrics of"),
    case("evaluate-unknown-measure", *EVALUATE, "--config.eval.measures=bogus@3", message="unknown measure 'bogus@3'"),
    # rerank
    case("rerank-no-run", *RERANK, "--config.rerank.run_path=", message="config.rerank.run_path is required"),
    case("rerank-corrupt-run", *RERANK, "--config.rerank.run_path={S}/bad.trec", message="bad.trec:2"),
    case("rerank-unknown-teacher", *RERANK, "--config.teacher.kind=oracle", message="config.teacher.kind"),
    case("rerank-missing-teacher", *RERANK, "--config.teacher.path={S}/absent", message="config.teacher.path="),
    case("rerank-corrupt-teacher-run", *RERANK, "--config.teacher.path={S}/bad.trec", message="bad.trec:2"),
    case("rerank-teacher-run-lacks-a-query", *RERANK, "--config.teacher.path={S}/partial.trec", message="partial.trec"),
    case("rerank-bm25-teacher-without-corpus", *RERANK, "--config.teacher.kind=bm25",
         message="config.teacher.path='{S}/run.trec': a bm25 teacher needs a BEIR directory (corpus.jsonl)"),
    case("rerank-negative-depth", *RERANK, "--config.rerank.depth=-1", message="config.rerank.depth=-1"),
    case("rerank-unknown-measure", *RERANK, "--config.eval.measures=FOO", message="unknown measure 'FOO'"),
    case("rerank-corrupt-hf-teacher", *RERANK, "--config.teacher.kind=cross_encoder",
         "--config.teacher.path={S}/hf_bad", message="hf_bad"),
    # demo
    case("demo-unknown-split", *DEMO, "--config.demo.split=validation", message="config.demo.split='validation'"),
    case("demo-unknown-stage", *DEMO, "--config.demo.stages=data,tokenize", message="unknown stages"),
    case("demo-top-k-zero", *DEMO, "--config.bm25.top_k=0", message="config.bm25.top_k=0"),
    case("demo-unknown-measure", *DEMO, "--config.eval.measures=FOO", message="unknown measure 'FOO'"),
    # train
    case("train-zero-steps", *TRAIN, "--config.train.num_steps=0", message="config.train.num_steps=0"),
    case("train-zero-checkpoint-every", *TRAIN, "--config.checkpoint.every=0", message="config.checkpoint.every=0"),
    case("train-zero-log-every", *TRAIN, "--config.train.log_every=0", message="config.train.log_every=0"),
    case("train-unknown-task", *TRAIN, "--config.task=nope", message="config.task"),
    case("train-remat-not-a-bool", *TRAIN, "--config.model.remat=yes", message="--config.model.remat=yes"),
    case("train-missing-init-from", *TRAIN, "--config.model.init_from={S}/absent", message="absent"),
    case("train-corrupt-init-from", *TRAIN, "--config.model.init_from={S}/hf_bad", message="hf_bad"),
    case("train-unknown-evaluator-kind", *TRAIN, "--config.evals.dev.kind=oracle",
         message="config.evals.dev.kind='oracle'"),
    case("train-unknown-best-metric", *TRAIN, "--config.checkpoint.best_metric=dev/nope",
         message="config.checkpoint.best_metric='dev/nope'"),
    # export
    case("export-missing-input", *EXPORT_HF, "--config.input_dir={S}/absent", message="absent"),
    case("export-corrupt-safetensors", *EXPORT_HF, "--config.input_dir={S}/hf_bad", message="hf_bad"),
    case("export-missing-run", *EXPORT_CHECKPOINT, "--config.checkpoint.workdir={S}/absent", message="absent"),
    case("export-run-without-checkpoints", *EXPORT_CHECKPOINT, "--config.checkpoint.workdir={S}/work",
         message="checkpoint"),
    # retrieve
    case("retrieve-no-model", *RETRIEVE, "--config.model.path=", message="config.model.path"),
    case("retrieve-missing-model", *RETRIEVE, "--config.model.path={S}/absent", message="absent"),
    case("retrieve-zero-beams", *RETRIEVE, "--config.retrieve.num_beams=0", message="config.retrieve.num_beams=0"),
    case("retrieve-unknown-aggregation", *RETRIEVE, "--config.retrieve.aggregation=mean",
         message="config.retrieve.aggregation='mean'"),
    case("retrieve-unknown-measure", *RETRIEVE, "--config.eval.measures=FOO", message="unknown measure 'FOO'"),
    case("retrieve-fgd-zero-depth", "retrieve", *MINE[1:], "--config.retrieve.depth=0",
         message="config.retrieve.depth=0: must be an integer >= 1"),
    case("retrieve-fgd-nan-gamma", "retrieve", *MINE[1:], "--config.retrieve.gamma=nan",
         message="config.retrieve.gamma=nan: must be a finite number >= 0 (0 = single-vector)"),
    # mine
    case("mine-no-student", *MINE, "--config.model.init_from=", message="config.model.init_from"),
    case("mine-zero-passage-pool", *MINE, "--config.mine.passage_pool=0", message="config.mine.passage_pool=0"),
    case("mine-zero-negatives", *MINE, "--config.data.num_negatives=0", message="config.data.num_negatives=0"),
    case("mine-output-is-a-directory", *MINE, "--config.mine.output={S}/beir", message="config.mine.output="),
    case("mine-unknown-representation", *MINE, "--config.fgd.representation=bogus",
         message="config.fgd.representation"),
    case("train-fgd-negative-teacher-temperature", "train", *MINE[1:], "--config.fgd.teacher_temperature=-1.0",
         message="config.fgd.teacher_temperature=-1.0: must be a finite number >= 0 (0 = τ)"),
    case("train-fgd-distill-visible-only-not-a-bool", "train", *MINE[1:], "--config.fgd.distill_visible_only=3",
         message="flag --config.fgd.distill_visible_only=3: ('Non-boolean argument to boolean flag', '3')"),
    case("train-fgd-score-distilled-only-not-a-bool", "train", *MINE[1:], "--config.teacher.score_distilled_only=3",
         message="flag --config.teacher.score_distilled_only=3: ('Non-boolean argument to boolean flag', '3')"),
    case("train-cross-encoder-no-data", "train", "--config={C}/cross_encoder.py:tiny", "--workdir={S}/work",
         message="set config.data.beir_dir to a BEIR directory, or config.data.name to a builder"),
    case("train-cross-encoder-checkpoints-off-the-dev-schedule", "train", "--config={C}/cross_encoder.py:tiny",
         "--workdir={S}/work", "--config.data.beir_dir={S}/beir", "--config.checkpoint.best_metric=dev/nDCG@10",
         "--config.checkpoint.every=3",
         message="config.checkpoint.every=3 is not a multiple of config.evals.dev.every=2"),
    case("train-cross-encoder-nan-guide-temperature", "train", "--config={C}/cross_encoder.py:tiny",
         "--workdir={S}/work", "--config.data.beir_dir={S}/beir", "--config.guide.kind=dense",
         "--config.guide.path={S}/beir", "--config.guide.temperature=nan",
         message="config.guide.temperature=nan: must be a finite number > 0.0"),
    case("train-dgr-unigram-vocabulary-too-small", "train", "--config={C}/dgr.py:tiny", "--workdir={S}/work",
         "--config.data.beir_dir={S}/beir", "--config.identifiers.dir={S}/ids",
         "--config.identifiers.unigram_vocab_size=16", message="config.identifiers.unigram_vocab_size=16: too small"),
    case("train-dgr-reverse-components-not-a-bool", "train", "--config={C}/dgr.py:tiny", "--workdir={S}/work",
         "--config.identifiers.title.reverse_components=maybe",
         message="--config.identifiers.title.reverse_components=maybe: ('Non-boolean argument"),
    # candidates
    case("candidates-zero-depth", *CANDIDATES, "--config.candidates.depth=0", message="config.candidates.depth=0"),
    case("candidates-pseudo-bounds", *CANDIDATES, "--config.candidates.pseudo.max_words=2",
         message="config.candidates.pseudo.max_words=2"),
    case("candidates-missing-teacher", *CANDIDATES, "--config.teacher.path={S}/absent", message="config.teacher.path="),
    case("candidates-corrupt-student", *CANDIDATES, message="hf_bad"),
    # report
    case("report-nothing-to-report", *REPORT, message="nothing to report"),
    case("report-bad-seed-pattern", *REPORT, "--config.report.seed_pattern=(",
         message="config.report.seed_pattern='('"),
    case("report-unknown-baseline", *REPORTED, "--config.report.baseline=nope",
         message="config.report.baseline='nope'"),
    case("report-qrels-without-baseline", *REPORTED, "--config.report.qrels_path={S}/qrels.tsv",
         message="config.report.qrels_path='{S}/qrels.tsv'"),
    case("report-qrels-format", *REPORTED, "--config.report.baseline=bm25/run",
         "--config.report.qrels_path={S}/qrels.tsv", "--config.report.qrels_format=csv",
         message="config.report.qrels_format='csv'"),
    case("report-qrels-of-other-queries", *REPORTED, "--config.report.baseline=bm25/run",
         "--config.report.qrels_path={S}/beir/qrels/train.tsv", message="ranks none of its queries"),
]

SUBPROCESS_CASES = [
    case("cli-unknown-mode", "nomode", "--config={C}/bm25.py", "--workdir={S}/work", message="MODE is one of"),
    case("cli-no-mode", "--config={C}/bm25.py", "--workdir={S}/work", message="MODE is one of"),
    case("cli-no-workdir", "bm25", "--config={C}/bm25.py", message="--config and --workdir are required"),
    case("cli-missing-config-file", "bm25", "--config={S}/absent.py", "--workdir={S}/work", message="absent.py"),
    case("cli-config-file-is-a-directory", "bm25", "--config={S}/beir", "--workdir={S}/work", message="is not a file"),
    case("cli-unknown-preset", "bm25", "--config={C}/bm25.py:nope", "--workdir={S}/work",
         message="unknown preset 'nope'"),
    case("cli-unknown-field", *BM25, "--config.bm25.kk=1", message="the config has no field 'kk'"),
    case("cli-bad-value-syntax", *BM25, "--config.bm25.k1=abc", message="--config.bm25.k1=abc"),
    case("cli-unknown-flag", *BM25, "--bogus", message="Unknown command line flag 'bogus'"),
    case("cli-workdir-is-a-file", "bm25", "--config={C}/bm25.py", "--workdir={S}/afile", message="is a file"),
    case("cli-real-mode-error", *BM25, "--config.bm25.top_k=0", message="config.bm25.top_k=0"),
    case("cli-bad-environment", *BM25, "--distributed", message="DISTILL_RET_NUM_PROCESSES='x'"),
]
SUBPROCESS_ENVIRONMENT = {"DISTILL_RET_NUM_PROCESSES": "x"}


# ---------------------------------------------------------------------------------------------- sandboxes


def write_template(root: pathlib.Path) -> None:
    """The inputs every case may read: a BEIR directory, runs, qrels, a corrupt copy of each, an HF-looking
    directory with corrupt weights, a file where a directory is expected, a workdir holding a user's files, and a
    workdir with two evaluated runs for mode `report`."""
    corpus = {f"d{i}": formats.Document(f"d{i}", f"title {i}", f"wing flutter boundary layer text {i}")
              for i in range(6)}
    queries = {"q1": "wing flutter", "q2": "boundary layer", "q3": "heat"}
    qrels = {"test": {"q1": {"d1": 1}, "q2": {"d2": 2}}, "train": {"q3": {"d3": 1}}}
    formats.write_beir(formats.BeirDataset(corpus, queries, qrels), root / "beir")
    (root / "beir" / "qrels" / "empty.tsv").write_text("query-id\tcorpus-id\tscore\n")
    shutil.copytree(root / "beir", root / "bad_beir")
    with open(root / "bad_beir" / "corpus.jsonl", "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    lines = (root / "bad_beir" / "corpus.jsonl").read_text().splitlines()
    (root / "bad_beir" / "corpus.jsonl").write_text("\n".join([lines[0], lines[-1], *lines[1:-1]]) + "\n")
    formats.write_run({"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d2": 3.0, "d4": 1.0}}, root / "run.trec", tag="bm25")
    formats.write_run({"q1": {"d1": 1.0}}, root / "partial.trec", tag="teacher")
    (root / "bad.trec").write_text("q1 Q0 d1 1 2.5 tag\nq1 Q0 d2 2 not-a-number tag\n")
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (root / "afile").write_text("a file, not a directory\n")
    (root / "work").mkdir()
    (root / "work" / "notes.txt").write_text("the user's own notes\n")
    for system, run in (("bm25", "run.trec"), ("teacher", "partial.trec")):
        scored = evaluation.evaluate(formats.read_run(root / run), qrels["test"], ("MRR@10",))
        evaluation.save_evaluation(scored, root / "reported" / "seed0" / system, "run", per_query=False,
                                   extra={"run": str(root / run), "qrels": "beir [test]"})
    (root / "evaluated").mkdir()
    (root / "evaluated" / "run.metrics.json").write_text(json.dumps({"run": "/elsewhere/run.trec", "measures": {}}))
    (root / "hf_bad").mkdir()
    (root / "hf_bad" / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 30, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 32,
        "num_labels": 1,
    }))
    (root / "hf_bad" / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    (root / "hf_bad" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "wing"]) + "\n")


def snapshot(root: pathlib.Path) -> dict[str, tuple]:
    """Relative path -> (kind, permission bits, bytes) of everything under root, root included."""
    entries = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = path.lstat()
        kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
        entries[str(path.relative_to(root))] = (kind, stat.S_IMODE(info.st_mode),
                                                None if kind == "dir" else path.read_bytes())
    return entries


def expand(argv: tuple[str, ...], sandbox: pathlib.Path) -> list[str]:
    return [arg.replace("{S}", str(sandbox)).replace("{C}", str(CONFIGS)) for arg in argv]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("template")
    write_template(root)
    return root


def make_sandboxes(template: pathlib.Path, parent: pathlib.Path, cases: list[Case]) -> dict[str, tuple]:
    """A copy of the template per case; id -> (sandbox, its snapshot before the case runs)."""
    sandboxes = {}
    for item in cases:
        sandbox = parent / item.id
        shutil.copytree(template, sandbox)
        sandboxes[item.id] = (sandbox, snapshot(sandbox))
    return sandboxes


def environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DISTILL_RET_")}
    return {**env, "PYTHONPATH": str(REPO_ROOT), **extra}


@pytest.fixture(scope="module")
def in_process_results(template, tmp_path_factory) -> dict[str, tuple[dict, pathlib.Path, dict]]:
    """Runs every in-process case, one driver subprocess per mode; id -> (result, sandbox, snapshot before)."""
    parent = tmp_path_factory.mktemp("cases")
    sandboxes = make_sandboxes(template, parent, IN_PROCESS_CASES)
    results = {}
    for mode in dict.fromkeys(item.mode for item in IN_PROCESS_CASES):
        group = [item for item in IN_PROCESS_CASES if item.mode == mode]
        cases_file, results_file = parent / f"{mode}.cases.json", parent / f"{mode}.results.json"
        cases_file.write_text(json.dumps([
            {"id": item.id, "argv": expand(item.argv, sandboxes[item.id][0]), "cwd": str(sandboxes[item.id][0])}
            for item in group
        ]))
        done = subprocess.run([sys.executable, str(DRIVER), str(cases_file), str(results_file)], cwd=parent,
                              env=environment(), capture_output=True, text=True, timeout=TIMEOUT_S)
        assert done.returncode == 0, f"driver for {mode} failed:\n{done.stderr[-3000:]}"
        results.update(json.loads(results_file.read_text()))
    return {item.id: (results[item.id], *sandboxes[item.id]) for item in IN_PROCESS_CASES}


def assert_one_clean_error(item: Case, code: int, stderr: str, sandbox: pathlib.Path, before: dict) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{stderr}"
    prefix = f"distill-ret {item.mode}: error: " if item.mode != "cli" else "distill-ret"
    assert lines[0].startswith(prefix) and ": error: " in lines[0], lines[0]
    assert item.message.replace("{S}", str(sandbox)) in lines[0], lines[0]
    assert code == 1
    assert snapshot(sandbox) == before, "the case changed its workdir or inputs"


@pytest.mark.parametrize("item", IN_PROCESS_CASES, ids=lambda item: item.id)
def test_mode_errors_are_one_line_and_touch_nothing(item, in_process_results):
    result, sandbox, before = in_process_results[item.id]
    assert_one_clean_error(item, result["code"], result["stderr"], sandbox, before)


@pytest.mark.parametrize("item", SUBPROCESS_CASES, ids=lambda item: item.id)
def test_command_line_errors_are_one_line_and_touch_nothing(item, template, tmp_path):
    (sandbox, before), = make_sandboxes(template, tmp_path, [item]).values()
    done = subprocess.run([sys.executable, "-m", "distill_ret.main", *expand(item.argv, sandbox)], cwd=sandbox,
                          env=environment(**SUBPROCESS_ENVIRONMENT), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert_one_clean_error(item, done.returncode, done.stderr, sandbox, before)


def test_the_driver_sees_what_the_console_script_prints(template, tmp_path):
    """The driver is faithful: a mode's error captured in-process equals the console script's stderr."""
    item = case("same", *BM25, "--config.bm25.stemmer=klingon", message="")
    (sandbox, _), = make_sandboxes(template, tmp_path, [item]).values()
    argv = expand(item.argv, sandbox)
    real = subprocess.run([sys.executable, "-m", "distill_ret.main", *argv], cwd=sandbox, env=environment(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    cases_file, results_file = tmp_path / "cases.json", tmp_path / "results.json"
    cases_file.write_text(json.dumps([{"id": "same", "argv": argv, "cwd": str(sandbox)}]))
    subprocess.run([sys.executable, str(DRIVER), str(cases_file), str(results_file)], cwd=tmp_path, env=environment(),
                   check=True, timeout=TIMEOUT_S)
    driven = json.loads(results_file.read_text())["same"]
    assert (driven["code"], driven["stderr"]) == (real.returncode, real.stderr)
    assert real.stderr.startswith("distill-ret bm25: error: config.bm25.stemmer='klingon'")


def test_running_out_of_device_memory_is_one_line(tmp_path):
    """An allocation no device can make (a 2**40-wide T5 MLP) ends as the one error line, naming the remedies."""
    argv = ["train", f"--config={CONFIGS}/t5_seq2seq.py:tiny", f"--workdir={tmp_path}/work",
            f"--config.model.d_ff={2 ** 40}"]
    done = subprocess.run([sys.executable, "-m", "distill_ret.main", *argv], cwd=tmp_path, env=environment(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("distill-ret train: error: the device ran out of memory (") and "bytes" in last
    assert "config.train.grad_accum_steps" in last


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_file_operation_the_system_refuses_is_one_line(template, tmp_path):
    """A workdir nobody can create, even as root (under /proc, where mkdir fails though the directory reads as
    writable to root): the job's first write fails, and the error is one line naming the path."""
    workdir = f"/proc/distill-ret-{os.getpid()}/work"
    item = case("proc-workdir", "bm25", "--config={C}/bm25.py:cranfield", f"--workdir={workdir}",
                "--config.data.beir_dir={S}/beir", message=f"/proc/distill-ret-{os.getpid()}")
    (sandbox, before), = make_sandboxes(template, tmp_path, [item]).values()
    done = subprocess.run([sys.executable, "-m", "distill_ret.main", *expand(item.argv, sandbox)], cwd=sandbox,
                          env=environment(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert_one_clean_error(item, done.returncode, done.stderr, sandbox, before)
