"""FGD at paper scale: a BERT-base bi-encoder (512 tokens) on MS MARCO Document, evaluated on MS MARCO Doc dev
(MRR@100, R@100) and TREC DL 2019 documents (nDCG@10, R@100), as in the paper's Table 1.

Presets: `warmup` (stage 1: contrastive loss only, BM25 document negatives), `fgd` (stage 2: eq. 13 with passage and
sentence distillation from a cross-encoder, on negatives mined by the stage-1 student; mode retrieve on MS MARCO
dev), `trecdl19` (the `fgd` student's dense run and metrics on TREC DL 2019).

Raw files (config.data.raw_dir, one directory; `.gz` accepted): msmarco-docs.tsv, msmarco-doctrain-queries.tsv,
msmarco-doctrain-qrels.tsv, msmarco-docdev-queries.tsv, msmarco-docdev-qrels.tsv, and for TREC DL 2019
msmarco-test2019-queries.tsv and 2019qrels-docs.txt (split `trecdl2019`). Builder `msmarco_doc_long` cuts every
body into 100-word passages (data.passage_words; MS MARCO has no passage boundaries), sentences come from pysbd.
Also needed: a BERT-base Hugging Face directory (model.init_from: bert-base-uncased, or the paper's ED-MLM/SimLM
checkpoint) and a cross-encoder teacher (teacher.path: a cross_encoder training workdir or a
BertForSequenceClassification Hugging Face directory). The paper gives τ = 1 (eq. 2, 10), γ = 0.4 for multi-vector
retrieval (retrieve.gamma) and the metrics; λ, batch, learning rate, steps and negatives are not in the paper:
the values here (λ = 1, 128 queries x 8 documents, 2e-5, 3000 steps per stage) are ours.

  RAW=/data/msmarco-doc DATA=/shared/tfds RUNS=/shared/runs/msmarco_doc_fgd BERT=/models/bert-base-uncased
  CE=/models/cross-encoder CFG=configs/experiments/msmarco_doc_fgd.py
  P="--config.data.raw_dir=$RAW --config.data.data_dir=$DATA"
  distill-ret build-data --config=$CFG:warmup --workdir=$RUNS/data $P            # once, on one machine

TPU pod (v4-64: 32 chips; the batch of 128 splits over data x fsdp = 8 x 4):
  TPU_NAME=fgd-v4-64 ZONE=us-central2-b launch/tpu_pod.sh train $CFG:warmup $RUNS/stage1 $P \\
      --config.model.init_from=$BERT --config.mesh.fsdp=4 --config.mesh.rules=fsdp_model
  TPU_NAME=fgd-v4-64 ZONE=us-central2-b launch/tpu_pod.sh mine $CFG:fgd $RUNS/stage2 $P \\
      --config.model.init_from=$RUNS/stage1 --config.teacher.path=$CE
  TPU_NAME=fgd-v4-64 ZONE=us-central2-b launch/tpu_pod.sh train $CFG:fgd $RUNS/stage2 $P \\
      --config.model.init_from=$RUNS/stage1 --config.teacher.path=$CE \\
      --config.data.negatives_file=$RUNS/stage2/inputs/negatives.jsonl --config.mesh.fsdp=4 \\
      --config.mesh.rules=fsdp_model
  TPU_NAME=fgd-v4-64 ZONE=us-central2-b launch/tpu_pod.sh retrieve $CFG:fgd $RUNS/stage2 $P \\
      --config.model.init_from=$RUNS/stage2                                    # MS MARCO dev
  TPU_NAME=fgd-v4-64 ZONE=us-central2-b launch/tpu_pod.sh retrieve $CFG:trecdl19 $RUNS/stage2 $P \\
      --config.model.init_from=$RUNS/stage2                                    # TREC DL 2019

Multi-GPU (one process per 8 x A100/H100 80 GB host; on one host each GPU takes 16 queries x 8 documents of 512
tokens per step, in 2 micro-batches), the same four commands through launch/gpu_multihost.sh, e.g.:
  COORDINATOR=node0:12345 NUM_PROCESSES=1 PROCESS_ID=0 launch/gpu_multihost.sh train $CFG:warmup \\
      $RUNS/stage1 $P --config.model.init_from=$BERT --config.train.grad_accum_steps=2
and likewise `mine $CFG:fgd`, `train $CFG:fgd` (with negatives_file and teacher.path as above) and `retrieve`.
Add --config.teacher.cache_path=$RUNS/stage2/piece_scores.npz to keep the teacher's piece scores between restarts.
A micro-batch of 64 documents of 512 tokens keeps about 44 GB of activations for its backward pass (bfloat16,
`python bench/remat.py`); --config.model.remat=True recomputes them layer by layer instead (about 1 GB kept, about a
third more compute), for devices with less memory or fewer, larger micro-batches.
"""
import importlib.util
import pathlib

