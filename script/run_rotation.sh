#!/usr/bin/env bash
# Rotation prediction with an MLP head (paper Table 1 "Rotation prediction", KDE).
source "$(dirname "$0")/common.sh"
"$PYTHON" train_and_eval_loop.py --model_type=rotation "${PAPER[@]}" \
  --head_dims=512x8 --batch_size=64 \
  --aug_list="${AUG},+rotate90,+rotate180,+rotate270" \
  --aug_list_for_test="x,+rotate90,+rotate180,+rotate270" \
  --model_dir="runs/${DATASET}_${CATEGORY}_rotation_s${SEED}" "${EXTRA[@]}"
