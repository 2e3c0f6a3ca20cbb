# Shared by the run_*.sh scripts: arguments and the paper's common settings.
# Usage of every script: script/run_X.sh [dataset] [category] [seed] [extra flags...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATASET=${1:-cifar10ood}
CATEGORY=${2:-0}
SEED=${3:-0}
shift $(( $# < 3 ? $# : 3 ))
EXTRA=("$@")
PYTHON=${PYTHON:-python}
# docs/method.md "Optimisation": SGD 0.9, lr 0.01 cosine per epoch, wd 3e-4, 2048 epochs
PAPER=(--net_type=ResNet18 --net_width=1 --learning_rate=0.01 --momentum=0.9
       --weight_decay=3e-4 --num_epoch=2048 --sched_type=cos
       --dataset="$DATASET" --category="$CATEGORY" --seed="$SEED")
# the paper's augmentation chain (docs/method.md "Augmentation"); each script makes its views
AUG=cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5
