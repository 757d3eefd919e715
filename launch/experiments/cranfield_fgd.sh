#!/usr/bin/env bash
# The FGD result table on Cranfield as long documents, one command, resumable:
#   bash launch/experiments/cranfield_fgd.sh
# Once: stage 1 (warm-up: contrastive, BM25 negatives, from MiniLM; seed STAGE1_SEED) -> mine (documents, passages
# and sentences with the stage-1 student). For each seed in SEEDS: stage 2 as nokd (no distillation), dockd
# (document-level KD, eq. 5) and fgd (passage + sentence distillation), all from the same stage 1 and negatives ->
# retrieve on the test split for each, and fgd_mv (the fgd student with multi-vector scoring, gamma 0.4). The seed
# spread is therefore stage 2's (one shared warm-up keeps the grid within this CPU's budget). Once, without seeds: BM25, zero-shot MiniLM (dense retrieve, no training) and the
# teacher reranking BM25's top 100 (the cross-encoder truncates each long document to its training length, as the
# students do). Every system's test metrics land in $ROOT/<seedS or baselines>/<system>/*.metrics.json.
#
# A stage whose output exists is skipped: training when its workdir holds `train.done` (written here after the
# trainer returns; an interrupted run resumes from its last checkpoint), mine when the negatives file exists, a
# retrieval / BM25 / rerank when its metrics file exists. One line per stage: ran or skipped, with seconds.
#
# Environment: SEEDS (default "0 1 2"; SEEDS="" runs only the unseeded stages), STAGE1_SEED (default 0), ROOT (default workdirs/experiments/<data set>_fgd, relative to the
# repository root), DISTILL_RET (the CLI, default distill-ret), EXTRA_ARGS (more --config.* overrides for every fgd
# stage, e.g. shorter training; its --config.data.* ones also reach the zero-shot MiniLM baseline, which then reads
# the documents as the students do, e.g. --config.data.max_length=512), DRY=1 (print each stage's command instead of running it), DATASET (cranfield |
# pydocs: the presets configs/fgd.py:<DATASET>_warmup and <DATASET>; pydocs_fgd.sh sets it), SYSTEMS (default
# "nokd dockd fgd": the stage-2 systems of each seed, in the order given; fgd_mv comes with fgd, and NAME_mv adds the
# multi-vector retrieval of NAME's student to NAME's stages, e.g. nokd_mv: the same scoring without distillation, to
# tell what FGD's training brings from what the scoring brings), ABLATIONS (default
# none: the paper's Table 2 rows to add per seed, as $ROOT/seedS/ablation=NAME, from no_passage no_sentence with_doc
# fg_pooling all_pooling separate; FGD with one switch each, the same warm-up, negatives and teacher cache, except
# all_pooling: its own mean-pooled warm-up, $ROOT/stage1_mean_pooling, trained and retrieved once).
set -euo pipefail

DATASET=${DATASET:-cranfield}
SEEDS=${SEEDS-"0 1 2"}  # set but empty: no seeded stage (the shared stages only)
STAGE1_SEED=${STAGE1_SEED:-0}
ROOT=${ROOT:-workdirs/experiments/${DATASET}_fgd}
CLI=${DISTILL_RET:-distill-ret}
EXTRA_ARGS=${EXTRA_ARGS:-}
DATA_ARGS=()  # the --config.data.* words of EXTRA_ARGS: how the documents are read
for word in $EXTRA_ARGS; do [[ $word == --config.data.* ]] && DATA_ARGS+=("$word"); done
DRY=${DRY:-0}
ABLATIONS=${ABLATIONS-}
SYSTEMS=${SYSTEMS:-"nokd dockd fgd"}
GAMMA=0.4  # multi-vector weight of the *_mv retrievals (the paper's best)
MEASURES=MRR@100,nDCG@10,R@100
WARMUP=configs/fgd.py:${DATASET}_warmup
STAGE2=configs/fgd.py:${DATASET}
case "$DATASET" in
  cranfield|pydocs) ;;
  *) echo "$0: DATASET must be cranfield or pydocs, got '$DATASET'" >&2; exit 1 ;;
