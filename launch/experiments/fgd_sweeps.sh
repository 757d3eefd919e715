#!/usr/bin/env bash
# The FGD investigations (README "FGD on pydocs modules"; the record: docs/fgd_pydocs_investigation.md), resumable,
# from the warm-up, the mined negatives and the teacher cache of a finished cranfield_fgd.sh / pydocs_fgd.sh root
# (TABLE_ROOT): one field changed per run against that root's stage-2 FGD, every run retrieved on the test split.
# Beside each setting, the root's own no-KD and FGD runs are linked in (`reference/nokd`, `lambda=1`), so one report
# shows them together.
#
#   ROOT=workdirs/experiments/pydocs_fgd_dv SEEDS="0 1 2" \
#     EXTRA_ARGS="--config.fgd.teacher_temperature=0.05 --config.fgd.distill_visible_only=True" \
#     launch/experiments/pydocs_fgd.sh                      # the table root first (README: 82 min)
#   launch/experiments/fgd_sweeps.sh                        # then these, seed 0
#   SEEDS="1 2" LAMBDAS=4 TEACHERS= STEPS= launch/experiments/fgd_sweeps.sh
#
# Under $ROOT/seedS/ for each stage-2 seed S (the warm-up is TABLE_ROOT's, as in the table):
#   lambda=W/fgd, lambda=W/fgd_mv      FGD with fgd.contrastive_weight W (eq. 13's λ; lambda=1, the table's FGD, is
#                                      linked in when LAMBDAS is not empty)
#   temperature=T/{fgd,fgd_mv}         FGD with the teacher's temperature fgd.teacher_temperature T (eq. 5 and 10)
#   teacher=bm25/{dockd,fgd,fgd_all}   the teacher is BM25 with the statistics of the long documents, reading each
#                                      document whole (teacher.kind=bm25, empty path), τ_t = 1 (BM25 scores are a few
#                                      units apart, cosines hundredths): document KD on every pair; FGD with BASE_ARGS
#                                      (on pydocs: distilling the visible pairs only) and, when BASE_ARGS distils the
#                                      visible pairs only, on every pair (fgd_all)
#   teacher=NAME/{dockd,fgd}           a TEACHERS entry NAME=DIR: the teacher is the BERT Hugging Face directory DIR
#                                      (e.g. a student written by `distill-ret export`), scored as DENSE_TEACHER_ARGS
#                                      says, τ_t and the pairs distilled from BASE_ARGS: document KD and FGD (its own
#                                      cache $ROOT/teacher_NAME_piece_scores.npz); an entry NAME=cross_encoder:DIR
#                                      names a cross_encoder training run (configs/cross_encoder.py) instead, scored
#                                      at its training length with CROSS_ENCODER_ARGS
#   steps=N/{nokd,fgd}                 stage 2 for N steps instead of the preset's 60 (dev evaluation and checkpoints
#                                      every N/3 steps; the test run reads the best dev checkpoint, as the table's do)
#   pieces=P,S,PN,SN/{fgd,fgd_mv}      FGD distilling the positive's first P passages and S sentences against PN
#                                      mined negative passages and SN negative sentences (data.num_passages,
#                                      num_sentences, passage_negatives, sentence_negatives; the table's are the
#                                      preset's), with its own teacher cache $ROOT/teacher_pieces=P,S,PN,SN.npz
#   reference/nokd                     a link to TABLE_ROOT/seedS/nokd
# Each training workdir gets `train.done` when its run ends and holds its test run (retrieve-test.*); fgd_mv is the
# FGD student with multi-vector scoring (γ = 0.4). A stage whose output exists is skipped.
#
# Environment: DATASET (pydocs | cranfield: the preset configs/fgd.py:<DATASET>; default pydocs), TABLE_ROOT (default
# workdirs/experiments/pydocs_fgd_dv, or cranfield_fgd), ROOT (default workdirs/experiments/<DATASET>_fgd_sweeps),
# SEEDS (default 0), LAMBDAS (default "2 4"), TEMPERATURES (default none: positive numbers), TEACHERS (default bm25;
# entries bm25, NAME=DIR or NAME=cross_encoder:DIR; "" skips), DENSE_TEACHER_ARGS (default
# "--config.teacher.pooling=cls --config.teacher.normalize=True --config.teacher.max_length=512": an exported normalised
# [CLS] student), CROSS_ENCODER_ARGS (default "--config.fgd.teacher_temperature=1.0
# --config.teacher.score_distilled_only=True": logits a few units apart, and only the distilled pairs scored), STEPS
# (default 180; "" skips),
# PIECES (default none: settings P,S,PN,SN of positive integers, e.g. "2,4,2,4 4,12,4,8"),
# BASE_ARGS (the table root's EXTRA_ARGS; default on pydocs the distill-visible-only flags above, on cranfield none),
# CACHE (the piece-score cache of the lambda, temperature and steps runs, which keep the table's teacher: default
# TABLE_ROOT/teacher_piece_scores.npz; another when BASE_ARGS changes the piece counts, e.g. a PIECES setting's),
# DISTILL_RET (default distill-ret), DRY=1 (print each stage's command instead of running it). Ends with
# `distill-ret report` over $ROOT.
set -euo pipefail
cd "$(dirname "$0")/../.."

