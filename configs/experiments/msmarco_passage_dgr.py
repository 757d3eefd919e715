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
_DGR = importlib.util.spec_from_file_location("configs_dgr", _CONFIGS / "dgr.py")
dgr = importlib.util.module_from_spec(_DGR)
_DGR.loader.exec_module(dgr)

PRESETS = ("stage1", "stage2")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return dgr.paper_scale(
        common.pick_preset(PRESETS, arg, __file__),
        name="msmarco_passage",
        max_input_length=128,  # an MS MARCO passage is about 60 words
        title_weight=0.0,  # MS MARCO passages have no titles
        stage1_steps=150000,
        stage2_steps=20000,
        stage2_every=2000,  # stage 2's checkpoint and dev evaluation interval (stage 1: 10,000)
        best_metric="dev/MRR@10",
        measures="MRR@10,R@5,R@20,R@100",
    )
