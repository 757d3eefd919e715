"""The built-in demo (mode `demo`): `distill-ret demo --config=configs/demo.py --workdir=workdirs/demo`.

Presets: `full` (default: the whole standard library as the pydocs corpus) and `small` (a few packages, for a
quick look or a smoke test). Everything, including the built data, lives under the workdir.
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)

# preset -> stdlib packages read by the pydocs builder; () = all but the excluded ones
PRESETS = {
    "full": (),
    "small": ("email", "http", "json"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    config.data.name = "pydocs"  # builder of the demo corpus
    common.add_builder_fields(config.data, raw_dir="", data_dir="")
    common.add_pydocs_fields(config.data, PRESETS[preset])
    config.data.level = "passages"  # placeholder: each stage sets the level (see demo.levels) it reads

    config.demo = ml_collections.ConfigDict()
    config.demo.stages = ""  # comma-separated stage names to run (in their fixed order); "" = all stages
    config.demo.split = "test"  # query split that is searched and evaluated
    config.demo.levels = "passages,documents"  # retrieval units: docstring passages and/or whole modules

    config.bm25 = common.bm25()
    config.bm25.top_k = 100  # documents kept per query in the runs

    config.eval = common.evaluation("nDCG@10,MRR@10,MRR@100,R@5,R@20,R@100,MAP")
    return config
