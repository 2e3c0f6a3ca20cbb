#!/usr/bin/env bash
# Distribution-augmented contrastive, rotations as new instances (paper's main method).
source "$(dirname "$0")/common.sh"
"$PYTHON" train_and_eval_loop.py --model_type=contrastive_da "${PAPER[@]}" \
  --head_dims=512x8,128 --batch_size=32 --temperature=0.2 --distaug_type=rot \
  --model_dir="runs/${DATASET}_${CATEGORY}_contrastive_da_s${SEED}" "${EXTRA[@]}"