esac
cd "$(dirname "$0")/../.."

# ablation_switches NAME: sets `switches` to the paper's Table 2 row NAME (FGD with one switch changed).
ablation_switches() {
  case $1 in
    no_passage) switches=(--config.fgd.passage_distillation=False) ;;  # "w/o pass-distill"
    no_sentence) switches=(--config.fgd.sentence_distillation=False) ;;  # "w/o sent-distill"
    with_doc) switches=(--config.fgd.document_distillation=True) ;;  # "w/ doc-distill"
    fg_pooling) switches=(--config.fgd.representation=fg_pooling) ;;  # pieces mean-pooled, documents [CLS]
    all_pooling) switches=(--config.fgd.representation=all_pooling --config.model.pooling=mean) ;;
    # pieces encoded as texts of their own: ~10x the tokens of FGD's one encoding per document, so micro-batches of
    # 2 (the same gradient: every loss term is per example, no in-batch negatives) keep a step within 24 GiB
    separate) switches=(--config.fgd.representation=separate --config.train.grad_accum_steps=4) ;;
    *) echo "$0: unknown ablation '$1' (no_passage no_sentence with_doc fg_pooling all_pooling separate)" >&2
       exit 1 ;;
  esac
}
# system_switches NAME: sets `switches` to the stage-2 system NAME's (no KD, document KD or FGD; NAME_mv: NAME's).
system_switches() {
  case ${1%_mv} in
    nokd) switches=(--config.fgd.passage_distillation=False --config.fgd.sentence_distillation=False) ;;
    dockd) switches=(--config.fgd.document_distillation=True --config.fgd.passage_distillation=False
                     --config.fgd.sentence_distillation=False) ;;
    fgd) switches=(--config.teacher.cache_path="$ROOT/teacher_piece_scores.npz") ;;  # shared by the seeds
    *) echo "$0: unknown system '$1' in SYSTEMS (nokd dockd fgd, each also as NAME_mv)" >&2; exit 1 ;;
  esac
}
# every name checked before any stage runs
for system in $SYSTEMS; do system_switches "$system"; done
for ablation in $ABLATIONS; do ablation_switches "$ablation"; done

STAGE_TAG="${DATASET}_fgd"
source launch/experiments/stages.sh  # stage NAME OUTPUT COMMAND...

# train WORKDIR ARGS...: a training stage; train.done marks it finished.
train() {
  local workdir=$1
  shift
  run "$CLI" train --workdir="$workdir" "$@" $EXTRA_ARGS && run touch "$workdir/train.done"
}

# retrieve WORKDIR MODEL ARGS...: the test-split run of MODEL and its metrics in WORKDIR.
retrieve() {
  local workdir=$1 model=$2
  shift 2
  run "$CLI" retrieve --config="$STAGE2" --workdir="$workdir" --config.model.init_from="$model" \
    --config.retrieve.split=test --config.retrieve.measures="$MEASURES" "$@" $EXTRA_ARGS
}

# The preset's values the baselines need: the BEIR export of its long documents, the teacher's kind and path.
source launch/experiments/fgd_preset.sh  # fgd_preset DATASET
fgd_preset "$DATASET"

base=$ROOT/baselines
stage "baselines/data" "$PRESET_EXPORT" \
  "$CLI" build-data --config="$WARMUP" --workdir="$base/data"
stage "baselines/bm25" "$base/bm25/bm25-test.metrics.json" \
  "$CLI" bm25 --config=configs/bm25.py:"$DATASET" --workdir="$base/bm25" --config.data.beir_dir="$PRESET_EXPORT" \
  --config.data.split=test --config.eval.measures="$MEASURES"
# Zero-shot MiniLM: the stage-2 preset's model.init_from (MiniLM) with its own pooling (mean, L2-normalised).
stage "baselines/minilm" "$base/minilm/retrieve-test.metrics.json" \
  "$CLI" retrieve --config="$STAGE2" --workdir="$base/minilm" --config.model.pooling=mean \
  --config.model.normalize=True --config.fgd.representation=all_pooling --config.retrieve.split=test \
  --config.retrieve.measures="$MEASURES" ${DATA_ARGS[@]+"${DATA_ARGS[@]}"}
