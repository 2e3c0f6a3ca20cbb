"""Backbones, heads, proxy-task losses, schedule and callbacks."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from model.contrastive import contrastive_loss
from model.heads import build_mlp_head, parse_head_dims
from model.registry import build_model
from model.resnet import build_resnet, check_input_shape
from model.rotation import stack_views
from engine.callbacks import StopOnNaN
from util.errors import ConfigError
from engine.schedules import EpochCosineDecay


def n_trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


@pytest.mark.parametrize("net_type, params, dim", [
    # trainable parameters of the standard CIFAR ResNets without the classifier
    ("ResNet10", 4_898_112, 512), ("ResNet18", 11_168_832, 512),
    ("ResNet34", 21_276_992, 512), ("ResNet50", 23_500_352, 2048)])
def test_resnet_parameter_counts(net_type, params, dim):
    model = build_resnet(net_type, 1.0)
    assert n_trainable(model) == params
    assert model.output_shape == (None, dim)


def test_resnet_width_keeps_release_stem():
    narrow = build_resnet("ResNet18", 0.25)
    assert narrow.output_shape == (None, 128)
    assert narrow.get_layer("stem_conv").filters == 64
    scaled = build_resnet("ResNet18", 0.25, stem_width=16)
    assert scaled.get_layer("stem_conv").filters == 16
    assert n_trainable(scaled) < n_trainable(narrow)


def test_resnet_layer_settings():
    model = build_resnet("ResNet10", 0.25)
    bn = model.get_layer("stem_bn")
    assert bn.momentum == 0.9 and bn.epsilon == 1e-5
    conv = model.get_layer("stem_conv")
    assert not conv.use_bias and conv.kernel_size == (3, 3) and conv.strides == (1, 1)


def test_resnet_large_input_uses_imagenet_stem():
    model = build_resnet("ResNet10", 0.25, input_shape=(128, 128, 3))
    assert model.get_layer("stem_conv").kernel_size == (7, 7)
    assert model.get_layer("stem_pool") is not None
    x = tf.zeros((2, 128, 128, 3))
    assert model(x).shape == (2, 128)


@pytest.mark.parametrize("shape", [(32, 32, 1), (32, 48, 3), (12, 12, 3), (100, 100, 3), (30, 30, 3)])
def test_bad_input_shapes(shape):
    with pytest.raises(ConfigError, match="input_shape"):
        check_input_shape(shape)


def test_parse_head_dims():
    assert parse_head_dims("512x8,128") == [512] * 8 + [128]
    assert parse_head_dims("512x2") == [512, 512]
    assert parse_head_dims("") == []
    for bad in ("512y8", "a,b", "0", "512x"):
        with pytest.raises(ConfigError, match="head_dims"):
            parse_head_dims(bad)


def test_mlp_head_structure():
    head = build_mlp_head([16, 16, 8], input_dim=32)
    dense = [l for l in head.layers if isinstance(l, keras.layers.Dense)]
    bns = [l for l in head.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert [d.units for d in dense] == [16, 16, 8]
    assert [d.use_bias for d in dense] == [False, False, False]
    assert len(bns) == 2
    assert head(tf.zeros((3, 32))).shape == (3, 8)
    with_bias = build_mlp_head([16, 8], input_dim=32, last_bias=True)
    assert [l.use_bias for l in with_bias.layers if isinstance(l, keras.layers.Dense)] == [
        False, True]


def _head_biases(model):
    return [l.use_bias for l in model.head.layers if isinstance(l, keras.layers.Dense)]


def test_last_head_layer_has_bias_only_before_a_classifier():
    # as the release: no bias on the contrastive embedding; a bias when a classifier follows
    for model_type in ("contrastive", "contrastive_da"):
        model = build_model(model_type, net_type="ResNet10", net_width=0.125, head_dims="16,8")
        assert _head_biases(model) == [False, False]
        assert not any("bias" in v.path for v in model.head.weights)
    rot = build_model("rotation", net_type="ResNet10", net_width=0.125, head_dims="16,8")
    assert _head_biases(rot) == [False, True]


def test_strided_conv_pads_symmetrically_like_the_release():
    """A stride-2 3x3 conv of ours = explicit pad-by-1 + VALID conv, not padding='same'."""
    model = build_resnet("ResNet10", 0.125, input_shape=(16, 16, 3), stem_width=4)
    conv = model.get_layer("stage2_block1_conv1")
    assert conv.strides == (2, 2)
    inner = keras.Model(model.input, model.get_layer("stage1_block1_out").output)
    ours = keras.Model(model.input, conv.output)
    x = tf.random.stateless_uniform((2, 16, 16, 3), seed=(1, 2))
    feat = inner(x)
    kernel = conv.kernel
    ref = tf.nn.conv2d(tf.pad(feat, [[0, 0], [1, 1], [1, 1], [0, 0]]), kernel, 2, "VALID")
    same = tf.nn.conv2d(feat, kernel, 2, "SAME")
    out = ours(x)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(out.numpy() - same.numpy()).max() > 1e-3


def test_large_input_stem_and_pool_pad_symmetrically():
    model = build_resnet("ResNet10", 0.125, input_shape=(128, 128, 3), stem_width=4)
    x = tf.random.stateless_uniform((1, 128, 128, 3), seed=(3, 4))
    stem = model.get_layer("stem_conv")
    got = keras.Model(model.input, stem.output)(x)
    ref = tf.nn.conv2d(tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]]), stem.kernel, 2, "VALID")
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    relu = keras.Model(model.input, model.get_layer("stem_relu").output)(x)
    pooled = keras.Model(model.input, model.get_layer("stem_pool").output)(x)
    ref = tf.nn.max_pool2d(tf.pad(relu, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 2, "VALID")
    np.testing.assert_allclose(pooled.numpy(), ref.numpy(), rtol=1e-6)


def test_contrastive_loss_matches_numpy():
    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(4, 5)).astype(np.float32)
    z2 = rng.normal(size=(6, 5)).astype(np.float32)
    z1 /= np.linalg.norm(z1, axis=1, keepdims=True)
    z2 /= np.linalg.norm(z2, axis=1, keepdims=True)
    tau, offset = 0.2, 2
    logits = z1 @ z2.T / tau
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -np.mean([logp[i, offset + i] for i in range(4)])
    loss, acc = contrastive_loss(tf.constant(z1), tf.constant(z2), tau, offset)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    want_acc = np.mean([np.argmax(logits[i]) == offset + i for i in range(4)])
    assert float(acc) == pytest.approx(want_acc)


def test_stack_views_labels_and_images():
    views = tuple(tf.random.uniform((3, 8, 8, 3)) for _ in range(4))
    stacked, labels = stack_views(views)
    np.testing.assert_array_equal(labels.numpy(), np.repeat(np.arange(4), 3))
    np.testing.assert_array_equal(stacked[3:6], views[1])
    np.testing.assert_array_equal(stacked[9:12], views[3])


@pytest.mark.parametrize("head_dims", ["16,8", ""])
def test_rotation_scores_match_numpy(head_dims):
    """logit = -p(y=0|x), dscore = -sum_k log p(y=k|rot_k x), from the model's own logits;
    RotNet proper (no head) gives the same scores from a classifier on f(x)."""
    model = build_model("rotation", net_type="ResNet10", net_width=0.125, head_dims=head_dims,
                        input_shape=(16, 16, 3))
    x = np.random.default_rng(1).random((5, 16, 16, 3), dtype=np.float32)
    feats = model.predict(x, verbose=0, batch_size=5)
    logits = np.stack([model.logits(np.rot90(x, k, axes=(1, 2)).copy())[2].numpy()
                       for k in range(4)])  # [k, B, 4]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(feats["logit"], -np.exp(logp[0, :, 0]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(feats["dscore"], -sum(logp[k, :, k] for k in range(4)),
                               rtol=1e-4, atol=1e-5)
    pooled, embed = model(x)
    np.testing.assert_allclose(feats["pool"], pooled.numpy(), rtol=1e-5, atol=1e-6)
    if not head_dims:  # RotNet: the classifier sits directly on the pooled features
        np.testing.assert_allclose(embed.numpy(), pooled.numpy())
        assert model.classifier.kernel.shape[0] == pooled.shape[-1]


def test_transformation_classifier_takes_its_classes_from_aug_list():
    model = build_model("rotation", net_type="ResNet10", net_width=0.125, head_dims="8",
                        input_shape=(16, 16, 3), aug_list="x,+hflip,+vflip",
                        aug_list_for_test="x,+rotate90,+rotate180")
    assert model.views_per_image == 3 and model.classifier.units == 3
    feats = model.predict(np.zeros((2, 16, 16, 3), np.float32), verbose=0)
    assert feats["dscore"].shape == (2,)
    with pytest.raises(ConfigError, match="aug_list_for_test"):
        build_model("rotation", net_type="ResNet10", net_width=0.125, head_dims="8",
                    input_shape=(16, 16, 3), aug_list="x,+hflip,+vflip")


@pytest.mark.parametrize("model_type, keys", [
    ("contrastive", {"pool", "embed"}), ("rotation", {"pool", "embed", "logit", "dscore"})])
def test_model_train_step_and_features(model_type, keys):
    model = build_model(model_type, net_type="ResNet10", net_width=0.125, head_dims="16,8")
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    x = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    batch = (x, x[::-1].copy()) if model_type == "contrastive" else tuple(
        np.rot90(x, k, axes=(1, 2)).copy() for k in range(4))
    before = [w.copy() for w in model.get_weights()]
    hist = model.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=1, steps_per_epoch=2,
                     verbose=0)
    logs = {k: v[-1] for k, v in hist.history.items()}
    assert set(logs) >= {"loss", "proxy_loss", "l2_loss", "acc"}
    assert logs["loss"] == pytest.approx(logs["proxy_loss"] + logs["l2_loss"], rel=1e-4)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, model.get_weights()))
    feats = model.predict(x, verbose=0, batch_size=4)
    assert set(feats) == keys
    assert feats["pool"].shape == (8, 64) and feats["embed"].shape == (8, 8)


def test_l2_penalty_formula():
    model = build_model("contrastive", net_type="ResNet10", net_width=0.125, head_dims="8",
                        weight_decay=1e-2)
    expected = 0.5 * 1e-2 * sum(float(np.sum(np.square(v.numpy())))
                                for v in model.trainable_variables)
    assert float(model.l2_penalty()) == pytest.approx(expected, rel=1e-4)


def test_epoch_cosine_decay_is_stepped_per_epoch():
    sched = EpochCosineDecay(0.1, steps_per_epoch=10, epochs=4)
    assert float(sched(0)) == pytest.approx(0.1)
    assert float(sched(9)) == pytest.approx(0.1)
    assert float(sched(10)) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert float(sched(20)) == pytest.approx(0.05)
    assert float(sched(40)) == pytest.approx(0.0, abs=1e-8)


def test_stop_on_nan_callback():
    class Dummy:
        stop_training = False

    cb = StopOnNaN(every=1)
    cb.set_model(Dummy())
    cb.on_epoch_begin(3)
    cb.on_train_batch_end(0, {"loss": 1.0})
    assert not cb.triggered and not cb.model.stop_training
    cb.on_train_batch_end(1, {"loss": float("nan")})
    assert cb.triggered and cb.model.stop_training and cb.bad_epoch == 3
