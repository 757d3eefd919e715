"""Data building (mode `build-data`): TFDS array_record parts plus a BEIR-layout export.

`distill-ret build-data --config=configs/build_data.py:pydocs --workdir=workdirs/data`

Presets: `pydocs` (the demo corpus from this Python's standard library), `cranfield` (the `beir` builder on
../shared/data/cranfield), `cranfield_long` (`long_docs`: Cranfield passages grouped into long documents),
`beir`, `msmarco_passage`, `msmarco_doc` (set `--config.data.raw_dir=DIR` to the raw files).
Outputs go to `data.data_dir` (by default `workdirs/data` in the repository, shared with the bm25 and evaluate
configs): `<builder>/<variant>_{corpus,queries}/1.0.0/` and `beir_layout/<builder>/<variant>/`.
"""
import pathlib

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DATA_DIR = REPO_ROOT / "workdirs" / "data"

# preset -> (builder, raw directory); "" = none by default (pydocs reads the stdlib; others need --config.data.raw_dir).
PRESETS = {
    "pydocs": ("pydocs", ""),
    "cranfield": ("beir", str(SHARED_DATA / "cranfield")),
    "cranfield_long": ("long_docs", str(SHARED_DATA / "cranfield")),
    "beir": ("beir", ""),
    "msmarco_passage": ("msmarco_passage", ""),
    "msmarco_doc": ("msmarco_doc", ""),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = arg or "pydocs"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for configs/build_data.py; presets: {sorted(PRESETS)}")
    builder, raw_dir = PRESETS[preset]
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict()
    config.data.name = builder  # builder: beir, msmarco_passage, msmarco_doc, long_docs or pydocs
    config.data.raw_dir = raw_dir  # directory with the raw files (pydocs: "" = this Python's stdlib sources)
    config.data.data_dir = str(DATA_DIR)  # TFDS output root; "" = <workdir>/tfds
    config.data.config_name = ""  # name of the built variant; "" = derived from the inputs and options
    config.data.export_beir = True  # also write the BEIR-layout export under <data_dir>/beir_layout/
    if builder == "long_docs":
        config.data.passages_per_doc = (4, 8)  # (min, max) passages grouped into one long document
        config.data.seed = 0  # seed of the grouping
    if builder == "pydocs":
        config.data.packages = ()  # top-level stdlib packages to read, e.g. ("json", "email"); () = all but excluded
        config.data.dev_fraction = 0.1  # fraction of queries in the dev split (by a hash of the name)
        config.data.test_fraction = 0.1  # fraction of queries in the test split
    return config
