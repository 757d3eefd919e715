"""Teacher reranking of a candidate run (mode `rerank`):
`distill-ret rerank --config=configs/rerank.py:cranfield --workdir=DIR --config.rerank.run_path=RUN.trec
--config.teacher.path=TEACHER`.

teacher.kind: `cross_encoder` (path = a `train` workdir of task cross_encoder, or a BertForSequenceClassification
Hugging Face directory), `dense` (path = a BERT Hugging Face directory, e.g. MiniLM), `run_file` (path = a TREC run).
Presets: `cranfield` (../shared/data, test split), `pydocs` (the pydocs builder's BEIR export, as in configs/bm25.py).
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
        raise ValueError(f"unknown preset {preset!r} for configs/rerank.py; presets: {sorted(PRESETS)}")
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
    config.data.split = "test"  # qrels split whose queries are reranked and evaluated; "" = every run query, no metrics

    config.rerank = ml_collections.ConfigDict()
    config.rerank.run_path = ""  # candidate TREC run to rerank (required)
    config.rerank.depth = 100  # candidates reranked per query (run order); 0 = all of them
    config.rerank.name = ""  # output name: <workdir>/<name>.trec; "" = rerank-<teacher.kind>-<split>

    config.teacher = ml_collections.ConfigDict()
    config.teacher.kind = "cross_encoder"  # cross_encoder | dense | run_file
    config.teacher.path = ""  # train workdir or HF directory (cross_encoder), HF directory (dense), TREC run (run_file)
    config.teacher.max_length = 0  # tokens per pair / text; 0 = the checkpoint's training length (256 for HF dirs)
    config.teacher.batch_size = 32  # pairs (or texts) per scoring batch, rounded up to a multiple of the devices
    config.teacher.bucket_step = 32  # padded lengths are multiples of this (one compiled program per length)
    config.teacher.pooling = "mean"  # dense teacher: "mean" or "cls"
    config.teacher.normalize = True  # dense teacher: L2-normalise embeddings (cosine scores)
    config.teacher.show_progress = True  # progress bar while scoring

    config.eval = ml_collections.ConfigDict()
    config.eval.measures = "nDCG@10,MRR@10,R@100,MAP"  # ir-measures names, comma-separated
    config.eval.relevance_level = 1  # minimum gain counted as relevant by binary measures
    config.eval.per_query = False  # also write <workdir>/<name>.per_query.tsv
    return config
