"""Integrated gradients and GradCAM of the differentiable detector score (deploy/explain.py)."""

import numpy as np
import pytest
import tensorflow as tf

from data.augment import to_float_images
from model.registry import build_model
from detect.detectors import KDE
from detect.image_evaluator import extract_features
from deploy.explain import (ScoreFunction, detector_head, gradcam, integrated_gradients,
                            rotation_head)
from model.trunk import conv_trunk


@pytest.fixture(scope="module")
def images():
    from data.registry import load_one_class_data

    data = load_one_class_data("digitsood", "3", input_shape=(32, 32, 3), seed=0)
    return data.train_images[:40], data.test_images[:3]


def tiny(model_type):
    """A tiny model with BatchNorm shifts like a trained one's: at initialisation (beta 0,
    moving mean 0) the ReLU network is positively homogeneous, so L2-normalised features
    are constant along the integrated-gradients path from the black baseline."""
    import keras

    keras.utils.set_random_seed(0)  # unseeded weights made the rotation gap tiny in some runs
    model = build_model(model_type, net_type="ResNet10", net_width=0.125,
                        input_shape=(32, 32, 3), head_dims="32,16")
    rng = np.random.default_rng(0)
    for layer in model.backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.beta.assign(rng.normal(0, 0.2, layer.beta.shape).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.2, layer.beta.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def kde_setup(images):
    train, _ = images
    model = tiny("contrastive_da")
    feats = extract_features(model, train)["pool"]
    det = KDE().fit(feats)
    score_fn = ScoreFunction(conv_trunk(model), detector_head(model, det.graph_score,
                                                              det.export_params()))
    return model, det, score_fn


def test_differentiable_kde_equals_pipeline_score(kde_setup, images):
    model, det, score_fn = kde_setup
    _, test = images
    want = det.score(extract_features(model, test)["pool"])
    got = score_fn(to_float_images(test)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def _completeness_error(score_fn, x, steps):
    attr = integrated_gradients(score_fn, x, steps=steps)
    gap = score_fn(x) - score_fn(tf.zeros_like(x))
    return np.abs(tf.reduce_sum(attr, axis=[1, 2, 3]).numpy() - gap.numpy()), np.abs(gap.numpy())


@pytest.mark.parametrize("target", ["kde", "rotation"])
def test_integrated_gradients_completeness_improves_with_steps(kde_setup, images, target):
    _, test = images
    if target == "kde":
        score_fn = kde_setup[2]
    else:
        model = tiny("rotation")
        score_fn = ScoreFunction(conv_trunk(model), rotation_head(model))
    x = to_float_images(test)
    err_coarse, gap = _completeness_error(score_fn, x, 2)
    err_fine, _ = _completeness_error(score_fn, x, 64)
    assert (gap > 0).all()
    # relative to the largest gap: an image whose score barely moves has a tiny gap
    assert (err_fine < 0.1 * gap.max() + 1e-6).all(), (err_fine, gap)
    assert err_fine.sum() < err_coarse.sum()


def test_gradcam_map_has_input_size_and_is_non_negative(kde_setup, images):
    _, test = images
    score_fn = kde_setup[2]
    cam = gradcam(score_fn, to_float_images(test)).numpy()
    assert cam.shape == (3, 32, 32)
    assert (cam >= 0).all() and np.isfinite(cam).all() and cam.max() > 0


def test_constant_image_gives_finite_maps(kde_setup):
    score_fn = kde_setup[2]
    for value in (0.0, 0.5):
        x = tf.fill((1, 32, 32, 3), value)
        assert np.isfinite(gradcam(score_fn, x).numpy()).all()
        assert np.isfinite(integrated_gradients(score_fn, x, steps=4).numpy()).all()


def test_eager_explanations_run_as_one_graph_per_method(images):
    """Eager calls go through a cached tf.function (the eager oneDNN conv gradient aborts
    on some CPUs); another step count or another call must not trace again."""
    _, test = images
    model = tiny("rotation")
    score_fn = ScoreFunction(conv_trunk(model), rotation_head(model))
    x = to_float_images(test)
    integrated_gradients(score_fn, x, steps=2)
    integrated_gradients(score_fn, x, steps=4)
    gradcam(score_fn, x)
    gradcam(score_fn, x)
    assert sorted(score_fn.graphs) == ["gradcam", "ig"]
    assert [score_fn.graphs[k].experimental_get_tracing_count() for k in ("gradcam", "ig")] \
        == [1, 1]
