#!/usr/bin/env bash
# 5-fold cross-validation of the HH-RLHF reward model and of the pretrained trunk's log-likelihood preference
# (docs/PREFERENCES.md, "Cross-validation"). Per fold K: pretrain a fresh byte-level 'small' trunk on the unlabelled
# transcripts (chosen and rejected) of the other folds only, train the reward model of examples/hh-rm.yaml on the
# other folds' pairs, then score fold K with eval-rm and eval-pref (each prints the length baseline and the
# length-controlled accuracies, and writes them to runs/hh-cv/foldK/*.json).
# Run from the repository root:  bash examples/hh-cv.sh            (FINEALIGN=path/to/finealign to use another build)
# Budget (small on purpose: a shared 2-core machine): PRETRAIN_STEPS=300 RM_STEPS=100 FOLDS=5.
set -euo pipefail
FA=${FINEALIGN:-finealign}
DATA=${DATA:-../shared/data/hh-rlhf-harmless/harmless-base-2000.jsonl}
FOLDS=${FOLDS:-5}; SEED=${FOLD_SEED:-0}; PRETRAIN_STEPS=${PRETRAIN_STEPS:-300}; RM_STEPS=${RM_STEPS:-100}
OUT=${OUT:-runs/hh-cv}
LEN=(--max-length 256 --max-prompt-length 64)
for K in $(seq "${FOLD_FIRST:-1}" "${FOLD_LAST:-$FOLDS}"); do
  D=$OUT/fold$K; mkdir -p "$D"
  FOLD=(--data "$DATA" --folds "$FOLDS" --fold "$K" --fold-seed "$SEED")
  $FA folds "${FOLD[@]}" --train-out "$D/train.jsonl" --test-out "$D/test.jsonl"
  python3 -c "import json,sys; [print(json.dumps({'text': json.loads(l)[k].strip()})) for l in open(sys.argv[1]) for k in ('chosen','rejected')]" \
      "$D/train.jsonl" > "$D/text.jsonl"
  $FA pretrain --data "$D/text.jsonl" --out "$D/pretrain" --init small --context-length 256 --max-steps "$PRETRAIN_STEPS" \
      --batch-size 16 --learning-rate 2e-3 --samples 0 --threads 1 --save-steps "$PRETRAIN_STEPS" --seed 42
  $FA rm --config examples/hh-rm.yaml --holdout-last 0 "${FOLD[@]}" --model "$D/pretrain/model" --out "$D/rm" \
      --max-steps "$RM_STEPS" --eval-steps "$RM_STEPS" --save-steps "$RM_STEPS" --threads 1
  $FA eval-rm --model "$D/rm/model" "${FOLD[@]}" "${LEN[@]}" --threads 1 --output "$D/eval-rm.json"
  $FA eval-pref --model "$D/pretrain/model" "${FOLD[@]}" "${LEN[@]}" --threads 1 --output "$D/eval-pref.json"
done
