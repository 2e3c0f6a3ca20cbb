"""The release's flags: each is honoured (changes what runs) or rejected, never ignored."""

import math

import numpy as np
import pytest
import tensorflow as tf

from engine.config import resolve_config
from util.errors import ConfigError


def cfg_of(explicit=True, **values):
    return resolve_config(values, set(values) if explicit else ())


# ---------------------------------------------------------------- schedules

BASE = 0.1


def lr_at(step, **flags):
    """The learning rate the real optimizer sees at ``step`` (10 steps/epoch, 4 epochs)."""
    from engine.experiment import make_optimizer

    cfg = cfg_of(learning_rate=BASE, num_epoch=4, **flags)
    opt = make_optimizer(cfg, steps_per_epoch=10)
    opt.build([tf.Variable(0.0)])
    opt.iterations.assign(step)
    return float(opt.learning_rate)


@pytest.mark.parametrize("flags, step, expected", [
    # cos, per epoch: t = 10 of 40 -> 0.5 * (1 + cos(pi/4))
    (dict(sched_type="cos"), 15, 0.5 * (1 + math.cos(math.pi / 4))),
    (dict(sched_type="cos", sched_min_rate=0.2), 15,
     0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4))),
    # per step: t = 15 of 40
    (dict(sched_type="cos", sched_freq="step"), 15, 0.5 * (1 + math.cos(math.pi * 15 / 40))),
    (dict(sched_type="cos"), 40, 0.0),
    # halfcos: cos(pi * t/T * level/16)
    (dict(sched_type="halfcos"), 40, math.cos(7 * math.pi / 16)),
    (dict(sched_type="halfcos", sched_level=8), 29, math.cos(math.pi * 0.5 * 0.5)),
    (dict(sched_type="halfcos", sched_level=8, sched_freq="step"), 29,
     math.cos(math.pi * 29 / 40 * 0.5)),
    # linear: m + (1 - m)(1 - t/T)
    (dict(sched_type="linear", sched_min_rate=0.1), 25, 0.1 + 0.9 * 0.5),
    (dict(sched_type="linear", sched_min_rate=0.1, sched_freq="step"), 25, 0.1 + 0.9 * 0.375),
    (dict(sched_type="linear"), 9, 1.0),
    # step: gamma ** floor(t / (step_size * unit))
    (dict(sched_type="step", sched_gamma=0.5), 25, 0.25),
    (dict(sched_type="step", sched_gamma=0.5, sched_step_size=2), 25, 0.5),
    (dict(sched_type="step", sched_gamma=0.5, sched_step_size=3, sched_freq="step"), 25,
     0.5 ** 8),
    (dict(sched_type="constant"), 33, 1.0),
])
def test_schedule_values(flags, step, expected):
    assert lr_at(step, **flags) == pytest.approx(BASE * expected, abs=1e-7)


def test_default_schedule_is_the_papers_epoch_cosine():
    from engine.schedules import EpochCosineDecay

    paper = EpochCosineDecay(BASE, steps_per_epoch=10, epochs=4)
    for step in (0, 9, 10, 19, 27, 39):
        assert lr_at(step) == pytest.approx(float(paper(step)), abs=1e-8)
    assert lr_at(19) == lr_at(10) != lr_at(20)  # held for the whole epoch


def test_schedule_flag_errors():
    with pytest.raises(ConfigError, match="sched_gamma"):
        cfg_of(sched_type="cos", sched_gamma=0.9)
    with pytest.raises(ConfigError, match="sched_level"):
        cfg_of(sched_type="halfcos", sched_level=9)
    with pytest.raises(ConfigError, match="sched_min_rate"):
        cfg_of(sched_type="halfcos", sched_min_rate=0.1)
    with pytest.raises(ConfigError, match="sched_min_rate"):
        cfg_of(sched_type="cos", sched_min_rate=1.5)


# ---------------------------------------------------------------- optimizer

def one_step(**flags):
    """x=1 after one step with gradient 1, lr 0.1 (constant), momentum 0.9."""
    from engine.experiment import make_optimizer

    cfg = cfg_of(learning_rate=0.1, sched_type="constant", **flags)
    opt = make_optimizer(cfg, steps_per_epoch=1)
    x = tf.Variable(1.0)
    for _ in range(2):
        opt.apply_gradients([(tf.constant(1.0), x)])
    return opt, float(x.numpy())


def test_sgd_momentum_and_nesterov():
    import keras

    opt, x = one_step()
    assert isinstance(opt, keras.optimizers.SGD) and not opt.nesterov
    # heavy ball: v1 = -0.1, v2 = -0.19; x = 1 - 0.1 - 0.19
    assert x == pytest.approx(0.71)
    opt, x = one_step(nesterov=True)
    assert opt.nesterov
    # nesterov: x += m * v_t - lr * g -> 1 + (0.9*-0.1 - 0.1) + (0.9*-0.19 - 0.1)
    assert x == pytest.approx(1 - 0.19 - 0.271)


