"""The demo's stages: each one runs the modes of one step of the story, in its own directory under the workdir.

`jobs(config, workdir)` derives every stage's job configs from the demo config (configs/demo.py) without reading or
writing anything: copies of the config's sections with what ties the stages together put in place (the pydocs build
of `config.data`, the split and measures of `config.demo` / `config.eval`, the one teacher `config.teacher.teacher`,
the DGR identifiers of `config.dgr_stage1`, and the paths of earlier stages' outputs). A stage function then runs
its jobs' modes: `bm25`, `rerank`, `train`, `candidates`, `mine`, `retrieve` and `report`.

Layout under the workdir (stage -> directory): data/ (the TFDS build and its BEIR export), bm25/<level>/,
teacher/<level>/ (MiniLM reranking BM25), dgr_stage1/ (with identifiers/), candidates/lists/, dgr_stage2/,
fgd_stage1/, mine/negatives.jsonl, fgd_stage2/{fgd,no_kd}/, evaluate/<system>/ (test runs and metrics; FGD's score
margins), report/.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import pathlib
from collections.abc import Mapping

import ml_collections

from distill_ret import bm25, report, retrieve_mode
from distill_ret.data import formats, sources
from distill_ret.dgr import candidates
from distill_ret.errors import UserError
from distill_ret.fgd import mine
from distill_ret.teachers import rerank
from distill_ret.training import checkpointing, trainer

LEVELS = ("passages", "documents")  # DGR retrieves docstring passages, FGD whole modules
DATA_FIELDS = ("name", "raw_dir", "data_dir", "config_name", "export_beir", "packages", "dev_fraction",
               "test_fraction")  # config.data's builder fields, copied into every job
TEACHER_FIELDS = ("kind", "path", "max_length", "batch_size", "bucket_step", "pooling", "normalize",
                  "show_progress")  # config.teacher.teacher's fields, copied into every job that has a teacher
FGD_VARIANTS = {"fgd": True, "no_kd": False}  # stage-2 run -> distillation on
DISTILLATION_SWITCHES = ("passage_distillation", "sentence_distillation", "document_distillation")
EVALUATED = {"dgr_stage1": "dgr_stage1", "dgr_stage2": "dgr_stage2", "fgd": "fgd_stage2/fgd",
             "fgd_no_kd": "fgd_stage2/no_kd"}  # evaluate/<system> -> the run it evaluates
# (report label, metrics file under the workdir without suffix; {split} = config.demo.split), in table order
SYSTEMS = (
    ("BM25 (passages)", "bm25/passages/bm25-{split}"),
    ("teacher (passages)", "teacher/passages/teacher-{split}"),
    ("DGR stage 1", "evaluate/dgr_stage1/retrieve-{split}"),
    ("DGR", "evaluate/dgr_stage2/retrieve-{split}"),
    ("BM25 (documents)", "bm25/documents/bm25-{split}"),
    ("teacher (documents)", "teacher/documents/teacher-{split}"),
    ("FGD without KD", "evaluate/fgd_no_kd/retrieve-{split}"),
    ("FGD", "evaluate/fgd/retrieve-{split}"),
)
Jobs = dict[str, ml_collections.ConfigDict]  # job name -> the config a mode runs with


class StageStopped(UserError):
    """A training run returned before its last step (SIGTERM saved a checkpoint); running again resumes it."""


@dataclasses.dataclass
class DemoState:
    """What the stages share: the demo config, the workdir, every stage's jobs and the data sets read so far."""

    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    jobs: dict[str, Jobs]  # stage -> its jobs
    datasets: dict[str, tuple[formats.BeirDataset, str]] = dataclasses.field(default_factory=dict)  # level -> read
    report: report.Report | None = None

    def dataset(self, level: str) -> tuple[formats.BeirDataset, str]:
        """The pydocs data set at `level` (documents or passages), built on first use."""
        if level not in self.datasets:
            job = self.jobs["data"][level]
            self.datasets[level] = sources.load_beir(job, str(self.workdir / "data"))
        return self.datasets[level]


# ------------------------------------------------------------------------------------------------ jobs


