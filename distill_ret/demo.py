"""The built-in demo (mode `demo`): a list of stages run in order on the pydocs corpus, one results table.

Each stage is a function of the shared `DemoState`: it may add data sets (retrieval level -> BEIR data set) and
rows to the results table (system -> measure -> value). Later parts append their stages (teachers, students) to
`STAGES`. The demo prints the table and writes `<workdir>/demo_results.json` (data sizes, metrics, seconds per stage).
"""
import copy
import dataclasses
import pathlib
import time
from collections.abc import Callable

import ml_collections

from distill_ret import bm25, evaluation
from distill_ret.data import builders, formats, sources
from distill_ret.data.builders import pydocs
from distill_ret.errors import ConfigError

RESULTS_FILE = "demo_results.json"


@dataclasses.dataclass
class DemoState:
    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    datasets: dict[str, formats.BeirDataset] = dataclasses.field(default_factory=dict)  # level -> data set
    sources: dict[str, str] = dataclasses.field(default_factory=dict)  # level -> BEIR directory read
    results: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # system -> measure -> value


def _levels(config: ml_collections.ConfigDict) -> list[str]:
    levels = [level.strip() for level in config.demo.levels.split(",") if level.strip()]
    unknown = sorted(set(levels) - set(builders.LEVELS))
    if not levels or unknown:
        raise ConfigError(f"config.demo.levels must name some of {builders.LEVELS}, got {config.demo.levels!r}")
    return levels


def build_data(state: DemoState) -> None:
    """Builds pydocs (TFDS parts and BEIR exports, a no-op when built) and loads each requested level."""
    for level in _levels(state.config):
        level_config = copy.deepcopy(state.config)
        level_config.data.level = level
        dataset, state.sources[level] = sources.load_beir(level_config, str(state.workdir))
        state.datasets[level] = dataset
        splits = ", ".join(f"{split} {len(qrels)}" for split, qrels in dataset.qrels.items())
        print(f"pydocs [{level}]: {len(dataset.corpus)} {level}, queries: {splits}")


def bm25_baseline(state: DemoState) -> None:
    """BM25 on the split's queries at each level; writes runs and metrics under `<workdir>/bm25/<level>/`."""
    settings = bm25.settings_from_config(state.config)
    for level, dataset in state.datasets.items():
        outcome = bm25.run_bm25(
            dataset, state.config.demo.split, settings, str(state.workdir / "bm25" / level), source=state.sources[level],
        )
        state.results[f"bm25 [{level}]"] = outcome.metrics


STAGES: list[tuple[str, Callable[[DemoState], None]]] = [
    ("data", build_data),
    ("bm25", bm25_baseline),
]


def _selected_stages(spec: str) -> list[tuple[str, Callable[[DemoState], None]]]:
    wanted = [name.strip() for name in spec.split(",") if name.strip()]
    known = [name for name, _ in STAGES]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ConfigError(f"config.demo.stages names unknown stages {unknown}; stages: {known}")
    if wanted and "data" not in wanted:
        raise ConfigError(f"config.demo.stages={spec!r}: every later stage needs the data stage")
    return [(name, stage) for name, stage in STAGES if not wanted or name in wanted]


def check_config(config: ml_collections.ConfigDict) -> list[tuple[str, Callable[[DemoState], None]]]:
    """Checks every config value a stage reads before the first stage runs; returns the selected stages."""
    if config.demo.split not in pydocs.SPLITS:
        raise ConfigError(f"config.demo.split={config.demo.split!r}: must name a query split {pydocs.SPLITS}")
    _levels(config)
    builders.check_data_config(config.data)
    bm25.settings_from_config(config)
    return _selected_stages(config.demo.stages)


def run_from_config(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The `demo` mode: runs the selected stages, prints the results table, writes `<workdir>/demo_results.json`."""
    stages = check_config(config)
    state = DemoState(config=config, workdir=pathlib.Path(workdir))
    seconds = {}
    for name, stage in stages:
        start = time.perf_counter()
        stage(state)
        seconds[name] = round(time.perf_counter() - start, 3)
        print(f"stage {name}: {seconds[name]:.1f} s")
    measures = evaluation.measure_names(config.eval.measures)
    summary = {
        "split": config.demo.split,
        "data": {
            level: {"corpus": len(dataset.corpus), "queries": {split: len(q) for split, q in dataset.qrels.items()},
                    "beir_dir": state.sources[level]}
            for level, dataset in state.datasets.items()
        },
        "results": state.results,
        "seconds": seconds,
    }
    if state.results:
        print(f"\npydocs {config.demo.split} queries:")
        print(evaluation.format_table(state.results, measures))
    results_path = state.workdir / RESULTS_FILE
    evaluation.write_json(summary, results_path)
    print(f"wrote {results_path}")
    return summary
