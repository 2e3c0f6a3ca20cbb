"""Why was an image flagged: integrated gradients and GradCAM of a differentiable
anomaly score with respect to the input image.

The score is a function of the last convolutional stage's feature map A
(ResNet output before global average pooling): pooled = mean_hw(A), then the
detector head, e.g. the KDE score of pool = f(x) (or of embed = g(f(x))), or
for rotation models the rotation classifier's ``logit`` score -p(upright | x).

* Integrated gradients (Sundararajan et al. 2017): attribution_i = (x_i - x'_i)
  * mean over alpha of dS/dx_i at x' + alpha (x - x'), alpha at the midpoints of
  ``steps`` equal intervals, baseline x' = black image. The attributions sum to
  S(x) - S(x') up to the quadrature error, which shrinks with more steps.
* GradCAM (Selvaraju et al. 2017) on A: weights w_c = mean_hw dS/dA_c, map =
  ReLU(sum_c w_c A_c), bilinearly resized to the input size (non-negative).

All functions are TensorFlow ops, usable eagerly and inside tf.function (the
export traces them into the SavedModel, script/score.py --explain).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional

import numpy as np
import tensorflow as tf

from util.atomic import atomic_path

if TYPE_CHECKING:
    import keras


def detector_head(model: keras.Model, graph_score: Callable, params: Mapping,
                  feature_set: str = "pool") -> Callable[[tf.Tensor], tf.Tensor]:
    """pooled features -> score of an exported detector (its ``graph_score`` of ``params``),
    float32."""

    def head(pooled):
        feats = pooled if feature_set == "pool" else model.head(pooled, training=False)
        return tf.cast(graph_score(params, feats), tf.float32)

    return head


def rotation_head(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """pooled features -> -p(y = upright | x) of the rotation classifier (``logit`` score)."""

    def head(pooled):
        embed = model.head(pooled, training=False)
        logits = tf.cast(model.classifier(embed), tf.float32)
        return -tf.nn.softmax(logits, axis=-1)[:, 0]

    return head


class ScoreFunction:
    """S(x) for float images in [0, 1], split at the last conv stage for GradCAM."""

    def __init__(self, trunk: keras.Model, head: Callable[[tf.Tensor], tf.Tensor]) -> None:
        self.trunk, self.head = trunk, head
        self.graphs = {}  # eager calls of the explanation methods, as tf.functions

    def activations(self, images: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.trunk(images, training=False), tf.float32)

    def from_activations(self, acts: tf.Tensor) -> tf.Tensor:
        return self.head(tf.reduce_mean(acts, axis=[1, 2]))

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        return self.from_activations(self.activations(images))


def _as_graph(score_fn, name, core, *args):
    """Run ``core(score_fn, *args)`` as a graph, also when called eagerly.

    The eager oneDNN gradient of a convolution (Conv2DBackpropFilter, TF 2.21)
    corrupts the heap on some CPUs (seen on a 2-core AMD EPYC with AVX2: "malloc
    assertion failure", the process aborts); the same op inside a graph does not.
    Each ScoreFunction keeps its graphs, so repeated calls with images of one
    shape trace once.
    """
    if not tf.executing_eagerly():
        return core(score_fn, *args)
    if name not in score_fn.graphs:
        score_fn.graphs[name] = tf.function(lambda *a: core(score_fn, *a),
                                            reduce_retracing=True)
    return score_fn.graphs[name](*args)


def _integrated_gradients(score_fn, images, baseline, steps):
    diff = images - baseline
    total = tf.zeros_like(images)
    for i in tf.range(steps):
        alpha = (tf.cast(i, tf.float32) + 0.5) / tf.cast(steps, tf.float32)
        point = baseline + alpha * diff
        with tf.GradientTape() as tape:
            tape.watch(point)
            s = tf.reduce_sum(score_fn(point))
        total += tape.gradient(s, point)
    return diff * total / tf.cast(steps, tf.float32)


def integrated_gradients(score_fn: ScoreFunction, images: np.ndarray | tf.Tensor,
                         steps: int | tf.Tensor = 32,
                         baseline: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Attributions [B,H,W,C] of score_fn at float ``images`` (black baseline by default)."""
    images = tf.convert_to_tensor(images, tf.float32)
    baseline = tf.zeros_like(images) if baseline is None else tf.cast(baseline, tf.float32)
    steps = tf.cast(steps, tf.int32)
    return _as_graph(score_fn, "ig", _integrated_gradients, images, baseline, steps)


def _gradcam(score_fn, images):
    acts = score_fn.activations(images)
    with tf.GradientTape() as tape:
        tape.watch(acts)
        s = tf.reduce_sum(score_fn.from_activations(acts))
    grads = tape.gradient(s, acts)
    weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, tf.shape(images)[1:3], method="bilinear")
    return tf.maximum(cam[..., 0], 0.0)


def gradcam(score_fn: ScoreFunction, images: np.ndarray | tf.Tensor) -> tf.Tensor:
    """Non-negative maps [B,H,W] at the input's spatial size."""
    images = tf.convert_to_tensor(images, tf.float32)
    return _as_graph(score_fn, "gradcam", _gradcam, images)


def heatmap(method: str, score_fn: ScoreFunction, images: np.ndarray | tf.Tensor,
            steps: int = 32) -> tf.Tensor:
    """[B,H,W] map to display: |IG| summed over channels, or the GradCAM map."""
    if method == "ig":
        return tf.reduce_sum(tf.abs(integrated_gradients(score_fn, images, steps)), axis=-1)
    if method == "gradcam":
        return gradcam(score_fn, images)
    raise ValueError(f"unknown explanation method {method!r}")


def save_explanation(path: Path | str, image_uint8: np.ndarray, heat: np.ndarray, title: str = "",
                     method: str = "") -> None:
    """PNG with the input on the left and the heat map over it on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64))
    top = heat.max()
    heat = heat / top if top > 0 else heat
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    axes[0].imshow(image_uint8, interpolation="nearest")
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(image_uint8, interpolation="nearest")
    axes[1].imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
    axes[1].set_title(method, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
