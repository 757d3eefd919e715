#!/usr/bin/env bash
# The six-seed table of README "FGD on pydocs modules as long documents", one command, resumable:
#   launch/experiments/pydocs_fgd_table.sh
# The setting the investigation converged on (FLAGS below: normalised [CLS] students, τ = τ_t = 0.05, piece KD on the
# pairs whose judged passage fits the 192 tokens), every stage-2 seed from one warm-up and one set of mined negatives:
#   $CROSS_ENCODER    the cross-encoder teacher, configs/cross_encoder.py:pydocs (2,000 steps; `train.done` marks it
#                     finished, so a run trained by hand is reused once that file is in it)
#   $ROOT/table       launch/experiments/pydocs_fgd.sh with EXTRA_ARGS=FLAGS and SYSTEMS=nokd: BM25, zero-shot MiniLM,
#                     the teacher, the warm-up, the mined negatives, and seedS/nokd (the table's no-KD row)
#   $ROOT/rows        launch/experiments/fgd_sweeps.sh from that root, 8 passages and 8 sentences of the positive
#                     against 8 and 8 mined negatives:
#                       seedS/pieces=8,8,8,8/{fgd,fgd_mv}      FGD from zero-shot MiniLM at τ_t = 0.05 (+ multi-vector)
#                       seedS/temperature=0.01/{fgd,fgd_mv}    the same at τ_t = 0.01
#                       seedS/teacher=ce2k/{dockd,fgd,fgd_mv}  the cross-encoder's document KD and FGD (+ multi-vector)
#                       seedS/reference/nokd                   a link to $ROOT/table/seedS/nokd
# It ends with `distill-ret report` over $ROOT/rows with every system paired against no KD (the mean difference over
# seeds and the randomization test over the test queries), the table's columns.
#
# Environment: SEEDS (default "0 1 2 3 4 5"), ROOT (default workdirs/experiments/pydocs_fgd_table), CROSS_ENCODER
# (default $ROOT/cross_encoder), DISTILL_RET (default distill-ret), DRY=1 (print each stage's command instead of
# running it).
set -euo pipefail
cd "$(dirname "$0")/../.."

SEEDS=${SEEDS-"0 1 2 3 4 5"}
ROOT=${ROOT:-workdirs/experiments/pydocs_fgd_table}
CROSS_ENCODER=${CROSS_ENCODER:-$ROOT/cross_encoder}
CLI=${DISTILL_RET:-distill-ret}
DRY=${DRY:-0}
FLAGS="--config.model.normalize=True --config.fgd.temperature=0.05 --config.fgd.teacher_temperature=0.05
  --config.fgd.distill_visible_only=True"
PIECES=8,8,8,8
EIGHT_SENTENCES="--config.data.num_sentences=8 --config.data.sentence_negatives=8"  # PIECES, as data fields
MEASURES=MRR@100,nDCG@10,R@100

source launch/experiments/stages.sh  # stage NAME OUTPUT COMMAND...
source launch/experiments/fgd_preset.sh  # fgd_preset DATASET
fgd_preset pydocs  # PRESET_EXPORT: the documents' qrels for the report

# sweeps ENV...: launch/experiments/fgd_sweeps.sh over $ROOT/rows from $ROOT/table, only the settings ENV names.
sweeps() {
  env TABLE_ROOT="$ROOT/table" ROOT="$ROOT/rows" SEEDS="$SEEDS" LAMBDAS= TEMPERATURES= TEACHERS= STEPS= PIECES= \
    CACHE="$ROOT/rows/teacher_pieces=$PIECES.npz" BASE_ARGS="$FLAGS $EIGHT_SENTENCES" DISTILL_RET="$CLI" DRY="$DRY" \
    "$@" bash launch/experiments/fgd_sweeps.sh
}

ROOT="$ROOT/table" SEEDS="$SEEDS" SYSTEMS=nokd EXTRA_ARGS="$FLAGS" DISTILL_RET="$CLI" DRY="$DRY" \
  bash launch/experiments/pydocs_fgd.sh
sweeps PIECES="$PIECES" TEMPERATURES=0.01
stage "cross_encoder" "$CROSS_ENCODER/train.done" \
  bash -c "$CLI train --config=configs/cross_encoder.py:pydocs --workdir='$CROSS_ENCODER' && touch '$CROSS_ENCODER/train.done'"
sweeps TEACHERS="ce2k=cross_encoder:$CROSS_ENCODER"

echo "done: the table's rows under $ROOT/rows (no KD: reference/nokd), the baselines under $ROOT/table"
[[ "$DRY" == 1 ]] || "$CLI" report --config=configs/report.py --workdir="$ROOT/rows" \
  --config.report.measures="$MEASURES" --config.report.baseline=reference/nokd/retrieve-test \
  --config.report.qrels_path="$PRESET_EXPORT/qrels/test.tsv"
