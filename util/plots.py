"""Plots of a run's per-image scores (matplotlib, Agg backend, written atomically).

* ``roc.png``: one ROC curve per detector key, AUC in the legend;
* ``score_hist.png``: per key, histograms of inlier vs outlier test scores with
  the calibrated threshold as a vertical line.
"""

import numpy as np

from util.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_points(labels, scores):
    """(FPR, TPR) arrays of the ROC curve, thresholds 'score >= t' high to low."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    return np.r_[0.0, fp / max(1, (~y).sum())], np.r_[0.0, tp / max(1, y.sum())]


def _save(fig, path):
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_roc(path, labels, test_scores, aucs=None, title=None):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    for key in sorted(test_scores):
        fpr, tpr = roc_points(labels, test_scores[key])
        label = key if not aucs or key not in aucs else f"{key} ({aucs[key]:.1f})"
        ax.plot(fpr, tpr, lw=1.2, label=label)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate (inliers flagged)")
    ax.set_ylabel("true positive rate (outliers flagged)")
    ax.set_title(title or "ROC (AUC x 100)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def plot_histograms(path, labels, test_scores, thresholds=None, cols=4):
    """One panel per score key, at most ``cols`` a row; a grid slot left over in the
    last row is removed, not drawn empty."""
    plt = _pyplot()
    keys = sorted(test_scores)
    cols = min(cols, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    y = np.asarray(labels).astype(bool)
    for ax, key in zip(axes.ravel(), keys):
        s = np.asarray(test_scores[key], dtype=np.float64)
        bins = np.histogram_bin_edges(s, bins=40)
        for part, label in ((s[~y], "inliers"), (s[y], "outliers")):
            if not len(part):  # e.g. good parts only: no outliers to draw
                continue
            # one filled step polygon per histogram (ax.hist draws a patch per bar: slow)
            ax.stairs(np.histogram(part, bins=bins, density=True)[0], bins, fill=True,
                      alpha=0.6, label=label)
        if thresholds and key in thresholds:
            ax.axvline(thresholds[key], color="k", lw=1, ls="--", label="threshold")
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(keys):]:
        fig.delaxes(ax)
    axes.ravel()[0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
