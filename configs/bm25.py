"""BM25 baseline (mode `bm25`): `distill-ret bm25 --config=configs/bm25.py:cranfield --workdir=workdirs/bm25`.

Presets: `cranfield` (../shared/data/cranfield, test split), `pydocs` (the demo corpus exported by
`distill-ret build-data --config=configs/build_data.py:pydocs`, built on first use).
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)

PRESETS = ("cranfield", "pydocs")  # each a data set of common.BEIR_DATA_SETS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    config = ml_collections.ConfigDict()

    config.data = common.beir_data(preset)
    config.data.split = "test"  # qrels split whose queries are searched and evaluated; "" = all queries, no metrics

    config.bm25 = common.bm25()
    config.bm25.top_k = 1000  # documents kept per query in the run

    config.eval = common.evaluation("nDCG@10,MRR@10,MRR@100,R@5,R@20,R@100,R@1000,MAP")
    return config
