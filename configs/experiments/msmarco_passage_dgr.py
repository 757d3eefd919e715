"""DGR at paper scale on MS MARCO passage: a T5-base generative retriever, stage 1 (task `dgr`: indexing pairs and
retrieval pairs, plain generation loss) then stage 2 (distilled RankNet over a cross-encoder's ranking of the
student's candidates), evaluated by constrained beam search on MS MARCO dev (MRR@10, R@k).

Presets: `stage1`; `stage2` (configs/dgr.py's stage-2 sections, `add_stage_two`, with paper-scale values: from the
stage-1 run (model.init_from), mode candidates keeps the student's top 100 passages per train query (candidates.depth)
and a cross-encoder teacher (teacher.kind cross_encoder; teacher.path: set it) ranks them with the judged positives;
stage 2 trains on lists of M = 10 passages (distill.list_size; ours, the released M is not known here)).
The DGR paper uses a strong MS MARCO cross-encoder as teacher; the loader reads BERT cross-encoders (a
BertForSequenceClassification HF directory such as cross-encoder/ms-marco-MiniLM-L-6-v2, or a cross-encoder `train`
workdir), not ELECTRA ones. The margins (distill.base_margin 1.0, gap_margin 0.5) are in log-likelihood units, not
the released 300 / 100 on summed identifier scores: tune them on dev.

Raw files (config.data.raw_dir; `.gz` accepted): collection.tsv, queries.train.tsv, qrels.train.tsv,
queries.dev.tsv, qrels.dev.tsv (builder `msmarco_passage`; `qrels.dev.small.tsv` + `queries.dev.small.tsv` give
split `dev_small`). The build is named `msmarco_passage` (data.config_name), so its BEIR export, which the task
reads, is <data_dir>/beir_layout/msmarco_passage/msmarco_passage (data.beir_dir: set it with data.data_dir).
Also needed: a T5-base Hugging Face directory (model.init_from; its SentencePiece tokenizer spells the
identifiers) and a shared identifiers directory. Identifier views: spans of the passage text (MS MARCO passages
have no titles; identifiers.spans.file takes pseudo-queries such as docT5query's, as MINDER and DGR use). The
schedules (stage 1: batch 256, 1e-4, 150k steps; stage 2: batch 64 queries, 5e-5, 20k steps), lengths and beams
are ours: the DGR paper's abstract does not give them.

  RAW=/data/msmarco-passage DATA=/shared/tfds RUNS=/shared/runs/msmarco_passage_dgr T5=/models/t5-base
  CE=/shared/models/ms-marco-MiniLM-L-6-v2 CFG=configs/experiments/msmarco_passage_dgr.py
  P="--config.data.raw_dir=$RAW --config.data.data_dir=$DATA \\
     --config.data.beir_dir=$DATA/beir_layout/msmarco_passage/msmarco_passage --config.identifiers.dir=$RUNS/ids"
  S2="--config.model.init_from=$RUNS/stage1 --config.teacher.path=$CE \\
      --config.distill.candidates_dir=$RUNS/stage2/inputs/candidates"
  distill-ret build-data --config=$CFG:stage1 --workdir=$RUNS/data $P          # once, on one machine

Stage 2 runs mode candidates (student search, teacher ranking; written once by process 0) and then train, with the
same $S2 (stage 2 checks the candidates' fingerprint: same student, teacher, data and identifiers). $CE must be
readable at the same path on every host.
TPU pod (v4-64: 32 chips; batch 256 over data x fsdp = 8 x 4, T5's embed dimension sharded over fsdp):
  TPU_NAME=dgr-v4-64 ZONE=us-central2-b launch/tpu_pod.sh train $CFG:stage1 $RUNS/stage1 $P \\
      --config.model.init_from=$T5 --config.mesh.fsdp=4 --config.mesh.rules=fsdp_model
  TPU_NAME=dgr-v4-64 ZONE=us-central2-b launch/tpu_pod.sh candidates $CFG:stage2 $RUNS/stage2 $P $S2
  TPU_NAME=dgr-v4-64 ZONE=us-central2-b launch/tpu_pod.sh train $CFG:stage2 $RUNS/stage2 $P $S2 \\
      --config.mesh.fsdp=4 --config.mesh.rules=fsdp_model
Multi-GPU (8 x A100/H100 per host, one process per host; 32 examples per GPU in stage 1, 8 queries in stage 2):
  COORDINATOR=node0:12345 NUM_PROCESSES=1 PROCESS_ID=0 launch/gpu_multihost.sh train $CFG:stage1 \\
      $RUNS/stage1 $P --config.model.init_from=$T5
  COORDINATOR=node0:12345 NUM_PROCESSES=1 PROCESS_ID=0 launch/gpu_multihost.sh candidates $CFG:stage2 \\
      $RUNS/stage2 $P $S2
  COORDINATOR=node0:12345 NUM_PROCESSES=1 PROCESS_ID=0 launch/gpu_multihost.sh train $CFG:stage2 \\
      $RUNS/stage2 $P $S2
"""
import importlib.util
import pathlib

