"""Run evaluation (mode `evaluate`):
`distill-ret evaluate --config=configs/evaluate.py:cranfield --workdir=DIR --config.eval.run_path=RUN.trec`.

Judgements come from a qrels file when `eval.qrels_path` is set (preset `qrels`), else from a data set and
split (presets `cranfield`, `pydocs`); with a data set, every query and document id of the run is checked
against its queries and corpus.
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)

PRESETS = ("cranfield", "pydocs", "qrels")  # a data set of common.BEIR_DATA_SETS, or none (qrels from a file)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    config = ml_collections.ConfigDict()

    if preset == "qrels":
        config.data = ml_collections.ConfigDict()
        config.data.name = ""  # data set label; without beir_dir, the builder providing the data
        config.data.beir_dir = ""  # BEIR-layout directory giving the qrels; "" = data.name's export
    else:
        config.data = common.beir_data(preset)
    config.data.split = "test"  # qrels split (qrels/<split>.tsv) of data.beir_dir

    config.eval = common.evaluation("nDCG@10,MRR@10,MRR@100,R@5,R@20,R@100,R@1000,MAP")
    config.eval.run_path = ""  # TREC run file to evaluate (required)
    config.eval.qrels_path = ""  # qrels file; when set, it is used instead of the data set's qrels
    config.eval.qrels_format = "beir"  # format of eval.qrels_path: "beir" (TSV with header) or "trec" (qid 0 docid rel)
    config.eval.name = ""  # output name in the workdir and the table; "" = the run file name minus its final extension
    return config