def test_adam_is_amsgrad():
    import keras

    opt, x = one_step(optim_type="adam")
    assert isinstance(opt, keras.optimizers.Adam) and opt.amsgrad
    assert x == pytest.approx(0.8, abs=1e-4)  # Adam moves by ~lr per step with a constant gradient
    with pytest.raises(ConfigError, match="nesterov"):
        cfg_of(optim_type="adam", nesterov=True)


def test_optim_type_reaches_the_training_model():
    import keras

    from engine.experiment import build_training

    cfg = cfg_of(model_type="contrastive", optim_type="adam", net_type="ResNet10",
                 net_width=0.125, head_dims="16,8", input_shape="16,16,3")
    model, _ = build_training(cfg, (16, 16, 3), tf.distribute.get_strategy(), 3)
    assert isinstance(model.optimizer, keras.optimizers.Adam) and model.optimizer.amsgrad


# ---------------------------------------------------------------- regularize_bn

def test_regularize_bn_excludes_batchnorm_from_l2():
    from model.registry import build_model

    kw = dict(net_type="ResNet10", net_width=0.125, input_shape=(16, 16, 3), head_dims="16,8",
              weight_decay=0.1)
    with_bn = build_model("contrastive", **kw)
    without_bn = build_model("contrastive", l2_skip_batchnorm=True, **kw)
    bn_paths = {v.path for v in with_bn.trainable_variables
                if v.path.split("/")[-1] in ("gamma", "beta")}
    assert bn_paths  # stem, blocks and head all have BatchNorm
    assert {v.path for v in with_bn.l2_variables()} == {v.path for v in with_bn.trainable_variables}
    kept = {v.path for v in without_bn.l2_variables()}
    assert kept == {v.path for v in without_bn.trainable_variables} - bn_paths
    # the penalty itself: gammas start at 1, so excluding them lowers it by wd/2 * #gammas
    n_gamma = sum(int(np.prod(v.shape)) for v in with_bn.trainable_variables
                  if v.path.endswith("gamma"))
    for v_a, v_b in zip(with_bn.trainable_variables, without_bn.trainable_variables):
        v_b.assign(v_a)
    diff = float(with_bn.l2_penalty()) - float(without_bn.l2_penalty())
    assert diff == pytest.approx(0.5 * 0.1 * n_gamma, rel=1e-5)


def test_regularize_bn_flag_reaches_the_model():
    from engine.experiment import build_training

    for flag in (False, True):
        cfg = cfg_of(model_type="rotation", regularize_bn=flag, net_type="ResNet10",
                     net_width=0.125, head_dims="8", input_shape="16,16,3")
        model, _ = build_training(cfg, (16, 16, 3), tf.distribute.get_strategy(), 3)
        assert model.l2_skip_batchnorm is flag
        n_l2, n_all = len(model.l2_variables()), len(model.trainable_variables)
        assert (n_l2 < n_all) is flag


# ---------------------------------------------------------------- networks

def bottleneck_params(counts, width, stem=64):
    """Trainable parameters of the CIFAR ResNet with bottleneck blocks, by hand."""
    total = 27 * stem + 2 * stem
    c_in = stem
    for stage, count in enumerate(counts):
        m = max(1, int(round(64 * 2 ** stage * width)))
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            total += c_in * m + 2 * m + 9 * m * m + 2 * m + 4 * m * m + 8 * m
            if stride != 1 or c_in != 4 * m:
                total += c_in * 4 * m + 8 * m
            c_in = 4 * m
    return total


@pytest.mark.parametrize("net_type, counts", [("ResNet50", (3, 4, 6, 3)),
                                               ("ResNet101", (3, 4, 23, 3)),
                                               ("ResNet152", (3, 8, 36, 3))])
def test_resnet_depths(net_type, counts):
    import keras

    from model.resnet import build_resnet

    net = build_resnet(net_type, 0.125, (16, 16, 3))
    trainable = sum(int(np.prod(v.shape)) for v in net.trainable_weights)
    assert trainable == bottleneck_params(counts, 0.125)
    n_conv = sum(isinstance(layer, keras.layers.Conv2D) for layer in net.layers)
    assert n_conv == 1 + 3 * sum(counts) + 4  # stem + 3 per block + 4 projections


# ---------------------------------------------------------------- names and mapping

def test_dataset_aliases():
    from data import dogvscat
    from data.registry import get_source
    from data.tfds_source import fmnist

    assert cfg_of(dataset="fashion_mnistood")["dataset"] == "fmnistood"
    assert cfg_of(dataset="dvcood")["dataset"] == "dogvscatood"
    assert cfg_of(dataset="dvcood", explicit=False)["model_dir"].startswith(
        "runs/dogvscatood_0_")
    assert get_source("dvcood") is dogvscat.load_dogvscat is get_source("dogvscatood")
    assert get_source("fashion_mnistood") is get_source("fmnistood")
    assert fmnist  # the alias reads the same TFDS dataset


