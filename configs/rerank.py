"""Teacher reranking of a candidate run (mode `rerank`):
`distill-ret rerank --config=configs/rerank.py:cranfield --workdir=DIR --config.rerank.run_path=RUN.trec
--config.teacher.path=TEACHER`.

teacher.kind: `cross_encoder` (path = a `train` workdir of task cross_encoder, or a BertForSequenceClassification
Hugging Face directory), `dense` (path = a BERT Hugging Face directory, e.g. MiniLM), `run_file` (path = a TREC run).
Presets: `cranfield` (../shared/data, test split), `pydocs` (the pydocs builder's BEIR export, as in configs/bm25.py).
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
    config.data.split = "test"  # qrels split whose queries are reranked and evaluated; "" = every run query, no metrics

    config.rerank = ml_collections.ConfigDict()
    config.rerank.run_path = ""  # candidate TREC run to rerank (required)
    config.rerank.depth = 100  # candidates reranked per query (run order); 0 = all of them
    config.rerank.name = ""  # output name: <workdir>/<name>.trec; "" = rerank-<teacher.kind>-<split>

    config.teacher = ml_collections.ConfigDict()
    config.teacher.kind = "cross_encoder"  # cross_encoder | dense | run_file | bm25
    config.teacher.path = ""  # train workdir or HF directory (cross_encoder), HF directory (dense), TREC run (run_file)
    config.teacher.max_length = 0  # tokens per pair / text; 0 = the checkpoint's training length (256 for HF dirs)
    config.teacher.batch_size = 32  # pairs (or texts) per scoring batch, rounded up to a multiple of the devices
    config.teacher.bucket_step = 32  # padded lengths are multiples of this (one compiled program per length)
    config.teacher.pooling = "mean"  # dense teacher: "mean" or "cls"
    config.teacher.normalize = True  # dense teacher: L2-normalise embeddings (cosine scores)
    config.teacher.show_progress = True  # progress bar while scoring

    config.eval = common.evaluation("nDCG@10,MRR@10,R@100,MAP")
    return config
