"""DGR at paper scale on Natural Questions (DPR's passage retrieval setting, which SEAL, MINDER, LTRGR and DGR use):
a T5-base generative retriever, stage 1 (task `dgr`: indexing pairs and retrieval pairs, plain generation loss) then
stage 2 (distilled RankNet over a cross-encoder's ranking of the student's candidates), evaluated by constrained
beam search on NQ dev (Success@k, i.e. DPR's top-k accuracy, here against DPR's gold positive passages rather than
answer-string matching).

Presets: `stage1`; `stage2` (configs/dgr.py's stage-2 sections, `add_stage_two`, with paper-scale values: from the
stage-1 run (model.init_from), mode candidates keeps the student's top 100 passages per train question
(candidates.depth) and a cross-encoder teacher (teacher.kind cross_encoder; teacher.path: set it) ranks them with the
gold positives; stage 2 trains on lists of M = 10 passages (distill.list_size; ours, the released M is not known
here)). The DGR paper uses a strong cross-encoder as teacher; the loader reads BERT cross-encoders (a
BertForSequenceClassification HF directory such as cross-encoder/ms-marco-MiniLM-L-6-v2, or a cross-encoder `train`
workdir, e.g. one trained on these NQ pairs), not ELECTRA ones. The margins (distill.base_margin 1.0, gap_margin
0.5) are in log-likelihood units, not the released 300 / 100 on summed identifier scores: tune them on dev.

Raw files (config.data.raw_dir; `.gz` accepted), DPR's layout (builder `nq`, see distill_ret/data/builders/nq.py):
psgs_w100.tsv (id, text, title; 21M Wikipedia passages), nq-train.json and nq-dev.json (DPR's
biencoder-nq-train.json / biencoder-nq-dev.json renamed: question + positive_ctxs with passage_id). The build is
named `nq` (data.config_name), so its BEIR export, which the task reads, is <data_dir>/beir_layout/nq/nq
(data.beir_dir: set it with data.data_dir). Also needed: a T5-base Hugging Face directory (model.init_from; its
SentencePiece tokenizer spells the identifiers) and a shared identifiers directory. Identifier views: the
Wikipedia title and spans of the passage text (MINDER's title and substring views; identifiers.spans.file takes
pseudo-queries instead). The schedules (stage 1: batch 256, 1e-4, 200k steps; stage 2: batch 64 questions, 5e-5,
3k steps, about 3 epochs of NQ's 58.9k train questions), lengths and beams are ours: the DGR paper's abstract does
not give them.

  RAW=/data/dpr-nq DATA=/shared/tfds RUNS=/shared/runs/nq_dgr T5=/models/t5-base CFG=configs/experiments/nq_dgr.py
  CE=/shared/models/ms-marco-MiniLM-L-6-v2
  P="--config.data.raw_dir=$RAW --config.data.data_dir=$DATA --config.data.beir_dir=$DATA/beir_layout/nq/nq \\
     --config.identifiers.dir=$RUNS/ids"
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
Multi-GPU (8 x A100/H100 per host, one process per host; 32 examples per GPU in stage 1, 8 questions in stage 2):
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
        name="nq",
        max_input_length=192,  # a title and 100 words
        title_weight=1.0,  # the Wikipedia page title
        stage1_steps=200000,
        stage2_steps=3000,
        stage2_every=500,  # stage 2's checkpoint and dev evaluation interval (stage 1: 10,000)
        best_metric="dev/Success@20",
        measures="Success@5,Success@20,Success@100,MRR@10",
    )