import ml_collections

_COMMON = importlib.util.spec_from_file_location("configs_common", pathlib.Path(__file__).parents[1] / "common.py")
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)

PRESETS = ("warmup", "fgd", "trecdl19")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    warmup = preset == "warmup"
    config = ml_collections.ConfigDict()
    config.task = "fgd"  # training task (distill_ret.training.tasks.TASKS)

    config.data = ml_collections.ConfigDict()
    config.data.name = "msmarco_doc_long"  # builder: MS MARCO documents cut into passages, with TREC DL splits
    common.add_builder_fields(config.data, raw_dir="", data_dir=str(common.DATA_DIR))
    config.data.passage_words = 100  # words per passage window of a document body
    config.data.train_split = "train"  # qrels split whose judged documents are the positives
    config.data.min_positive_gain = 1  # judged documents with at least this gain are positives
    config.data.visible_positives_only = False  # keep only pairs whose judged passage is within max_length tokens
    config.data.max_length = 512  # document tokens (one truncated encoding per document)
    config.data.query_max_length = 32  # query tokens
    config.data.num_negatives = 7  # hard negative documents per example
    config.data.num_passages = 4  # positive passages distilled per example (eq. 12, j = 1)
    config.data.num_sentences = 16  # positive sentences distilled per example (eq. 12, j = 2)
    config.data.passage_negatives = 8  # mined negative passages shared by the positive passages
    config.data.sentence_negatives = 16  # mined negative sentences shared by the positive sentences
    config.data.negatives_file = ""  # mode mine's output for this stage; "" = BM25 document negatives (stage 1)

    config.bm25 = common.bm25()

    config.model = ml_collections.ConfigDict()
    config.model.init_from = ""  # HF BERT-base dir (stage 1) or the previous stage's workdir; "" = random init
    config.model.init_step = "best"  # when init_from is a run: "best", "latest" or a step number
    config.model.tokenizer_dir = ""  # tokenizer directory; "" = init_from's
    config.model.dtype = "bfloat16"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    config.model.remat = False  # recompute layer activations in the backward pass: less memory, ~1/3 more compute
    config.model.pooling = "cls"  # [CLS] embeddings, as the paper (eq. 6-7 need them)
    config.model.normalize = False  # dot product of unnormalised embeddings (eq. 1)
    config.model.tied = True  # one encoder for queries and documents
    config.model.hidden_size = 768  # random init only: BERT-base hidden width
    config.model.num_hidden_layers = 12  # random init only: BERT-base layers
    config.model.num_attention_heads = 12  # random init only: BERT-base attention heads
    config.model.intermediate_size = 3072  # random init only: BERT-base FFN width
    config.model.max_position_embeddings = 512  # random init only: position table size

    config.fgd = ml_collections.ConfigDict()
    config.fgd.contrastive_weight = 1.0  # λ of eq. 13 (not given in the paper)
    config.fgd.temperature = 1.0  # τ of eq. 2 and 10 (the paper: 1)
    # A cosine teacher (MiniLM dense, scores in [-1, 1]) gives a near-uniform target at τ = 1 (README "FGD on pydocs").
    config.fgd.teacher_temperature = 0.0  # the teacher's τ in eq. 5 and 10; 0 = τ (the paper: a cross-encoder)
    config.fgd.distill_visible_only = False  # True: distil only pairs whose judged passage is within max_length
    config.fgd.passage_distillation = not warmup  # eq. 12 at passage level (stage 2)
    config.fgd.sentence_distillation = not warmup  # eq. 12 at sentence level (stage 2)
    config.fgd.document_distillation = False  # eq. 5: off in FGD (Table 2 "w/ doc-distill" turns it on)
    config.fgd.representation = "global"  # global-consistent granularity embeddings (eq. 7)

    config.teacher = ml_collections.ConfigDict()
    config.teacher.kind = "cross_encoder"  # teachers.loader kind: cross_encoder | dense | run_file | bm25
    config.teacher.path = ""  # cross-encoder train workdir or HF BertForSequenceClassification dir (stage 2)
    config.teacher.cache_path = ""  # piece-score cache (.npz, fingerprinted); "" = score in memory
    config.teacher.score_distilled_only = False  # score only the pieces of distilled pairs (fgd.distill_visible_only)
    config.teacher.max_length = 0  # tokens per (query, piece) pair; 0 = the checkpoint's training length
    config.teacher.batch_size = 256  # pairs per scoring batch
    config.teacher.bucket_step = 32  # padded lengths are multiples of this
    config.teacher.show_progress = True  # progress bar while the teacher scores pieces
    config.teacher.pooling = "mean"  # dense teacher only: "mean" or "cls"
    config.teacher.normalize = True  # dense teacher only: L2-normalise embeddings

    config.mine = ml_collections.ConfigDict()
    config.mine.output = ""  # negatives file; "" = <workdir>/inputs/negatives.jsonl
    config.mine.passage_pool = 16  # negative passages kept per query (eq. 14)
    config.mine.sentence_pool = 32  # negative sentences kept per query (eq. 15)
    config.mine.batch_size = 256  # texts or documents per encoding batch

    config.train = common.train(batch_size=128, num_steps=3000, learning_rate=2e-5, warmup_steps=300, log_every=20)
    config.mesh = common.mesh("data_parallel")
    config.checkpoint = common.checkpoint(every=1000, keep=2, best_metric="dev/MRR@100", best_mode="max")
    config.evals = ml_collections.ConfigDict()  # named dev evaluators (training.evaluators)
    config.evals.dev = common.evaluator("fgd_dense", 1000)
    config.evals.dev.split = "dev"  # MS MARCO Doc dev queries retrieve over every document
    config.evals.dev.depth = 100  # documents retrieved per query
    config.evals.dev.gamma = 0.0  # multi-vector weight; 0 = single-vector retrieval, as the paper's Table 1
    config.evals.dev.batch_size = 256  # texts or documents per encoding batch
    common.add_measures(config.evals.dev, "MRR@100,R@100")

    trec = preset == "trecdl19"
    config.retrieve = ml_collections.ConfigDict()  # mode retrieve: a dense run of the student
    config.retrieve.split = "trecdl2019" if trec else "dev"  # qrels split whose queries are retrieved
    config.retrieve.depth = 100  # documents written per query
    config.retrieve.gamma = 0.0  # multi-vector weight (the paper's Table 4: 0.4)
    config.retrieve.batch_size = 256  # texts or documents per encoding batch
    config.retrieve.name = ""  # output name: <workdir>/<name>.trec (+ .metrics.json); "" = retrieve-<split>
    config.retrieve.per_query = False  # also write per-query values (<name>.per_query.tsv)
    common.add_measures(config.retrieve, "nDCG@10,R@100" if trec else "MRR@100,R@100")  # the paper's metrics
    return config
