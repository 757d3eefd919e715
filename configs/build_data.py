"""Data building (mode `build-data`): TFDS array_record parts plus a BEIR-layout export.

`distill-ret build-data --config=configs/build_data.py:pydocs --workdir=workdirs/data`

Presets: `pydocs` (the demo corpus from this Python's standard library), `cranfield` (the `beir` builder on
../shared/data/cranfield), `cranfield_long` (`long_docs`: Cranfield passages grouped into long documents),
`beir`, `msmarco_passage`, `msmarco_doc` (set `--config.data.raw_dir=DIR` to the raw files).
Outputs go to `data.data_dir` (by default `workdirs/data` in the repository, shared with the bm25 and evaluate
configs): `<builder>/<variant>_{corpus,queries}/1.0.0/` and `beir_layout/<builder>/<variant>/`.
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)

# preset -> (builder, raw directory); "" = none by default (pydocs reads the stdlib; others need --config.data.raw_dir).
PRESETS = {
    "pydocs": ("pydocs", ""),
    "cranfield": ("beir", str(common.SHARED_DATA / "cranfield")),
    "cranfield_long": ("long_docs", str(common.SHARED_DATA / "cranfield")),
    "beir": ("beir", ""),
    "msmarco_passage": ("msmarco_passage", ""),
    "msmarco_doc": ("msmarco_doc", ""),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    builder, raw_dir = PRESETS[common.pick_preset(PRESETS, arg, __file__)]
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict()
    config.data.name = builder  # builder: beir, msmarco_passage, msmarco_doc, long_docs or pydocs
    common.add_builder_fields(config.data, raw_dir=raw_dir, data_dir=str(common.DATA_DIR))
    if builder == "long_docs":
        common.add_long_docs_fields(config.data)
    if builder == "pydocs":
        common.add_pydocs_fields(config.data)
    return config
