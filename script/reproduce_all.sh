#!/usr/bin/env bash
# Every row of the paper's Tables 2, 5 and 7 over all classes and 5 seeds (and, behind
# --figures / --all_figures, the runs behind its figures), then the tables and plots.
#   script/reproduce_all.sh --datasets=cifar10ood --shard=0/4        # one of 4 machines
#   script/reproduce_all.sh --smoke --datasets=folder --root=DIR --categories=cat --is_validation
#   script/reproduce_all.sh --dry_run                                 # print the commands
# Options: python script/reproduce.py --help; details in docs/experiments.md.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" script/reproduce.py "$@"
