"""Named flag bundles (``--preset``) that anyone can rerun.

A preset only fills flags the user did not set on the command line. The
``cpu_small*`` presets were picked on the validation protocol of CIFAR-10 (see
script/benchmark.py and README "CPU budget"); ``quickstart`` is the README's
first command.
"""

from util.errors import ConfigError

PRESETS = {
    # README quick start: real sklearn digits, no download, a few minutes on 2 CPU cores
    "quickstart": dict(model_type="contrastive_da", dataset="digitsood", category="0",
                       net_width=0.25, head_dims="128x2,64", batch_size=32, num_epoch=30,
                       learning_rate=0.05, ckpt_epoch=10, eval_epoch=0),
    # ~10 minutes of training on 2 CPU cores (4,500 steps at batch 32)
    "cpu_small": dict(model_type="contrastive_da", net_width=0.25, head_dims="512x2,128",
                      batch_size=32, num_batch=250, num_epoch=18, learning_rate=0.05,
                      ckpt_epoch=2, eval_epoch=6),
    "cpu_small_rotation": dict(model_type="rotation", net_width=0.25, head_dims="512x2",
                               batch_size=32, num_batch=250, num_epoch=18, learning_rate=0.05,
                               ckpt_epoch=2, eval_epoch=6),
}


def preset_values(name):
    if not name:
        return {}
    if name not in PRESETS:
        raise ConfigError(f"--preset={name} is unknown; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])