DATASET=${DATASET:-pydocs}
case "$DATASET" in
  pydocs) TABLE_ROOT=${TABLE_ROOT:-workdirs/experiments/pydocs_fgd_dv}
          BASE_ARGS=${BASE_ARGS-"--config.fgd.teacher_temperature=0.05 --config.fgd.distill_visible_only=True"} ;;
  cranfield) TABLE_ROOT=${TABLE_ROOT:-workdirs/experiments/cranfield_fgd}
             BASE_ARGS=${BASE_ARGS-} ;;
  *) echo "$0: DATASET must be cranfield or pydocs, got '$DATASET'" >&2; exit 2 ;;
esac
ROOT=${ROOT:-workdirs/experiments/${DATASET}_fgd_sweeps}
SEEDS=${SEEDS-0}
LAMBDAS=${LAMBDAS-"2 4"}
TEMPERATURES=${TEMPERATURES-}
for temperature in $TEMPERATURES; do
  if [[ ! $temperature =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ || $temperature =~ ^[0.]+$ ]]; then
    echo "$0: TEMPERATURES takes positive numbers, got '$temperature'" >&2
    exit 2
  fi
done
TEACHERS=${TEACHERS-bm25}
STEPS=${STEPS-180}
PIECES=${PIECES-}
for pieces in $PIECES; do
  if [[ ! $pieces =~ ^[1-9][0-9]*(,[1-9][0-9]*){3}$ ]]; then
    echo "$0: PIECES takes settings P,S,PN,SN of positive integers, got '$pieces'" >&2
    exit 2
  fi
done
for teacher in $TEACHERS; do
  if [[ $teacher != bm25 && ! $teacher =~ ^[A-Za-z0-9_.-]+=.+$ ]]; then
    echo "$0: TEACHERS takes bm25, NAME=DIR (a BERT Hugging Face directory) or NAME=cross_encoder:DIR (a" \
      "cross_encoder run), got '$teacher'" >&2
    exit 2
  fi
