"""Train a self-supervised representation on inliers, then score it with one-class detectors.

    python train_and_eval_loop.py --model_type=contrastive_da --dataset=cifar10ood --category=0

Flag names follow the paper's public release (all flags: engine/flags.py, or
``--helpfull``). Per-model-type defaults (batch size, head, distribution
augmentation) apply when a flag is not given; a ``--preset`` fills the flags
you did not set. See README.md.

Every flag is parsed and checked (engine/validate.py) before TensorFlow is
imported: a bad command line exits with status 2 and one ``error:`` line. Ctrl-C
ends with one line saying what was interrupted and what was kept, and status 130.
``--help`` (``-h``, ``--helpshort``) prints this text and the flags, ``--helpfull``
absl's own flags too; both exit 0, as ``python train_and_eval_loop.py`` and as
``droc-train``.
"""

import sys

from absl import app, flags, logging

from engine import flags as flag_table
from engine.config import resolve_and_check
from engine.flags import FLAG_DEFAULTS, define_flags
from util.errors import ConfigError

define_flags(flags)
flags.adopt_module_key_flags(flag_table)  # so --help lists them
FLAGS = flags.FLAGS


def fail(message):
    """The one line every bad input ends with (exit status 2)."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


#: the arguments that ask for the help text (absl's own parser would exit 1 for them)
HELP_ARGS = {"-h", "-?", "-help", "--help", "--helpshort", "--helpfull"}


def help_text(full=False):
    """The usage text: this module's documentation and every flag of the run."""
    flag_help = FLAGS.get_help() if full else FLAGS.module_help(flag_table)
    return f"{__doc__.strip()}\n\nflags:\n{flag_help}\n"


def parse_flags(argv):
    """absl's parser, but a flag type error is an ``error:`` line and exit 2, not FATAL;
    ``--help`` prints the help text and exits 0."""
    asked = [arg.split("=", 1)[0] for arg in argv[1:] if arg.split("=", 1)[0] in HELP_ARGS]
    if asked:
        sys.stdout.write(help_text(full="--helpfull" in asked))
        sys.exit(0)
    FLAGS.unparse_flags()
    try:
        return FLAGS(argv)
    except flags.Error as err:
        first = str(err).splitlines()[0] if str(err) else repr(err)
        sys.exit(fail(first.removeprefix("ERROR:: ")))  # absl's prefix for --flagfile errors


def checked_config(argv):
    """Parsed and validated config (TF-free); raises ConfigError."""
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])} (flags look like "
                          "--name=value)")
    explicit = {name for name in FLAG_DEFAULTS if FLAGS[name].present}
    return resolve_and_check({name: FLAGS[name].value for name in FLAG_DEFAULTS}, explicit)


def main(argv):
    try:
        cfg = checked_config(argv)
        logging.set_verbosity(logging.WARNING)
        from engine.experiment import run_experiment

        return run_experiment(cfg)
    except ConfigError as err:
        return fail(err)
    except KeyboardInterrupt:  # before the run started (the run reports its own)
        print("error: interrupted (Ctrl-C) before the run started; nothing was written",
              file=sys.stderr)
        return 130


def cli(argv, train=False):
    """Whole command line -> exit status, in this process.

    Without ``train`` it only checks the flags (the tests check many bad command
    lines in one process); with it, it runs the command as ``python
    train_and_eval_loop.py`` would.
    """
    try:
        argv = parse_flags(argv)
        if train:
            return main(argv)
        checked_config(argv)
    except ConfigError as err:
        return fail(err)
    except SystemExit as stop:
        return stop.code
    return 0


def console_main():
    """``python train_and_eval_loop.py`` and the ``droc-train`` command (pyproject.toml)."""
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)


if __name__ == "__main__":
    console_main()
