#!/usr/bin/env bash
# Contrastive (SimCLR-style) representation, tau 0.2 (paper Table 1 "Contrastive").
source "$(dirname "$0")/common.sh"
"$PYTHON" train_and_eval_loop.py --model_type=contrastive "${PAPER[@]}" \
  --head_dims=512x8,128 --batch_size=32 --temperature=0.2 --distaug_type=none \
  --aug_list="${AUG},+" --aug_list_for_test=x \
  --model_dir="runs/${DATASET}_${CATEGORY}_contrastive_s${SEED}" "${EXTRA[@]}"
