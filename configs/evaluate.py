"""Run evaluation (mode `evaluate`):
`distill-ret evaluate --config=configs/evaluate.py:cranfield --workdir=DIR --config.eval.run_path=RUN.trec`.

Judgements come from a qrels file when `eval.qrels_path` is set (preset `qrels`), else from a data set and
split (presets `cranfield`, `pydocs`); with a data set, every query and document id of the run is checked
against its queries and corpus.
"""
import pathlib

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DATA_DIR = REPO_ROOT / "workdirs" / "data"

PRESETS = {
    "cranfield": {"name": "cranfield", "beir_dir": str(SHARED_DATA / "cranfield")},
    "pydocs": {"name": "pydocs", "beir_dir": ""},
    "qrels": {"name": "", "beir_dir": ""},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = arg or "cranfield"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for configs/evaluate.py; presets: {sorted(PRESETS)}")
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    config.data.name = PRESETS[preset]["name"]  # data set label; without beir_dir, the builder providing the data
    config.data.beir_dir = PRESETS[preset]["beir_dir"]  # BEIR-layout directory giving the qrels; "" = data.name's export
    if preset == "pydocs":  # the pydocs builder's BEIR export (built on first use, as by configs/build_data.py:pydocs)
        config.data.raw_dir = ""  # stdlib source directory; "" = this Python's
        config.data.data_dir = str(DATA_DIR)  # TFDS output root shared with configs/build_data.py
        config.data.config_name = ""  # name of the built variant; "" = derived from the inputs and options
        config.data.packages = ()  # top-level stdlib packages to read; () = all but the excluded ones
        config.data.dev_fraction = 0.1  # fraction of queries in the dev split
        config.data.test_fraction = 0.1  # fraction of queries in the test split
        config.data.export_beir = True  # the BEIR-layout export is what this job reads
        config.data.level = "passages"  # retrieval unit: "passages" (docstrings) or "documents" (modules)
    config.data.split = "test"  # qrels split (qrels/<split>.tsv) of data.beir_dir

    config.eval = ml_collections.ConfigDict()
    config.eval.run_path = ""  # TREC run file to evaluate (required)
    config.eval.qrels_path = ""  # qrels file; when set, it is used instead of the data set's qrels
    config.eval.qrels_format = "beir"  # format of eval.qrels_path: "beir" (TSV with header) or "trec" (qid 0 docid rel)
    config.eval.measures = "nDCG@10,MRR@10,MRR@100,R@5,R@20,R@100,R@1000,MAP"  # ir-measures names, comma-separated
    config.eval.relevance_level = 1  # minimum gain counted as relevant by binary measures (R@k, MRR, MAP)
    config.eval.per_query = False  # also write <workdir>/<name>.per_query.tsv
    config.eval.name = ""  # output name in the workdir and the table; "" = the run file's name without its final extension
    return config