stage "baselines/teacher" "$base/teacher/teacher-test.metrics.json" \
  "$CLI" rerank --config=configs/rerank.py:"$DATASET" --workdir="$base/teacher" \
  --config.data.beir_dir="$PRESET_EXPORT" --config.data.split=test --config.rerank.run_path="$base/bm25/bm25-test.trec" \
  --config.rerank.depth=100 --config.rerank.name=teacher-test --config.teacher.kind="$PRESET_TEACHER_KIND" \
  --config.teacher.path="$PRESET_TEACHER_PATH" --config.eval.measures="$MEASURES"
stage "stage1" "$ROOT/stage1/train.done" \
  train "$ROOT/stage1" --config="$WARMUP" --config.train.seed="$STAGE1_SEED"
negatives=$ROOT/negatives/negatives.jsonl
stage "mine" "$negatives" \
  "$CLI" mine --config="$STAGE2" --workdir="$ROOT/negatives" --config.model.init_from="$ROOT/stage1" \
  --config.mine.output="$negatives" $EXTRA_ARGS
stage "stage1/retrieve" "$ROOT/stage1/retrieve-test.metrics.json" \
  retrieve "$ROOT/stage1" "$ROOT/stage1"
for seed in $SEEDS; do
  run=$ROOT/seed$seed
  listed=" "  # the stage names of this seed so far: a system named twice (nokd nokd_mv) lists its stages once
  for name in $SYSTEMS; do
    system=${name%_mv}
    system_switches "$system"
    if [[ $listed != *" $system "* ]]; then
      stage "seed$seed/$system" "$run/$system/train.done" \
        train "$run/$system" --config="$STAGE2" --config.train.seed="$seed" --config.model.init_from="$ROOT/stage1" \
        --config.data.negatives_file="$negatives" "${switches[@]}"
      stage "seed$seed/$system/retrieve" "$run/$system/retrieve-test.metrics.json" \
        retrieve "$run/$system" "$run/$system"
      listed+="$system "
    fi
    if [[ ($name == *_mv || $system == fgd) && $listed != *" ${system}_mv "* ]]; then
      stage "seed$seed/${system}_mv/retrieve" "$run/${system}_mv/retrieve-test.metrics.json" \
        retrieve "$run/${system}_mv" "$run/$system" --config.retrieve.gamma="$GAMMA"
      listed+="${system}_mv "
    fi
  done
  for ablation in $ABLATIONS; do
    ablation_switches "$ablation"
    warmup=$ROOT/stage1
    if [[ $ablation == all_pooling ]]; then  # mean-pooled documents: a run cannot change its pooling, so its own warm-up
      warmup=$ROOT/stage1_mean_pooling
      stage "stage1_mean_pooling" "$warmup/train.done" \
        train "$warmup" --config="$WARMUP" --config.train.seed="$STAGE1_SEED" --config.model.pooling=mean \
        --config.fgd.representation=all_pooling
      stage "stage1_mean_pooling/retrieve" "$warmup/retrieve-test.metrics.json" \
        retrieve "$warmup" "$warmup" "${switches[@]}"
    fi
    workdir=$run/ablation=$ablation
    stage "seed$seed/ablation=$ablation" "$workdir/train.done" \
      train "$workdir" --config="$STAGE2" --config.train.seed="$seed" --config.model.init_from="$warmup" \
      --config.data.negatives_file="$negatives" --config.teacher.cache_path="$ROOT/teacher_piece_scores.npz" \
      "${switches[@]}"
    stage "seed$seed/ablation=$ablation/retrieve" "$workdir/retrieve-test.metrics.json" \
      retrieve "$workdir" "$workdir" "${switches[@]}"
  done
done

echo "done: metrics under $ROOT (stage1, seed*/{nokd,dockd,fgd,fgd_mv,...}, baselines/{bm25,minilm,teacher})"
[[ "$DRY" == 1 ]] || "$CLI" report --config=configs/report.py --workdir="$ROOT" --config.report.measures="$MEASURES"
