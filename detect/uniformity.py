"""Uniformity of the embedding on the unit sphere (the paper's uniformity analysis).

The statistic is the squared maximum mean discrepancy (MMD^2, unbiased
U-statistic) between the l2-normalised embeddings g(f(x)) of the test
inliers and as many points drawn uniformly on the unit sphere of the same
dimension (normalised standard Gaussians), with the Gaussian kernel
k(a, b) = exp(-||a - b||^2 / (2 sigma^2)) and sigma = 1 (``BANDWIDTH``). On the
unit sphere ||a - b||^2 = 2 - 2 cos(a, b) lies in [0, 4], so sigma = 1 keeps
the kernel informative over the whole range. 0 means uniform; a collapsed
embedding (all points close together) gives a clearly positive value (up to
about 1 - 2 exp(-1) + ... for a single point); the unbiased estimate can be
slightly negative for a perfectly uniform sample. At most ``MAX_POINTS``
inliers are used (a seeded random subset).

Reported as ``uniformity.mmd2`` in summary.json / eval_history.jsonl and as
``uniformity/mmd2`` in TensorBoard. Feature set: ``embed`` when the model has
one, else ``pool``.
"""

from typing import Mapping

import numpy as np

BANDWIDTH = 1.0
MAX_POINTS = 2000
KEY = "uniformity.mmd2"


def _normalise(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def uniform_sphere(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    return _normalise(rng.standard_normal((n, dim)))


def _kernel_mean(a, b, sigma, exclude_diagonal):
    sq = np.maximum(np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T, 0.0)
    k = np.exp(-sq / (2.0 * sigma * sigma))
    if exclude_diagonal:
        n = len(a)
        return (k.sum() - np.trace(k)) / (n * (n - 1))
    return k.mean()


def mmd2(x: np.ndarray, y: np.ndarray, sigma: float = BANDWIDTH) -> float:
    """Unbiased MMD^2 between samples x [n, d] and y [m, d] (n, m >= 2), Gaussian kernel."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(_kernel_mean(x, x, sigma, True) + _kernel_mean(y, y, sigma, True)
                 - 2.0 * _kernel_mean(x, y, sigma, False))


def mmd_to_uniform(features: np.ndarray, seed: int = 0, sigma: float = BANDWIDTH,
                   max_points: int = MAX_POINTS) -> float:
    """MMD^2 between the l2-normalised ``features`` and uniform points on the sphere."""
    rng = np.random.default_rng(seed)
    x = _normalise(features)
    if len(x) > max_points:
        x = x[np.sort(rng.choice(len(x), max_points, replace=False))]
    return mmd2(x, uniform_sphere(len(x), x.shape[1], rng), sigma)


def uniformity_results(test_feats: Mapping, test_labels: np.ndarray, seed: int = 0) -> dict:
    """{KEY: MMD^2} of the test inliers' embedding; {} when there are fewer than 2."""
    name = "embed" if "embed" in test_feats else "pool"
    if name not in test_feats:
        return {}
    inliers = np.asarray(test_feats[name])[np.asarray(test_labels) == 0]
    if len(inliers) < 2:
        return {}
    return {KEY: mmd_to_uniform(inliers, seed)}
