"""FGD bi-encoder for long documents (mode `train`, task `fgd`; mode `mine` between the stages; mode `retrieve`
writes a dense run):

  distill-ret train --config=configs/fgd.py:cranfield_warmup --workdir=workdirs/fgd/stage1
  distill-ret mine  --config=configs/fgd.py:cranfield --workdir=workdirs/fgd/stage2 \
      --config.model.init_from=workdirs/fgd/stage1
  distill-ret train --config=configs/fgd.py:cranfield --workdir=workdirs/fgd/stage2 \
      --config.model.init_from=workdirs/fgd/stage1 \
      --config.data.negatives_file=workdirs/fgd/stage2/inputs/negatives.jsonl
  distill-ret retrieve --config=configs/fgd.py:cranfield --workdir=workdirs/fgd/stage2 \
      --config.model.init_from=workdirs/fgd/stage2

Presets: `cranfield_warmup` (stage 1: contrastive only, BM25 negatives, from MiniLM), `cranfield` (stage 2: FGD with
the part-4 cross-encoder as the teacher at `teacher.path`), `pydocs_warmup` / `pydocs` (the same two stages on the
pydocs builder's long documents: a standard-library module is a document, its docstrings the passages; the teacher is
zero-shot MiniLM as a dense scorer; a cross_encoder run of configs/cross_encoder.py:pydocs can replace it with
teacher.kind=cross_encoder, teacher.path=RUN, fgd.teacher_temperature=1), `tiny_warmup` / `tiny` (a random
2-layer BERT for tests: set data.raw_dir, data.data_dir and model.tokenizer_dir on the command line).
launch/experiments/cranfield_fgd.sh and pydocs_fgd.sh run every stage of the result tables. Table 2 rows are
`config.fgd` switches (see distill_ret/fgd/task.py).
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)

PRESETS = ("cranfield", "cranfield_warmup", "pydocs", "pydocs_warmup", "tiny", "tiny_warmup")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    tiny = preset.startswith("tiny")
    warmup = preset.endswith("warmup")
    pydocs = preset.startswith("pydocs")
    config = ml_collections.ConfigDict()
    config.task = "fgd"  # training task (distill_ret.training.tasks.TASKS)

    config.data = ml_collections.ConfigDict()
    config.data.name = "pydocs" if pydocs else "long_docs"  # long-document builder: long_docs (BEIR grouped) | pydocs
    raw_dir = "" if tiny or pydocs else str(common.SHARED_DATA / "cranfield")
    common.add_builder_fields(config.data, raw_dir=raw_dir, data_dir="" if tiny else str(common.DATA_DIR))
    if pydocs:
        common.add_pydocs_fields(config.data)
    else:
        common.add_long_docs_fields(config.data)
        config.data.passages_per_doc = (2, 4)  # Cranfield abstracts per long document (CPU-sized; paper-like: 4-8)
    config.data.train_split = "train"  # qrels split whose judged documents are the positives
    config.data.min_positive_gain = 1  # judged documents with at least this gain are positives
    config.data.visible_positives_only = False  # keep only pairs whose judged passage is within max_length tokens
    config.data.max_length = 64 if tiny else 192  # document tokens (one truncated encoding per document; CPU-sized)
    config.data.query_max_length = 16 if tiny else 48  # query tokens
    config.data.num_negatives = 2 if tiny else 3  # hard negative documents per example (CPU-sized)
    config.data.num_passages = 4 if tiny else 8  # positive passages distilled per example (eq. 12, j = 1)
    config.data.num_sentences = 8 if tiny else 24  # positive sentences distilled per example (eq. 12, j = 2)
    config.data.passage_negatives = 4 if tiny else 8  # mined negative passages shared by the positive passages
    config.data.sentence_negatives = 6 if tiny else 16  # mined negative sentences shared by the positive sentences
    config.data.negatives_file = ""  # mode mine's output for this stage; "" = BM25 document negatives (stage 1)

    config.bm25 = common.bm25()

    config.model = ml_collections.ConfigDict()
    config.model.init_from = "" if tiny else common.minilm_dir()  # HF BERT dir or an fgd run's workdir; "" = random
    config.model.init_step = "best"  # when init_from is a run: "best", "latest" or a step number
    config.model.tokenizer_dir = ""  # tokenizer directory; "" = init_from's
    config.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    config.model.remat = False  # recompute layer activations in the backward pass: less memory, ~1/3 more compute
    config.model.pooling = "cls"  # "cls" (the paper; eq. 7 needs it) or "mean" (the All pooling row)
    config.model.normalize = False  # L2-normalise query and document embeddings
    config.model.tied = True  # one encoder for queries and documents
    config.model.hidden_size = 32  # random init only: hidden width
    config.model.num_hidden_layers = 2  # random init only: layers
    config.model.num_attention_heads = 4  # random init only: attention heads
    config.model.intermediate_size = 64  # random init only: FFN width
    config.model.max_position_embeddings = 128  # random init only: position table size

    config.fgd = ml_collections.ConfigDict()
    config.fgd.contrastive_weight = 1.0  # λ of eq. 13
    config.fgd.temperature = 1.0  # τ of eq. 2 and 10
    # A cosine teacher (MiniLM dense, scores in [-1, 1]) gives a near-uniform target at τ = 1 (README "FGD on pydocs").
    config.fgd.teacher_temperature = 0.0  # the teacher's τ in eq. 5 and 10; 0 = τ (the paper: a cross-encoder)
    config.fgd.distill_visible_only = False  # distil only pairs whose judged passage is within max_length tokens
    config.fgd.passage_distillation = not warmup  # eq. 12 at passage level
    config.fgd.sentence_distillation = not warmup  # eq. 12 at sentence level
    config.fgd.document_distillation = False  # eq. 5 (document-level KD)
    config.fgd.representation = "global"  # global (eq. 7) | fg_pooling | all_pooling | separate

    config.teacher = ml_collections.ConfigDict()
    config.teacher.kind = "dense" if pydocs else "cross_encoder"  # cross_encoder|dense|run_file|bm25
    config.teacher.path = ("" if tiny else common.minilm_dir() if pydocs
                           else str(common.REPO_ROOT / "workdirs" / "cross_encoder"))  # teacher location
    config.teacher.cache_path = ""  # piece-score cache (.npz, fingerprinted); "" = score in memory
    config.teacher.score_distilled_only = False  # score only the pieces of distilled pairs (fgd.distill_visible_only)
    config.teacher.max_length = 0  # tokens per pair; 0 = the checkpoint's training length
    config.teacher.batch_size = 32  # pairs per scoring batch
    config.teacher.bucket_step = 32  # padded lengths are multiples of this
    config.teacher.show_progress = not tiny  # progress bar while the teacher scores pieces
    config.teacher.pooling = "mean"  # dense teacher: "mean" or "cls"
    config.teacher.normalize = True  # dense teacher: L2-normalise embeddings

    config.mine = ml_collections.ConfigDict()
    config.mine.output = ""  # negatives file; "" = <workdir>/inputs/negatives.jsonl
    config.mine.passage_pool = 4 if tiny else 16  # negative passages kept per query (eq. 14)
    config.mine.sentence_pool = 6 if tiny else 32  # negative sentences kept per query (eq. 15)
    config.mine.batch_size = 8 if tiny else 32  # texts or documents per encoding batch

    every = 3 if tiny else (40 if warmup else 30)  # steps between dev evaluations and checkpoints
    config.train = common.train(batch_size=8, num_steps=3 if tiny else (120 if warmup else 60),
                                learning_rate=1e-3 if tiny else 2e-5, warmup_steps=0 if tiny else 30,
                                log_every=1 if tiny else 10)
    config.mesh = common.mesh("data_parallel")
    config.checkpoint = common.checkpoint(every=every, keep=1,
                                          best_metric="" if tiny else "dev/MRR@100", best_mode="max")
    config.evals = ml_collections.ConfigDict()  # named dev evaluators (training.evaluators)
    config.evals.dev = common.evaluator("fgd_dense", 0 if tiny else every)
    config.evals.dev.split = "dev"  # qrels split whose queries retrieve over every long document
    config.evals.dev.depth = 100  # documents retrieved per query
    config.evals.dev.gamma = 0.0  # multi-vector weight: s_doc + gamma * (max passage + max sentence); 0 = single
    config.evals.dev.batch_size = 8 if tiny else 32  # texts or documents per encoding batch
    common.add_measures(config.evals.dev, "MRR@100,nDCG@10,R@100")

    config.retrieve = ml_collections.ConfigDict()  # mode retrieve: a dense run of the student
    config.retrieve.split = "test"  # qrels split whose queries are retrieved; "" = every query (no metrics)
    config.retrieve.depth = 100  # documents written per query
    config.retrieve.gamma = 0.0  # multi-vector weight: s_doc + gamma * (max passage + max sentence); 0 = single
    config.retrieve.batch_size = 8 if tiny else 32  # texts or documents per encoding batch
    config.retrieve.name = ""  # output name: <workdir>/<name>.trec (+ .metrics.json); "" = retrieve-<split>
    config.retrieve.per_query = False  # also write per-query values (<name>.per_query.tsv)
    common.add_measures(config.retrieve, "MRR@100,nDCG@10,R@100")
    return config