def data_dir(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> str:
    """The TFDS root of the demo's build: `config.data.data_dir`, else <workdir>/data/tfds (absolute)."""
    return str(pathlib.Path(config.data.data_dir or pathlib.Path(workdir) / "data" / "tfds").absolute())


def _copy(section: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    job = copy.deepcopy(section)
    job.unlock()
    return job


def _with_data(section: ml_collections.ConfigDict, config: ml_collections.ConfigDict, workdir: pathlib.Path,
               level: str) -> ml_collections.ConfigDict:
    """A copy of `section` whose `data` reads the demo's pydocs build at `level`."""
    job = _copy(section)
    for field in DATA_FIELDS:
        job.data[field] = config.data[field]
    job.data.data_dir = data_dir(config, workdir)
    job.data.beir_dir = ""
    job.data.level = level
    return job


def _with_teacher(job: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    for field in TEACHER_FIELDS:
        job.teacher[field] = config.teacher.teacher[field]


def _with_measures(section: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    section.measures = config.eval.measures
    section.relevance_level = config.eval.relevance_level


def jobs(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Jobs]:
    """Every stage's jobs (see the module docstring); reads and writes nothing."""
    root = pathlib.Path(workdir).absolute()
    split = config.demo.split
    found: dict[str, Jobs] = {"data": {}, "bm25": {}, "teacher": {}}
    for level in LEVELS:
        found["data"][level] = _with_data(ml_collections.ConfigDict({"data": config.data}), config, root, level)
        job = _with_data(ml_collections.ConfigDict({"data": config.data, "bm25": config.bm25, "eval": config.eval}),
                         config, root, level)
        job.data.split = split
        found["bm25"][level] = job
        job = _with_data(config.teacher, config, root, level)
        job.data.split = split
        job.rerank.run_path = str(root / "bm25" / level / f"bm25-{split}.trec")
        job.rerank.name = f"teacher-{split}"
        job.eval = _copy(config.eval)
        found["teacher"][level] = job

    stage1 = _with_data(config.dgr_stage1, config, root, "passages")
    stage1.identifiers.dir = str(root / "dgr_stage1" / "identifiers")
    stage2 = _with_data(config.dgr_stage2, config, root, "passages")
    stage2.identifiers = _copy(stage1.identifiers)
    stage2.model.init_from = str(root / "dgr_stage1")
    stage2.candidates.output = ""
    stage2.distill.candidates_dir = str(root / "candidates" / "lists")
    _with_teacher(stage2, config)
    found["dgr_stage1"] = {"train": stage1}
    found["candidates"] = {"candidates": stage2}
    found["dgr_stage2"] = {"train": stage2}

    warmup = _with_data(config.fgd_stage1, config, root, "documents")
    _with_teacher(warmup, config)
    found["fgd_stage1"] = {"train": warmup}
    negatives = str(root / "mine" / "negatives.jsonl")
    fgd_jobs = {}
    for variant, distill in FGD_VARIANTS.items():
        job = _with_data(config.fgd_stage2, config, root, "documents")
        _with_teacher(job, config)
        job.model.init_from = str(root / "fgd_stage1")
        job.mine.output = negatives
        job.data.negatives_file = negatives
        if not distill:
            for switch in DISTILLATION_SWITCHES:
                job.fgd[switch] = False
        fgd_jobs[variant] = job
    found["mine"] = {"mine": fgd_jobs["fgd"]}
    found["fgd_stage2"] = fgd_jobs

    evaluate = {}
    for system, run in EVALUATED.items():
        if system.startswith("dgr"):
            job = _with_data(config.dgr_retrieve, config, root, "passages")
            job.data.split = split
            job.model.path = str(root / run)
            job.identifiers = _copy(stage1.identifiers)
            job.identifiers.dir = ""  # <workdir>/identifiers: the same identifiers again, with the student's tokenizer
            job.retrieve.name = f"retrieve-{split}"
            job.eval = _copy(config.eval)
        else:
            job = _copy(fgd_jobs[run.rpartition("/")[2]])
            job.model.init_from = str(root / run)
            job.retrieve.split = split
            job.retrieve.name = f"retrieve-{split}"
            _with_measures(job.retrieve, config)
        evaluate[system] = job
    found["evaluate"] = evaluate
    return found


# ------------------------------------------------------------------------------------------------ stages


def build_data(state: DemoState) -> None:
    """Builds pydocs (TFDS parts and BEIR exports; a no-op when built) and reads both levels."""
    for level in LEVELS:
        dataset, _ = state.dataset(level)
        splits = ", ".join(f"{split} {len(qrels)}" for split, qrels in dataset.qrels.items())
        print(f"pydocs [{level}]: {len(dataset.corpus)} {level}, queries: {splits}")


def bm25_baseline(state: DemoState) -> None:
    """BM25 on the split's queries at both levels (mode bm25)."""
    for level, job in state.jobs["bm25"].items():
        bm25.run_from_config(job, str(state.workdir / "bm25" / level))


def teacher(state: DemoState) -> None:
    """The zero-shot MiniLM teacher reranks BM25's top candidates at both levels (mode rerank)."""
    for level, job in state.jobs["teacher"].items():
        rerank.run_from_config(job, str(state.workdir / "teacher" / level))


def train(job: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    """Mode train in `workdir` (a finished run only rebuilds its task); StageStopped unless it reached its last step,
    so that a stage cut short is never marked done."""
    trainer.run_from_config(job, str(workdir))
    step = checkpointing.read_run_record(workdir, "latest")[0]
    if step != job.train.num_steps:
        raise StageStopped(f"the training run in {workdir} stopped at step {step} of {job.train.num_steps}; run the "
                           "demo again to resume it")


def dgr_stage1(state: DemoState) -> None:
    """DGR stage 1: a random T5 learns to generate the passages' identifiers (mode train)."""
    train(state.jobs["dgr_stage1"]["train"], state.workdir / "dgr_stage1")


def dgr_candidates(state: DemoState) -> None:
    """The stage-1 student's top passages for the train queries, ranked by the teacher (mode candidates)."""
    candidates.run_from_config(state.jobs["candidates"]["candidates"], str(state.workdir / "candidates"))


def dgr_stage2(state: DemoState) -> None:
    """DGR stage 2: the student distils the teacher's ranking of its candidates (mode train)."""
    train(state.jobs["dgr_stage2"]["train"], state.workdir / "dgr_stage2")


def fgd_stage1(state: DemoState) -> None:
    """FGD warm-up: MiniLM trained contrastively with BM25 negatives on whole modules (mode train)."""
    train(state.jobs["fgd_stage1"]["train"], state.workdir / "fgd_stage1")


def fgd_mine(state: DemoState) -> None:
    """The warmed-up student's hard negative documents, passages and sentences (mode mine)."""
    mine.mine_from_config(state.jobs["mine"]["mine"], str(state.workdir / "mine"))


def fgd_stage2(state: DemoState) -> None:
    """FGD (MiniLM's piece scores distilled) and FGD without KD (the same run, distillation off) (mode train)."""
    for variant, job in state.jobs["fgd_stage2"].items():
        print(f"fgd_stage2/{variant}:")
        train(job, state.workdir / "fgd_stage2" / variant)


def evaluate(state: DemoState) -> None:
    """Test runs and metrics of every student (mode retrieve; FGD's also writes its score margins, Figure 4)."""
    for system, job in state.jobs["evaluate"].items():
        print(f"evaluate {system}:")
        retrieve_mode.run_from_config(job, str(state.workdir / "evaluate" / system))


def systems(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> list[tuple[str, str]]:
    """(label, metrics path without suffix) of every system in SYSTEMS whose metrics file is in the workdir."""
    named = [(label, path.format(split=config.demo.split)) for label, path in SYSTEMS]
    return [(label, path) for label, path in named if (workdir / f"{path}{report.collect.METRICS_SUFFIX}").is_file()]


def build_report(state: DemoState) -> None:
    """The results table, report.md and the plots of every system present, in <workdir>/report/ (mode report).

    Systems appear under their SYSTEMS labels, in that order; the measures are config.eval's."""
    options = report.ReportOptions(
        output_dir=str(state.workdir / "report"), measures=state.config.eval.measures,
        systems=",".join(f"{label}={path}" for label, path in systems(state.config, state.workdir)))
    state.report = report.build_report(state.workdir, options)
    print(state.report.table)
    print(f"wrote {len(state.report.files)} files to {state.report.output_dir}")


def results(state: DemoState) -> Mapping[str, dict[str, float]]:
    """system label -> measure -> value, from the report (empty before it ran)."""
    return {system.label: system.mean for system in state.report.systems} if state.report else {}
