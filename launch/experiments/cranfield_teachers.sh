#!/usr/bin/env bash
# The Cranfield teacher table (README "Teachers on Cranfield"), resumable: every stage is skipped when its output
# exists.
#
#   launch/experiments/cranfield_teachers.sh            # ROOT=workdirs/experiments/cranfield_teachers
#
# Stages: the cross-encoder teacher (configs/cross_encoder.py:cranfield, 600 steps, best by dev nDCG@10) in
# $CROSS_ENCODER -> bench/cranfield_teachers.py (BM25, zero-shot MiniLM dense, MiniLM reranking BM25's top 100, the
# cross-encoder reranking BM25's top 100; test split) -> each run scored by mode evaluate -> mode report over $ROOT.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOT=${ROOT:-workdirs/experiments/cranfield_teachers}
CROSS_ENCODER=${CROSS_ENCODER:-workdirs/cross_encoder}
DISTILL_RET=${DISTILL_RET:-distill-ret}
PYTHON=${PYTHON:-python}
MEASURES=nDCG@10,MRR@10,R@10,R@100

source launch/experiments/stages.sh  # stage NAME OUTPUT COMMAND...

mkdir -p "$ROOT"
stage "cross-encoder" "$CROSS_ENCODER/train.done" bash -c "$DISTILL_RET train \
  --config=configs/cross_encoder.py:cranfield --workdir=$CROSS_ENCODER && touch $CROSS_ENCODER/train.done"
stage "runs" "$ROOT/cross-encoder-rerank-test.trec" \
  $PYTHON bench/cranfield_teachers.py --out "$ROOT" --cross_encoder "$CROSS_ENCODER"
for run in bm25 minilm-dense minilm-rerank cross-encoder-rerank; do
  [[ -e "$ROOT/$run-test.trec" ]] || continue
  stage "score $run" "$ROOT/$run.metrics.json" $DISTILL_RET evaluate --config=configs/evaluate.py:cranfield \
    --workdir="$ROOT" --config.eval.run_path="$ROOT/$run-test.trec" --config.eval.name="$run" \
    --config.eval.measures=$MEASURES
done
$DISTILL_RET report --config=configs/report.py --workdir="$ROOT" --config.report.measures=$MEASURES
