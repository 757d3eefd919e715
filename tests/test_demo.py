"""The demo: the `small` preset end to end (every system in the report, the table equal to the metrics files, a second
run skipping every finished stage), the jobs that tie the stages together, stage selection and refused configs."""
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from distill_ret import demo, evaluation
from distill_ret.data import formats
from distill_ret.data.builders import pydocs
from distill_ret.demo import stages
from distill_ret.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.py"
STAGE_NAMES = [name for name, _ in demo.STAGES]


def _config(**fields):
    spec = importlib.util.spec_from_file_location("demo_config", DEMO_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("small")
    for dotted, value in fields.items():
        *sections, field = dotted.split(".")
        holder = config
        for section in sections:
            holder = holder[section]
        holder[field] = value
    return config


def _demo(work: pathlib.Path, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    """`distill-ret demo` on the small preset, on one CPU device as `make demo` runs (not the suite's eight)."""
    env = {name: value for name, value in os.environ.items() if name != "XLA_FLAGS"}
    return subprocess.run(
        [sys.executable, "-m", "distill_ret.main", "demo", f"--config={DEMO_CONFIG}:small", f"--workdir={work}"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """The small preset run twice in one workdir: (workdir, first run, its demo_results.json, second run)."""
    cwd = tmp_path_factory.mktemp("cwd")
    work = tmp_path_factory.mktemp("demo") / "work"
    first = _demo(work, cwd)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((work / demo.RESULTS_FILE).read_text())
    second = _demo(work, cwd)
    assert second.returncode == 0, second.stderr[-3000:]
    return work, first, summary, second


def _table_rows(stdout: str) -> tuple[list[str], dict[str, list[str]]]:
    """(measure columns, label -> cells after the seeds column) of the last results table printed."""
    lines = stdout[stdout.rindex("\nsystem ") + 1:].splitlines()
    measures = lines[0].split()[2:]
    rows = {}
    for label, _ in stages.SYSTEMS:
        row = next(line for line in lines[2:] if re.match(rf"{re.escape(label)}\s{{2,}}1\s", line))
        rows[label] = row[len(label):].split()[1:]
    return measures, rows


def test_the_small_demo_reports_every_system_with_the_figures_of_its_metrics_files(small_demo):
    work, first, summary, _ = small_demo
    config = _config()
    measures, rows = _table_rows(first.stdout)
    assert measures == list(evaluation.measure_names(config.eval.measures))
    assert list(rows) == [label for label, _ in stages.SYSTEMS]
    for label, path in stages.SYSTEMS:
        metrics = json.loads((work / f"{path.format(split='test')}.metrics.json").read_text())["measures"]
        assert rows[label] == [f"{metrics[name]:.4f}" for name in measures], label
        assert summary["results"][label] == pytest.approx({name: metrics[name] for name in measures}), label
    assert list(summary["results"]) == [label for label, _ in stages.SYSTEMS]

    # BM25's and FGD's metrics are those of the runs they wrote, evaluated again here.
    state = stages.DemoState(config, work, stages.jobs(config, work))
    for level, path in (("passages", "bm25/passages/bm25-test"), ("documents", "evaluate/fgd/retrieve-test")):
        dataset, _ = state.dataset(level)
        again = evaluation.evaluate(formats.read_run(work / f"{path}.trec"), dataset.qrels["test"], measures)
        stored = json.loads((work / f"{path}.metrics.json").read_text())["measures"]
        assert stored == pytest.approx(again.aggregate)
        assert 0 < stored["MRR@10"] <= 1

    # The data sizes are those of the two packages; the report's files are written and not empty.
    collected = pydocs.collect(pydocs.stdlib_dir(), config.data.packages)
    assert summary["data"]["passages"]["corpus"] == len(collected.queries)  # one passage per query
    assert summary["data"]["documents"]["corpus"] == len(collected.documents)
    assert summary["data"]["passages"]["queries"]["test"] == sum(s == "test" for s in collected.split_of.values())
    assert list(summary["seconds"]) == STAGE_NAMES and summary["skipped"] == []
    report_dir = work / "report"
    markdown = (report_dir / "report.md").read_text()
    assert all(f"| {label} |" in markdown for label, _ in stages.SYSTEMS)
    curves = sorted(path.name for path in report_dir.glob("curves-*.png"))
    assert curves == ["curves-dgr_stage1.png", "curves-dgr_stage2.png", "curves-fgd_stage1.png",
                      "curves-fgd_stage2-fgd.png", "curves-fgd_stage2-no_kd.png"]
    for name in ["metrics.png", *curves]:
        assert (report_dir / name).read_bytes().startswith(b"\x89PNG")


def test_a_second_run_skips_every_finished_stage_and_reports_the_same_table(small_demo):
    work, first, first_summary, second = small_demo
    for name in STAGE_NAMES[:-1]:
        assert f"stage {name}: skipped (done)" in second.stdout
        assert (work / name / demo.MARKER).is_file()
    summary = json.loads((work / demo.RESULTS_FILE).read_text())
    assert summary["skipped"] == STAGE_NAMES[:-1] and list(summary["seconds"]) == ["report"]
    assert summary["results"] == first_summary["results"] and summary["data"] == first_summary["data"]
    assert _table_rows(second.stdout) == _table_rows(first.stdout)


def test_the_jobs_share_one_data_build_one_teacher_one_identifier_set_and_the_demo_measures(tmp_path):
    config = _config()
    jobs = stages.jobs(config, tmp_path)
    tfds = str(tmp_path / "data" / "tfds")
    every = [job for stage_jobs in jobs.values() for job in stage_jobs.values()]
    assert {job.data.data_dir for job in every} == {tfds}
    assert {tuple(job.data.packages) for job in every} == {config.data.packages}
    teachers = [jobs["candidates"]["candidates"].teacher, jobs["fgd_stage2"]["fgd"].teacher]
    for teacher in teachers:
        assert {field: teacher[field] for field in stages.TEACHER_FIELDS} == config.teacher.teacher.to_dict()
    identifiers = jobs["dgr_stage1"]["train"].identifiers.to_dict()
    assert identifiers["dir"] == str(tmp_path / "dgr_stage1" / "identifiers")
    assert jobs["dgr_stage2"]["train"].identifiers.to_dict() == identifiers
    assert jobs["dgr_stage2"]["train"].model.init_from == str(tmp_path / "dgr_stage1")
    assert jobs["dgr_stage2"]["train"] is jobs["candidates"]["candidates"]
    fgd, no_kd = jobs["fgd_stage2"]["fgd"], jobs["fgd_stage2"]["no_kd"]
    assert (fgd.fgd.passage_distillation, fgd.fgd.sentence_distillation) == (True, True)
    assert not any(no_kd.fgd[switch] for switch in stages.DISTILLATION_SWITCHES)
    assert fgd.data.negatives_file == no_kd.data.negatives_file == jobs["mine"]["mine"].mine.output
    assert fgd.model.init_from == no_kd.model.init_from == str(tmp_path / "fgd_stage1")
    evaluate = jobs["evaluate"]
    assert [evaluate[s].model.path for s in ("dgr_stage1", "dgr_stage2")] == [str(tmp_path / "dgr_stage1"),
                                                                              str(tmp_path / "dgr_stage2")]
    assert [evaluate[s].model.init_from for s in ("fgd", "fgd_no_kd")] == [str(tmp_path / "fgd_stage2" / "fgd"),
                                                                           str(tmp_path / "fgd_stage2" / "no_kd")]
    sections = [evaluate["dgr_stage1"].eval, evaluate["fgd"].retrieve, *(job.eval for job in jobs["teacher"].values())]
    assert {(section.measures, section.relevance_level) for section in sections} == {(config.eval.measures, 1)}
    # Every stage a stage needs comes before it.
    assert set(demo.NEEDS) == set(STAGE_NAMES)
    assert all(STAGE_NAMES.index(need) < STAGE_NAMES.index(name) for name, needs in demo.NEEDS.items()
               for need in needs)


def test_a_stage_finished_with_another_config_is_refused_naming_the_fields(tmp_path):
    jobs = stages.jobs(_config(), tmp_path)
    demo.mark_done(tmp_path, "bm25", jobs["bm25"])
    assert demo.is_done(tmp_path, "bm25", jobs["bm25"])
    assert not demo.is_done(tmp_path, "teacher", jobs["teacher"])
    changed = stages.jobs(_config(**{"bm25.k1": 0.9}), tmp_path)
    with pytest.raises(ConfigError, match=r"stage bm25 finished in .* another config \(documents\.bm25\.k1: .*1\.5.*"
                                          r"0\.9.*passages\.bm25\.k1"):
        demo.is_done(tmp_path, "bm25", changed["bm25"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"demo.stages": "data,tokenize"}, r"unknown stages \['tokenize'\]"),
        ({"demo.stages": "bm25"}, r"stage bm25 needs stage data, which has not finished"),
        ({"demo.stages": "data,dgr_stage1,dgr_stage2"}, r"stage dgr_stage2 needs stage candidates"),
        ({"demo.split": ""}, "must name a query split"),
        ({"demo.split": "validation"}, r"config.demo.split='validation'"),
        ({"bm25.top_k": 0}, r"config.bm25.top_k=0"),
        ({"bm25.stemmer": "klingon"}, r"config.bm25.stemmer='klingon'"),
        ({"eval.measures": "nDCG@10,FOO"}, r"config.eval.measures="),
        ({"data.packages": ("no_such_package",)}, r"config.data.packages="),
        ({"teacher.teacher.path": "/no/such/minilm"}, r"config.teacher.teacher.path='/no/such/minilm'"),
        ({"fgd_stage1.train.num_steps": 0}, r"config.fgd_stage1.train.num_steps=0"),
    ],
)
def test_bad_demo_configs_are_refused_before_anything_is_built(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message):
        demo.run_from_config(_config(**fields), str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()
