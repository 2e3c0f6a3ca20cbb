#!/usr/bin/env bash
# Distribution-augmented contrastive, rotations as new instances (paper's main method).
# DISTAUG=rot|hflip|vflip|1..8 (default rot). As the release, a distribution augmentation
# with horizontal flips (hflip, 2..8) drops the random hflip from the augmentation chain.
source "$(dirname "$0")/common.sh"
DISTAUG=${DISTAUG:-rot}
case "$DISTAUG" in
  hflip|[2-8]) AUG=${AUG//+hflip/} ;;
esac
SUFFIX=$([ "$DISTAUG" = rot ] && echo "" || echo "_da${DISTAUG}")
"$PYTHON" train_and_eval_loop.py --model_type=contrastive_da "${PAPER[@]}" \
  --head_dims=512x8,128 --batch_size=32 --temperature=0.2 --distaug_type="$DISTAUG" \
  --aug_list="${AUG},+" --aug_list_for_test=x \
  --model_dir="runs/${DATASET}_${CATEGORY}_contrastive_da${SUFFIX}_s${SEED}" "${EXTRA[@]}"
