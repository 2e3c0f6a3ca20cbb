#!/usr/bin/env bash
# Every row of the paper's Tables 2, 5 and 7 over all classes and 5 seeds (and, behind
# --figures / --all_figures, the runs behind its figures), then the tables and plots.
#   script/reproduce_all.sh --datasets=cifar10ood --shard=0/4        # one of 4 machines
#   script/reproduce_all.sh --smoke --datasets=folder --root=DIR --categories=cat --is_validation
#   script/reproduce_all.sh --dry_run                                 # print the commands
# Options: python script/reproduce.py --help; details in docs/experiments.md.
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python}" script/reproduce.py "$@"
# MVTec AD, all 15 categories (patch protocol), when MVTEC_ROOT is set (docs/mvtec.md)
if [[ -n "${MVTEC_ROOT:-}" ]]; then
  for seed in ${MVTEC_SEEDS:-0 1 2 3 4}; do
    for method in ${MVTEC_METHODS:-rotnet rotation contrastive_da cutpaste}; do
      bash script/run_mvtec.sh "$method" all "$seed"
    done
  done
fi
