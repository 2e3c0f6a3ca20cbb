#!/usr/bin/env bash
# MVTec AD patch protocol (32x32 patches of 256x256 images, dense 57x57 scoring, heat maps):
#   MVTEC_ROOT=/data/mvtec_ad script/run_mvtec.sh <model_type> <category|all> [seed] [extra flags]
# model_type: rotnet (rotation, no head), rotation (MLP head), contrastive, contrastive_da,
# cutpaste (3-way, GDE first), denoising, or raw_pixels (no training; crop features only).
# Runs land in ${RUNS_ROOT:-runs/mvtec}/<row>/mvtec/<category>/s<seed>,
# the layout script/summarize.py reads (row: rotnet, rotation_head, contrastive, ...).
set -euo pipefail
MODEL=${1:?usage: script/run_mvtec.sh <model_type> <category|all> [seed] [extra flags]}
shift
CATEGORIES=(bottle cable capsule carpet grid hazelnut leather metal_nut pill screw tile
            toothbrush transistor wood zipper)
if [[ "${1:-}" == "all" ]]; then
  shift
  for cat in "${CATEGORIES[@]}"; do bash "$0" "$MODEL" "$cat" "$@"; done
  exit 0
fi
source "$(dirname "$0")/common.sh" mvtec "$@"
: "${MVTEC_ROOT:?set MVTEC_ROOT to the MVTec AD directory (DIR/<category>/train/good, ...)}"
case "$MODEL" in
  rotnet)         TASK=(--head_dims= --batch_size=64 --detectors=kde,gde) ;;
  rotation)       TASK=(--head_dims=512x8 --batch_size=64 --detectors=kde,gde) ;;
  contrastive)    TASK=(--head_dims=512x8,128 --batch_size=32 --detectors=kde,gde) ;;
  contrastive_da) TASK=(--head_dims=512x8,128 --batch_size=32 --detectors=kde,gde) ;;
  cutpaste)       TASK=(--head_dims=512x8,128 --batch_size=32 --cutpaste_variant=3way
                        --aug_list=x --detectors=gde,kde) ;;
  denoising)      TASK=(--head_dims= --batch_size=32 --detectors=kde,gde) ;;
  raw_pixels)     TASK=(--num_epoch=0 --head_dims= --aug_list=x --detectors=kde,gde) ;;
  *) echo "error: unknown model type $MODEL" >&2; exit 2 ;;
esac
ROW=$MODEL; TYPE=$MODEL
[[ $MODEL == rotation ]] && ROW=rotation_head
[[ $MODEL == rotnet ]] && TYPE=rotation
"$PYTHON" train_and_eval_loop.py --model_type="$TYPE" "${PAPER[@]}" "${TASK[@]}" \
  --root="$MVTEC_ROOT" --mvtec_mode=patch --mvtec_image_size=256 --patch_size=32 \
  --patch_stride=4 --eval_epoch=0 \
  --model_dir="${RUNS_ROOT:-runs/mvtec}/${ROW}/mvtec/${CATEGORY}/s${SEED}" "${EXTRA[@]}"