@pytest.mark.parametrize("values, model_type, distaug", [
    (dict(method="UnsupEmbed"), "rotation", "none"),
    (dict(method="unsupembed", latent_dim=4), "rotation", "none"),
    (dict(method="Contrastive"), "contrastive", "none"),
    (dict(method="Contrastive", distaug_type="1"), "contrastive", "none"),
    (dict(method="Contrastive", distaug_type="rot"), "contrastive_da", "rot"),
    (dict(method="Contrastive", distaug_type="5", latent_dim=0), "contrastive_da", "5"),
])
def test_method_maps_to_model_type(values, model_type, distaug):
    cfg = cfg_of(**values)
    assert (cfg["model_type"], cfg["distaug_type"]) == (model_type, distaug)


def test_method_errors():
    with pytest.raises(ConfigError, match="UnsupEmbed or Contrastive"):
        cfg_of(method="SimCLR")
    with pytest.raises(ConfigError, match="pass only one"):
        cfg_of(method="UnsupEmbed", model_type="contrastive")
    with pytest.raises(ConfigError, match="latent_dim=3 must equal the number of views"):
        cfg_of(method="UnsupEmbed", latent_dim=3)
    with pytest.raises(ConfigError, match="latent_dim=4 applies to --method=UnsupEmbed"):
        cfg_of(method="Contrastive", latent_dim=4)
    with pytest.raises(ConfigError, match="celeba only"):
        cfg_of(dataset="cifar10ood", celeba_attribute="Smiling")


def test_latent_dim_counts_the_views_of_aug_list():
    from engine.validate import view_count

    cfg = cfg_of(method="UnsupEmbed", aug_list="x,+rotate90", aug_list_for_test="x,+rotate90",
                 latent_dim=2)
    assert view_count(cfg) == 2
    with pytest.raises(ConfigError, match=r"\(3 in 'x,\+hflip,\+vflip'\)"):
        cfg_of(method="UnsupEmbed", aug_list="x,+hflip,+vflip",
               aug_list_for_test="x,+hflip,+vflip", latent_dim=4)


def test_run_directory_naming():
    assert cfg_of(explicit=False)["model_dir"] == "runs/cifar10ood_0_contrastive_da_s0"
    # the release: <model_dir>/<ckpt_prefix>/<file_path>, '__' collapsed
    assert cfg_of(model_dir="/tmp/x", file_path="cifar10ood__s1_c0")["model_dir"] == \
        "/tmp/x/cifar10ood_s1_c0"
    assert cfg_of(model_dir="/tmp/x", ckpt_prefix="p", file_path="run")["model_dir"] == \
        "/tmp/x/p/run"
    assert cfg_of(file_path="run")["model_dir"] == "runs/run"
    assert cfg_of(model_dir="/tmp/x", ckpt_prefix="p")["model_dir"] == "/tmp/x/p"
    assert cfg_of(ckpt_prefix="p", seed=3)["model_dir"] == "runs/p/cifar10ood_0_contrastive_da_s3"


def test_celeba_category_and_attribute():
    cfg = cfg_of(dataset="celeba", category="eyeglasses")  # the release's way
    assert (cfg["category"], cfg["celeba_attribute"]) == ("0", "Eyeglasses")
    cfg = cfg_of(dataset="celeba", celeba_attribute="smiling")
    assert (cfg["category"], cfg["celeba_attribute"]) == ("0", "Smiling")
    with pytest.raises(ConfigError, match="contradicts"):
        cfg_of(dataset="celeba", category="Smiling", celeba_attribute="Eyeglasses")
    with pytest.raises(ConfigError, match="unknown CelebA attribute"):
        cfg_of(dataset="celeba", celeba_attribute="Sunglasses")


def test_head_dims_comma_list_equals_repeat_form():
    from model.heads import parse_head_dims

    assert parse_head_dims("512,512,512,512,512,512,512,512,128") == parse_head_dims("512x8,128")
    assert parse_head_dims("512,512,512,512,512,512,512,512") == [512] * 8


def test_flags_are_defined_for_the_command_line():
    from absl import flags

    from engine.flags import define_flags

    fv = flags.FlagValues()

    class Defs:
        def __getattr__(self, name):
            fn = getattr(flags, name)
            return lambda *a, **k: fn(*a, flag_values=fv, **k)

    define_flags(Defs())
    fv(["prog", "--optim_type=adam", "--sched_type=halfcos", "--sched_freq=step",
        "--sched_level=8", "--regularize_bn", "--nonesterov", "--method=Contrastive",
        "--ckpt_prefix=p", "--latent_dim=0", "--net_type=ResNet152"])
    assert (fv.optim_type, fv.sched_type, fv.sched_freq, fv.sched_level) == \
        ("adam", "halfcos", "step", 8)
    assert fv.regularize_bn is True and fv.nesterov is False
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["prog", "--sched_type=exp"])
