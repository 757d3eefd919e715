"""Run evaluation (mode `evaluate`):
`distill-ret evaluate --config=configs/evaluate.py:cranfield --workdir=DIR --config.eval.run_path=RUN.trec`.

Judgements come from a BEIR directory + split (presets `cranfield`, `pydocs`) or from a qrels file (preset
`qrels`: set `--config.eval.qrels_path=...`). With a BEIR directory, every query and document id of the run is
checked against its queries and corpus.
"""
import pathlib

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PYDOCS_BEIR = REPO_ROOT / "workdirs" / "data" / "pydocs" / "beir"

PRESETS = {
    "cranfield": {"name": "cranfield", "beir_dir": str(SHARED_DATA / "cranfield")},
    "pydocs": {"name": "pydocs", "beir_dir": str(PYDOCS_BEIR)},
    "qrels": {"name": "", "beir_dir": ""},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = arg or "cranfield"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for configs/evaluate.py; presets: {sorted(PRESETS)}")
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    config.data.name = PRESETS[preset]["name"]  # data set name, for the record
    config.data.beir_dir = PRESETS[preset]["beir_dir"]  # BEIR-layout directory giving the qrels; "" = use eval.qrels_path
    config.data.split = "test"  # qrels split (qrels/<split>.tsv) of data.beir_dir

    config.eval = ml_collections.ConfigDict()
    config.eval.run_path = ""  # TREC run file to evaluate (required)
    config.eval.qrels_path = ""  # qrels file, used when data.beir_dir is ""
    config.eval.qrels_format = "beir"  # format of eval.qrels_path: "beir" (TSV with header) or "trec" (qid 0 docid rel)
    config.eval.measures = "nDCG@10,MRR@10,MRR@100,R@5,R@20,R@100,R@1000,MAP"  # ir-measures names, comma-separated
    config.eval.relevance_level = 1  # minimum gain counted as relevant by binary measures (R@k, MRR, MAP)
    config.eval.per_query = False  # also write <workdir>/<name>.per_query.tsv
    config.eval.name = ""  # output name in the workdir and the table; "" = the run file's name up to its first dot
    return config