done
DENSE_TEACHER_ARGS=${DENSE_TEACHER_ARGS-"--config.teacher.pooling=cls --config.teacher.normalize=True
  --config.teacher.max_length=512"}
CROSS_ENCODER_ARGS=${CROSS_ENCODER_ARGS-"--config.fgd.teacher_temperature=1.0
  --config.teacher.score_distilled_only=True"}
CLI=${DISTILL_RET:-distill-ret}
DRY=${DRY:-0}
PRESET=configs/fgd.py:$DATASET
MEASURES=MRR@100,nDCG@10,R@100
GAMMA=0.4  # multi-vector weight of fgd_mv (the paper's best)
NEGATIVES=$TABLE_ROOT/negatives/negatives.jsonl
CACHE=${CACHE:-$TABLE_ROOT/teacher_piece_scores.npz}

for needed in "$TABLE_ROOT/stage1/train.done" "$NEGATIVES"; do
  if [[ ! -e $needed && $DRY != 1 ]]; then
    echo "$0: $needed is missing: run launch/experiments/${DATASET}_fgd.sh with ROOT=$TABLE_ROOT first" >&2
    exit 2
  fi
done

STAGE_TAG="${DATASET}_fgd_sweeps"
source launch/experiments/stages.sh  # stage NAME OUTPUT COMMAND...

# train_and_retrieve NAME WORKDIR SEED [GAMMA_DIR] -- ARGS...: stage 2 from the table's warm-up and negatives with
# ARGS, its test run in WORKDIR, and when GAMMA_DIR is given the multi-vector test run there.
train_and_retrieve() {
  local name=$1 workdir=$2 seed=$3 mv=$4
  shift 5
  stage "$name" "$workdir/train.done" train "$workdir" --config.train.seed="$seed" "$@"
  stage "$name/retrieve" "$workdir/retrieve-test.metrics.json" retrieve "$workdir" "$workdir"
  if [[ -n $mv ]]; then
    stage "${name}_mv/retrieve" "$mv/retrieve-test.metrics.json" retrieve "$mv" "$workdir" --config.retrieve.gamma=$GAMMA
  fi
}

train() {
  local workdir=$1
  shift
  run "$CLI" train --config="$PRESET" --workdir="$workdir" --config.model.init_from="$TABLE_ROOT/stage1" \
    --config.data.negatives_file="$NEGATIVES" $BASE_ARGS "$@" && run touch "$workdir/train.done"
}

retrieve() {
  local workdir=$1 model=$2
  shift 2
  run "$CLI" retrieve --config="$PRESET" --workdir="$workdir" --config.model.init_from="$model" \
    --config.retrieve.split=test --config.retrieve.measures="$MEASURES" $BASE_ARGS "$@"
}

# link NAME TARGET: NAME becomes a symbolic link to TARGET, a run of the table root (said and skipped if missing).
link() {
  if [[ -e $1 || $DRY == 1 ]]; then return; fi
  if [[ ! -d $2 ]]; then
    echo "link $1: skipped ($2 is missing: the table root has not run it)"
    return
  fi
  mkdir -p "$(dirname "$1")"
  ln -s "$(cd "$2" && pwd)" "$1"
}

NOKD=(--config.fgd.passage_distillation=False --config.fgd.sentence_distillation=False)
DOCKD=(--config.fgd.document_distillation=True "${NOKD[@]}")
for seed in $SEEDS; do
  run=$ROOT/seed$seed
  link "$run/reference/nokd" "$TABLE_ROOT/seed$seed/nokd"
  if [[ -n $LAMBDAS ]]; then  # the table's FGD, beside the other weights
    link "$run/lambda=1/fgd" "$TABLE_ROOT/seed$seed/fgd"
    link "$run/lambda=1/fgd_mv" "$TABLE_ROOT/seed$seed/fgd_mv"
  fi
  for weight in $LAMBDAS; do
    [[ $weight == 1 ]] && continue
    train_and_retrieve "seed$seed/lambda=$weight/fgd" "$run/lambda=$weight/fgd" "$seed" "$run/lambda=$weight/fgd_mv" -- \
      --config.teacher.cache_path="$CACHE" --config.fgd.contrastive_weight="$weight"
  done
  for temperature in $TEMPERATURES; do
    train_and_retrieve "seed$seed/temperature=$temperature/fgd" "$run/temperature=$temperature/fgd" "$seed" \
      "$run/temperature=$temperature/fgd_mv" -- --config.teacher.cache_path="$CACHE" \
      --config.fgd.teacher_temperature="$temperature"
  done
  for teacher in $TEACHERS; do
    if [[ $teacher != bm25 ]]; then
      name=${teacher%%=*}
      dir=$run/teacher=$name
      location=${teacher#*=}
      if [[ $location == cross_encoder:* ]]; then
        chosen=(--config.teacher.kind=cross_encoder --config.teacher.path="${location#cross_encoder:}"
                $CROSS_ENCODER_ARGS)
      else
        chosen=(--config.teacher.kind=dense --config.teacher.path="$location" $DENSE_TEACHER_ARGS)
      fi
      train_and_retrieve "seed$seed/teacher=$name/dockd" "$dir/dockd" "$seed" "" -- "${chosen[@]}" "${DOCKD[@]}"
      train_and_retrieve "seed$seed/teacher=$name/fgd" "$dir/fgd" "$seed" "$dir/fgd_mv" -- "${chosen[@]}" \
        --config.teacher.cache_path="$ROOT/teacher_${name}_piece_scores.npz"
      continue
    fi
    dir=$run/teacher=bm25
    lexical=(--config.teacher.kind=bm25 --config.teacher.path= --config.fgd.teacher_temperature=1.0)
    train_and_retrieve "seed$seed/teacher=bm25/dockd" "$dir/dockd" "$seed" "" -- "${lexical[@]}" "${DOCKD[@]}" \
      --config.fgd.distill_visible_only=False
    train_and_retrieve "seed$seed/teacher=bm25/fgd" "$dir/fgd" "$seed" "$dir/fgd_mv" -- "${lexical[@]}" \
      --config.teacher.cache_path="$ROOT/teacher_bm25_piece_scores.npz"
    if [[ $BASE_ARGS == *distill_visible_only=True* ]]; then  # else fgd already distils every pair
      train_and_retrieve "seed$seed/teacher=bm25/fgd_all" "$dir/fgd_all" "$seed" "" -- "${lexical[@]}" \
        --config.teacher.cache_path="$ROOT/teacher_bm25_piece_scores.npz" --config.fgd.distill_visible_only=False
    fi
  done
  for pieces in $PIECES; do
    IFS=, read -r passages sentences passage_negatives sentence_negatives <<< "$pieces"
    train_and_retrieve "seed$seed/pieces=$pieces/fgd" "$run/pieces=$pieces/fgd" "$seed" "$run/pieces=$pieces/fgd_mv" -- \
      --config.teacher.cache_path="$ROOT/teacher_pieces=$pieces.npz" --config.data.num_passages="$passages" \
      --config.data.num_sentences="$sentences" --config.data.passage_negatives="$passage_negatives" \
      --config.data.sentence_negatives="$sentence_negatives"
  done
  for steps in $STEPS; do
    every=$((steps / 3))
    long=(--config.train.num_steps="$steps" --config.evals.dev.every="$every" --config.checkpoint.every="$every")
    train_and_retrieve "seed$seed/steps=$steps/nokd" "$run/steps=$steps/nokd" "$seed" "" -- "${long[@]}" "${NOKD[@]}"
    train_and_retrieve "seed$seed/steps=$steps/fgd" "$run/steps=$steps/fgd" "$seed" "$run/steps=$steps/fgd_mv" -- \
      "${long[@]}" --config.teacher.cache_path="$CACHE"
  done
done

echo "done: metrics under $ROOT (seed*/{reference,lambda=*,temperature=*,teacher=*,pieces=*,steps=*})"
[[ "$DRY" == 1 ]] || "$CLI" report --config=configs/report.py --workdir="$ROOT" --config.report.measures="$MEASURES"
