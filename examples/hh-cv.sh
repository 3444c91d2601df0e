#!/usr/bin/env bash
# 5-fold cross-validation on Anthropic HH-RLHF harmless-base (2000 lines): what a small from-scratch trunk learns
# (docs/PREFERENCES.md, "Cross-validation"). Each eval-rm/eval-pref prints the length baseline and the length-controlled
# accuracies and writes them to runs/hh-cv/foldK/*.json.
#   rm:   per fold K, a reward model from a fresh byte-level 'small' trunk (no pretraining) trained on the other
#         folds' pairs, scored on fold K (eval-rm);
#   pref: one 'small' LM pretrained on the unlabelled transcripts (chosen and rejected alike, no labels) of the whole
#         file, then per fold K its reference-free log-likelihood preference log π(chosen) > log π(rejected) (eval-pref).
# Run from the repository root:  bash examples/hh-cv.sh   (STAGES="rm pref", FOLD_FIRST/FOLD_LAST to split the work,
# FINEALIGN=path/to/finealign for another build). Budget small on purpose (a shared 2-core machine):
# RM_STEPS=40 × 16 pairs, PRETRAIN_STEPS=150 × 16 × 256 bytes.
set -euo pipefail
FA=${FINEALIGN:-finealign}
DATA=${DATA:-../shared/data/hh-rlhf-harmless/harmless-base-2000.jsonl}
FOLDS=${FOLDS:-5}; SEED=${FOLD_SEED:-0}; PRETRAIN_STEPS=${PRETRAIN_STEPS:-150}; RM_STEPS=${RM_STEPS:-40}; RM_LR=${RM_LR:-5e-4}
OUT=${OUT:-runs/hh-cv}; STAGES=${STAGES:-rm pref}
LEN=(--max-length 256 --max-prompt-length 64)
mkdir -p "$OUT"
if [[ " $STAGES " == *" pref "* && ! -f "$OUT/pretrain/model/config.json" ]]; then
  python3 -c "import json,sys; [print(json.dumps({'text': json.loads(l)[k].strip()})) for l in open(sys.argv[1]) for k in ('chosen','rejected')]" \
      "$DATA" > "$OUT/text.jsonl"
  $FA pretrain --data "$OUT/text.jsonl" --out "$OUT/pretrain" --init small --context-length 256 --max-steps "$PRETRAIN_STEPS" \
      --batch-size 16 --learning-rate 2e-3 --samples 0 --threads 1 --save-steps 0 --seed 42
fi
for K in $(seq "${FOLD_FIRST:-1}" "${FOLD_LAST:-$FOLDS}"); do
  D=$OUT/fold$K; mkdir -p "$D"
  FOLD=(--data "$DATA" --folds "$FOLDS" --fold "$K" --fold-seed "$SEED")
  if [[ " $STAGES " == *" rm "* ]]; then
    # examples/hh-rm.yaml's settings, from a fresh trunk instead of its pretrained one
    $FA rm "${FOLD[@]}" "${LEN[@]}" --init small --context-length 256 --out "$D/rm" --learning-rate "$RM_LR" --batch-size 16 \
        --eval-batch-size 50 --max-steps "$RM_STEPS" --warmup-ratio 0.05 --center-rewards-coefficient 0.01 --eval-steps "$RM_STEPS" \
        --save-steps 0 --logging-steps 10 --seed 42 --threads 1
    $FA eval-rm --model "$D/rm/model" "${FOLD[@]}" "${LEN[@]}" --threads 1 --output "$D/eval-rm.json"
  fi
  if [[ " $STAGES " == *" pref "* ]]; then
    $FA eval-pref --model "$OUT/pretrain/model" "${FOLD[@]}" "${LEN[@]}" --threads 1 --output "$D/eval-pref.json"
  fi
done
