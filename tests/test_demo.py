"""The demo end to end on a reduced pydocs (two stdlib packages, chosen by a config override), and stage selection."""
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

from distill_ret import demo, evaluation
from distill_ret.data import formats
from distill_ret.data.builders import pydocs
from distill_ret.errors import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.py"
PACKAGES = ("http", "json")


def test_demo_end_to_end_on_reduced_pydocs(tmp_path):
    work = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "distill_ret.main", "demo", f"--config={DEMO_CONFIG}:small", f"--workdir={work}",
         f"--config.data.packages={PACKAGES!r}", "--config.demo.split=dev"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((work / demo.RESULTS_FILE).read_text())

    collected = pydocs.collect(pydocs.stdlib_dir(), PACKAGES)
    dev_queries = sum(split == "dev" for split in collected.split_of.values())
    assert summary["split"] == "dev"
    assert summary["data"]["passages"]["corpus"] == len(collected.queries)  # one passage per query
    assert summary["data"]["documents"]["corpus"] == len(collected.documents)
    assert summary["data"]["passages"]["queries"]["dev"] == dev_queries > 0
    assert list(summary["seconds"]) == [name for name, _ in demo.STAGES]

    # The table printed is the JSON's results, and those equal a fresh evaluation of the runs written.
    table = done.stdout[done.stdout.index("system"):].splitlines()
    measures = table[0].split()[1:]
    for level in ("passages", "documents"):
        metrics = summary["results"][f"bm25 [{level}]"]
        row = next(line for line in table if line.startswith(f"bm25 [{level}]"))
        assert row.split()[2:] == [f"{metrics[name]:.4f}" for name in measures]
        dataset = formats.read_beir(summary["data"][level]["beir_dir"])
        run = formats.read_run(work / "bm25" / level / "bm25-dev.trec", queries=dataset.queries, corpus=dataset.corpus)
        assert set(run) <= set(dataset.qrels["dev"])
        again = evaluation.evaluate(run, dataset.qrels["dev"], measures)
        assert metrics == pytest.approx(again.aggregate)
        assert 0 < metrics["MRR@10"] <= 1


def _config(**fields):
    spec = importlib.util.spec_from_file_location("demo_config", DEMO_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("small")
    for dotted, value in fields.items():
        section, field = dotted.split(".")
        config[section][field] = value
    return config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"demo.stages": "data,teacher"}, r"unknown stages \['teacher'\]"),
        ({"demo.stages": "bm25"}, "needs the data stage"),
        ({"demo.split": ""}, "must name a query split"),
        ({"demo.split": "validation"}, r"config.demo.split='validation'"),
        ({"demo.levels": "modules"}, "demo.levels must name"),
        ({"bm25.top_k": 0}, r"config.bm25.top_k=0"),
        ({"bm25.stemmer": "klingon"}, r"config.bm25.stemmer='klingon'"),
        ({"eval.measures": "nDCG@10,FOO"}, r"config.eval.measures="),
        ({"data.packages": ("no_such_package",)}, r"config.data.packages="),
    ],
)
def test_bad_demo_configs_are_refused_before_anything_is_built(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message):
        demo.run_from_config(_config(**fields), str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()
