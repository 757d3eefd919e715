"""BM25 baseline (mode `bm25`): `distill-ret bm25 --config=configs/bm25.py:cranfield --workdir=workdirs/bm25`.

Presets: `cranfield` (../shared/data/cranfield, test split), `pydocs` (the demo corpus exported by
`distill-ret build-data --config=configs/build_data.py:pydocs`, built on first use).
"""
import pathlib

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DATA_DIR = REPO_ROOT / "workdirs" / "data"

PRESETS = {
    "cranfield": {"name": "cranfield", "beir_dir": str(SHARED_DATA / "cranfield")},
    "pydocs": {"name": "pydocs", "beir_dir": ""},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = arg or "cranfield"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for configs/bm25.py; presets: {sorted(PRESETS)}")
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    config.data.name = PRESETS[preset]["name"]  # data set label; without beir_dir, the builder providing the data
    config.data.beir_dir = PRESETS[preset]["beir_dir"]  # BEIR-layout directory; "" = builder data.name's export
    if preset == "pydocs":  # the pydocs builder's BEIR export (built on first use, as by configs/build_data.py:pydocs)
        config.data.raw_dir = ""  # stdlib source directory; "" = this Python's
        config.data.data_dir = str(DATA_DIR)  # TFDS output root shared with configs/build_data.py
        config.data.config_name = ""  # name of the built variant; "" = derived from the inputs and options
        config.data.packages = ()  # top-level stdlib packages to read; () = all but the excluded ones
        config.data.dev_fraction = 0.1  # fraction of queries in the dev split
        config.data.test_fraction = 0.1  # fraction of queries in the test split
        config.data.export_beir = True  # the BEIR-layout export is what this job reads
        config.data.level = "passages"  # retrieval unit: "passages" (docstrings) or "documents" (modules)
    config.data.split = "test"  # qrels split whose queries are searched and evaluated; "" = all queries, no metrics

    config.bm25 = ml_collections.ConfigDict()
    config.bm25.k1 = 1.5  # term-frequency saturation
    config.bm25.b = 0.75  # document-length normalisation
    config.bm25.delta = 0.5  # term-score floor, used by the bm25l and bm25+ methods only
    config.bm25.method = "lucene"  # bm25s scoring variant: robertson, atire, bm25l, bm25+ or lucene
    config.bm25.stopwords = "english"  # stop-word list removed from queries and documents; "" keeps all tokens
    config.bm25.stemmer = ""  # PyStemmer language such as "english"; "" = off
    config.bm25.top_k = 1000  # documents kept per query in the run

    config.eval = ml_collections.ConfigDict()
    config.eval.measures = "nDCG@10,MRR@10,MRR@100,R@5,R@20,R@100,R@1000,MAP"  # ir-measures names, comma-separated
    config.eval.relevance_level = 1  # minimum gain counted as relevant by binary measures (R@k, MRR, MAP)
    config.eval.per_query = False  # also write <workdir>/bm25-<split>.per_query.tsv
    return config
