"""Denoising autoencoder, frozen baselines and the uniformity statistic (issue 11)."""

import numpy as np
import pytest


def test_denoising_loss_falls_and_decoder_mirrors_encoder():
    import keras
    import tensorflow as tf

    from model.registry import build_model

    keras.utils.set_random_seed(0)
    model = build_model("denoising", net_type="ResNet10", net_width=0.125, input_shape=(16, 16, 3),
                        head_dims="", weight_decay=0.0, noise_std=0.1)
    assert model.decoder.output_shape == (None, 16, 16, 3)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype("float32")
    hist = model.fit(tf.data.Dataset.from_tensors(x).repeat(), epochs=4, steps_per_epoch=8,
                     verbose=0).history["proxy_loss"]
    assert hist[-1] < 0.5 * hist[0], hist
    feats = model.extract(x)
    assert set(feats) == {"pool", "embed"} and feats["pool"].shape == (8, 64)


def test_denoising_decoder_for_large_inputs_and_head_code():
    from model.registry import build_model

    model = build_model("denoising", net_type="ResNet10", net_width=0.125,
                        input_shape=(128, 128, 3), head_dims="16", stem_width=8)
    assert model.decoder.input_shape == (None, 16)
    assert model.decoder.output_shape == (None, 128, 128, 3)


def test_raw_pixels_features_are_the_pixels():
    from model.registry import build_model

    model = build_model("raw_pixels", input_shape=(16, 16, 3), head_dims="")
    x = np.random.default_rng(0).random((3, 16, 16, 3)).astype("float32")
    feats = model.extract(x)
    assert set(feats) == {"pool"}
    np.testing.assert_allclose(feats["pool"].numpy(), x.reshape(3, -1))


def test_imagenet_resnet50_loads_local_weights(tmp_path):
    # No download is possible here: the "pretrained" file is saved from a randomly
    # initialised keras.applications.ResNet50, which checks the loading path only.
    import keras

    from model.registry import build_model

    keras.utils.set_random_seed(1)
    src = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3),
                                      pooling="avg")
    path = tmp_path / "r50_notop.weights.h5"
    src.save_weights(str(path))
    model = build_model("imagenet_resnet50", input_shape=(32, 32, 3), head_dims="",
                        pretrained_weights=str(path))
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    bgr = x[..., ::-1] * 255.0 - np.array([103.939, 116.779, 123.68])
    want = src(bgr.astype("float32")).numpy()
    np.testing.assert_allclose(model.extract(x)["pool"].numpy(), want, rtol=1e-3, atol=1e-3)


def test_baseline_flag_errors(tmp_path):
    from engine.validate import check_baseline_flags as validate_baseline_flags
    from engine.config import resolve_config
    from util.errors import ConfigError

    with pytest.raises(ConfigError, match="needs --pretrained_weights"):
        validate_baseline_flags(resolve_config({"model_type": "imagenet_resnet50"}))
    with pytest.raises(ConfigError, match="is not a file"):
        validate_baseline_flags(resolve_config({"model_type": "imagenet_resnet50",
                                                "pretrained_weights": str(tmp_path / "x")}))
    with pytest.raises(ConfigError, match="only used by"):
        validate_baseline_flags(resolve_config({"pretrained_weights": "w.h5"}))
    assert resolve_config({"model_type": "raw_pixels"})["num_epoch"] == 0
    with pytest.raises(ConfigError, match="needs --num_epoch=0"):
        resolve_config({"model_type": "raw_pixels", "num_epoch": 5}, explicit={"num_epoch"})


def test_mmd_known_cases():
    from detect.uniformity import mmd2, mmd_to_uniform, uniform_sphere

    rng = np.random.default_rng(0)
    a, b = uniform_sphere(400, 32, rng), uniform_sphere(400, 32, rng)
    assert abs(mmd2(a, b)) < 0.01
    # Gaussian directions are uniform on the sphere: near 0 after normalisation
    assert abs(mmd_to_uniform(rng.standard_normal((400, 32)) * 3.0)) < 0.01
    # a collapsed embedding (all near one direction) is far from uniform
    collapsed = np.ones((400, 32)) + 0.05 * rng.standard_normal((400, 32))
    assert mmd_to_uniform(collapsed) > 0.3
    # one point vs uniform: k(x,x)=1, mean k(y,y') ~ exp(-1), mean k(x,y) ~ exp(-1)
    point = np.tile(np.eye(32)[:1], (400, 1))
    np.testing.assert_allclose(mmd_to_uniform(point), 1 - np.exp(-1), atol=0.02)


def test_uniformity_uses_test_inliers_of_embed():
    from detect.uniformity import KEY, uniformity_results

    rng = np.random.default_rng(0)
    labels = np.array([0] * 300 + [1] * 300)
    embed = np.concatenate([rng.standard_normal((300, 16)), np.ones((300, 16))])
    pool = np.ones((600, 16))
    out = uniformity_results({"pool": pool, "embed": embed}, labels)
    assert abs(out[KEY]) < 0.02  # inliers are uniform; the collapsed outliers are ignored
    assert uniformity_results({"pool": pool}, labels)[KEY] > 0.3
