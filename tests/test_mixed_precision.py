"""--mixed_precision: bf16 / fp16 compute with float32 variables tracks the fp32 loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.config import resolve_config
from engine.experiment import build_training


def losses_for(mode, batch, init=None, steps=4):
    cfg = resolve_config(dict(model_type="contrastive", net_type="ResNet10", net_width=0.125,
                              head_dims="32,16", learning_rate=0.01, mixed_precision=mode))
    try:
        model, _ = build_training(cfg, (32, 32, 3), tf.distribute.get_strategy(), 10)
        if init is not None:
            model.set_weights(init)
        assert all(v.dtype == "float32" for v in model.trainable_variables)
        hist = model.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=steps,
                         steps_per_epoch=1, verbose=0)
        return hist.history["proxy_loss"], model
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("mode, tol", [("bf16", 0.02), ("fp16", 0.002)])
def test_mixed_precision_loss_close_to_fp32(mode, tol):
    """Same weights: first loss within the dtype's rounding; then a few steps train alike.

    Later steps are compared loosely: a tiny-batch trajectory is chaotic, so
    rounding differences grow (fp32 runs perturbed at 1e-3 diverge as much).
    """
    rng = np.random.default_rng(0)
    batch = (rng.random((16, 32, 32, 3), dtype=np.float32),
             rng.random((16, 32, 32, 3), dtype=np.float32))
    cfg = resolve_config(dict(model_type="contrastive", net_type="ResNet10", net_width=0.125,
                              head_dims="32,16"))
    ref_model, _ = build_training(cfg, (32, 32, 3), tf.distribute.get_strategy(), 10)
    init = ref_model.get_weights()
    fp32, _ = losses_for("none", batch, init)
    mixed, model = losses_for(mode, batch, init)
    assert model.backbone.get_layer("stem_conv").compute_dtype == (
        "bfloat16" if mode == "bf16" else "float16")
    assert mixed[0] == pytest.approx(fp32[0], rel=tol)
    np.testing.assert_allclose(mixed, fp32, rtol=0.2)
    assert fp32[-1] < fp32[0] and mixed[-1] < mixed[0]  # the steps really train


@pytest.mark.slow
def test_a_bf16_run_extracts_scores_and_exports_in_float32(tmp_path):
    """Stage 2 of a bf16 run uses a float32 copy of the trained network: scores.npz holds
    what a float32 rebuild of the run (engine.run_loading, as script/export.py uses)
    scores, and the export has no bf16 op (it runs at full speed without bf16 units)."""
    from detect.detectors import make_detector
    from detect.image_evaluator import extract_features
    from detect.scores_file import read_scores
    from engine.run_loading import load_run
    from tests.entry_point import finished_tiny_run

    try:
        run = finished_tiny_run(tmp_path / "run", "--mixed_precision=bf16", "--detectors=kde")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    _, model, data, _ = load_run(run)
    assert model.compute_dtype == "float32"
    train = extract_features(model, data.train_images, 128)["pool"]
    test = extract_features(model, data.test_images, 128)["pool"]
    scores = read_scores(run / "stats" / "scores.npz")["test"]["pool.kde"]
    # features rounded to bf16 move these scores by about 1e-3 (relative)
    np.testing.assert_allclose(scores, make_detector("kde").fit(train).score(test), rtol=2e-5)

    serve = tf.saved_model.load(str(run / "export")).signatures["serving_default"]
    graphs = [serve.graph.as_graph_def()]
    graphs += [f for f in graphs[0].library.function]
    dtypes = {a.type for g in graphs for node in (g.node if hasattr(g, "node") else g.node_def)
              for a in node.attr.values()}
    assert tf.bfloat16.as_datatype_enum not in dtypes
    assert tf.float32.as_datatype_enum in dtypes
