"""The report of a workdir (mode `report`): `distill-ret report --config=configs/report.py --workdir=DIR`.

Collects every `*.metrics.json` (one system per path, seeds averaged), every training `metrics.jsonl` and every
`*.margins.json` under the workdir into a results table (printed), `report.md`, `results.json` and PNG plots
(distill_ret/report.py); with `config.report.baseline`, every system against that one, paired by seed, and with
`config.report.qrels_path` a randomization test over queries (distill_ret/significance.py). Preset `default`.
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)

PRESETS = ("default",)  # one preset: every option at its default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    common.pick_preset(PRESETS, arg, __file__)
    config = ml_collections.ConfigDict()

    config.report = ml_collections.ConfigDict()
    config.report.output_dir = ""  # directory of report.md, results.json and the plots; "" = <workdir>/report
    config.report.seed_pattern = r"seed\d+|s\d+"  # a directory whose whole name matches this is a seed of a system
    config.report.systems = ""  # "label=path,label=path": renames these systems and lists them first; "" = sorted
    config.report.measures = ""  # measure columns, comma-separated (e.g. "nDCG@10,MRR@10"); "" = every one found
    config.report.baseline = ""  # a system (label or path) to compare every other one with, seed by seed; "" = none
    config.report.qrels_path = ""  # qrels for a randomization test over queries against the baseline; "" = none
    config.report.qrels_format = "beir"  # beir (query-id corpus-id score TSV) | trec (qid 0 docid rel)
    return config