import ml_collections

_CONFIGS = pathlib.Path(__file__).parents[1]
_COMMON = importlib.util.spec_from_file_location("configs_common", _CONFIGS / "common.py")
common = importlib.util.module_from_spec(_COMMON)
_COMMON.loader.exec_module(common)
_RETRIEVE = importlib.util.spec_from_file_location("configs_retrieve", _CONFIGS / "retrieve.py")
retrieve = importlib.util.module_from_spec(_RETRIEVE)
_RETRIEVE.loader.exec_module(retrieve)
_DGR = importlib.util.spec_from_file_location("configs_dgr", _CONFIGS / "dgr.py")
dgr = importlib.util.module_from_spec(_DGR)
_DGR.loader.exec_module(dgr)

PRESETS = ("stage1", "stage2")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.pick_preset(PRESETS, arg, __file__)
    root = common.REPO_ROOT / "workdirs" / "msmarco_passage_dgr"
    config = ml_collections.ConfigDict()
    config.task = "dgr"  # registered task (distill_ret/training/tasks.py TASKS)

    config.data = ml_collections.ConfigDict()
    config.data.name = "msmarco_passage"  # builder of the official MS MARCO passage files
    common.add_builder_fields(config.data, raw_dir="", data_dir=str(common.DATA_DIR))
    config.data.config_name = "msmarco_passage"  # fixed build name, so the export's path is known
    config.data.beir_dir = str(common.DATA_DIR / "beir_layout" / "msmarco_passage" / "msmarco_passage")  # export read
    config.data.train_split = "train"  # qrels split whose judged pairs give the retrieval pairs
    config.data.min_positive_gain = 1  # judged passages with at least this gain are retrieval targets
    config.data.indexing_input = "passage"  # indexing input: the passage text
    config.data.indexing_spans = 3  # spans per passage when indexing_input="spans"
    config.data.indexing_span_words = 16  # words per span when indexing_input="spans"
    config.data.retrieval_copies = 1  # copies of the retrieval pairs beside one of the indexing pairs
    config.data.max_input_length = 128  # input tokens (an MS MARCO passage is about 60 words)
    config.data.seed = 0  # seed of the indexing spans

    config.identifiers = retrieve.identifiers()
    config.identifiers.dir = str(root / "identifiers")  # shared
    config.identifiers.max_tokens = 32  # tokens per identifier, EOS included
    config.identifiers.title.weight = 0.0  # MS MARCO passages have no titles
    config.identifiers.atomic.weight = 0.0  # no atomic docids
    config.identifiers.semantic.weight = 0.0  # no semantic docids
    config.identifiers.spans.weight = 1.0  # spans of the passage text (or pseudo-queries from spans.file)
    config.identifiers.spans.per_passage = 10  # spans drawn per passage
    config.identifiers.spans.words = 10  # words per span

    config.model = ml_collections.ConfigDict()  # T5-base (v1.0); ignored when init_from names an HF directory
    config.model.vocab_size = 32128  # T5's SentencePiece vocabulary (ids 0 = pad, 1 = EOS)
    config.model.d_model = 768  # hidden size
    config.model.d_kv = 64  # size of one attention head
    config.model.d_ff = 3072  # feed-forward inner size
    config.model.num_layers = 12  # encoder layers
    config.model.num_decoder_layers = 12  # decoder layers
    config.model.num_heads = 12  # attention heads
    config.model.relative_attention_num_buckets = 32  # position buckets
    config.model.relative_attention_max_distance = 128  # bucket range
    config.model.dropout_rate = 0.1  # dropout in training (evaluation is deterministic)
    config.model.feed_forward_proj = "relu"  # T5 v1.0
    config.model.tie_word_embeddings = True  # T5 v1.0 ties the lm head to the embedding
    config.model.dtype = "bfloat16"  # compute dtype (parameters stay float32)
    config.model.init_from = ""  # the T5-base HF directory, or a dgr run's workdir; "" = random init
    config.model.init_step = "best"  # when init_from is a run: "best", "latest" or a step number

    if preset == "stage1":
        config.train = common.train(batch_size=256, num_steps=150000, learning_rate=1e-4, warmup_steps=1000,
                                    log_every=100)
    else:
        config.train = common.train(batch_size=64, num_steps=20000, learning_rate=5e-5, warmup_steps=200,
                                    log_every=50)
    every = 10000 if preset == "stage1" else 2000
    config.mesh = common.mesh("data_parallel")
    config.checkpoint = common.checkpoint(every=every, keep=2, best_metric="dev/MRR@10", best_mode="max")
    config.evals = ml_collections.ConfigDict()  # named dev evaluators (training.evaluators)
    config.evals.dev = common.evaluator("generative", every)
    config.evals.dev.split = "dev"  # qrels split whose queries are retrieved
    config.evals.dev.num_beams = 20  # beams of the constrained search
    config.evals.dev.length_penalty = 0.0  # identifier score = log-likelihood / length**length_penalty
    config.evals.dev.aggregation = "logsumexp"  # a passage's decoded identifiers per view: sum | max | logsumexp
    config.evals.dev.batch_size = 256  # queries per search (rounded up to the mesh's data x fsdp)
    config.evals.dev.max_query_length = 32  # query tokens
    common.add_measures(config.evals.dev, "MRR@10,R@5,R@20,R@100")
    if preset == "stage2":
        add_stage_two(config, root)
    return config


def add_stage_two(config: ml_collections.ConfigDict, root: pathlib.Path) -> None:
    """configs/dgr.py's stage-2 sections (`stage`, `candidates`, `teacher`, `distill`) with the paper-scale values."""
    dgr.add_stage_two(config, False, config.data.name, root)
    config.model.init_from = str(root / "stage1")  # the stage-1 run (its init_step checkpoint; T5 config from it)
    config.candidates.depth = 100  # student passages per query ranked by the teacher (with the judged positives)
    config.candidates.num_beams = 100  # beams of the student's search (a passage may take several: <= 100 kept)
    config.candidates.batch_size = 256  # queries per search (rounded up to the mesh's data x fsdp)
    config.candidates.max_query_length = 32  # query tokens, as evals.dev
    config.teacher.path = ""  # required: a BERT cross-encoder HF directory or cross-encoder train workdir
    config.teacher.batch_size = 256  # (query, passage) pairs per scoring batch
    config.distill.list_size = 10  # passages per ranked list (M); ours: the released M is not known here
    config.distill.base_margin = 1.0  # ranknet m_base in log-likelihood units (released 300 on summed scores): tune
    config.distill.gap_margin = 0.5  # ranknet m_gap in log-likelihood units (released 100): tune on dev
