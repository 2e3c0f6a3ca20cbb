"""Train a self-supervised representation on inliers, then score it with one-class detectors.

    python train_and_eval_loop.py --model_type=contrastive_da --dataset=cifar10ood --category=0

Flag names follow the paper's public release (all flags: util/config.py, or
``--helpfull``). Per-model-type defaults (batch size, head, distribution
augmentation) apply when a flag is not given; a ``--preset`` fills the flags
you did not set. See README.md.
"""

import sys

from absl import app, flags, logging

from util import config
from util.config import FLAG_DEFAULTS, define_flags, resolve_config
from util.errors import ConfigError

define_flags(flags)
flags.adopt_module_key_flags(config)  # so --help lists them
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from util.experiment import run_experiment

    try:
        explicit = {name for name in FLAG_DEFAULTS if FLAGS[name].present}
        cfg = resolve_config({name: FLAGS[name].value for name in FLAG_DEFAULTS}, explicit)
        return run_experiment(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
