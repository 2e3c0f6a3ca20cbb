"""Representation collapse: every image mapped to (nearly) the same feature.

A collapsed network makes every detector score every image alike, so every AUC
lands near 50 whatever the detector. It is watched during training on a fixed
probe batch of unaugmented training images: the embeddings g(f(x)) are
L2-normalised and the standard deviation of each dimension over the probe batch
is averaged, then multiplied by sqrt(dim). That ``spread`` is about 1 for
embeddings spread over the sphere and 0 when all points coincide; below
``THRESHOLD`` the run is flagged. The spread goes to TensorBoard
(``epoch_embed_spread``), a line to the console, and the verdict to
``summary.json`` (``meta.collapse``) through ``stats/collapse.json`` (rewritten
every epoch, so the verdict survives a resume).

The verdict is about the representation the detectors get, the last epoch's: a
freshly initialised network can start below the threshold (the quick start's
first epoch does) and spread out as it trains. ``first_epoch`` keeps when it was
first seen collapsed, ``recovered_epoch`` when it spread again. So the console
line of a change during training is information; the one warning is the run's
last line on a collapsed verdict (engine/experiment.py).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from engine.resume import read_json_or_none
from util.atomic import write_json_atomic

if TYPE_CHECKING:
    import keras

THRESHOLD = 0.01
PROBE_SIZE = 256
#: the probe's pixels at most (256 images of 32 x 32); large images get fewer probe images,
#: at least MIN_PROBE, so that the check costs about the same whatever the image size
PROBE_PIXELS = 256 * 32 * 32
MIN_PROBE = 32


def embedding_spread(embed: np.ndarray) -> float:
    """sqrt(dim) x mean over dimensions of the std over rows of the L2-normalised rows."""
    z = np.asarray(embed, dtype=np.float64)
    if not np.all(np.isfinite(z)):
        return float("nan")
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.std(z, axis=0)) * math.sqrt(z.shape[1]))


def probe_images(images: np.ndarray, seed: int = 0, size: int = PROBE_SIZE) -> np.ndarray:
    """A fixed subset of the training images (the same at every epoch and after resume):
    ``size`` of them, fewer for large images (``PROBE_PIXELS``). Measured at every epoch
    end, a full-size probe of 256 px images took a third of a budgeted epoch."""
    pixels = int(np.prod(np.shape(images)[1:3])) if np.ndim(images) >= 3 else 1
    size = min(size, max(MIN_PROBE, PROBE_PIXELS // max(pixels, 1)))
    if len(images) <= size:
        return images
    idx = np.sort(np.random.default_rng(seed).choice(len(images), size, replace=False))
    return images[idx]


def load_verdict(path: Optional[Path | str]) -> dict:
    verdict = (read_json_or_none(path) if path else None) or {}
    return {"detected": False, "first_epoch": None, "recovered_epoch": None, **verdict}


def update_verdict(verdict: dict, epoch: int, spread: float,
                   threshold: float = THRESHOLD) -> Optional[str]:
    """Records the spread measured after ``epoch`` (1-based); returns the console message
    for a change of state (collapsed / spread again), or None."""
    collapsed = not spread >= threshold  # NaN counts as collapsed
    was = verdict["detected"]
    verdict["last_spread"] = spread
    verdict["detected"] = collapsed
    if collapsed and not was:
        if verdict["first_epoch"] is None:
            verdict["first_epoch"] = epoch
        verdict["recovered_epoch"] = None
        # not a warning yet: the verdict is the last epoch's (the run ends with a warning
        # if it is still collapsed then), and a fresh network often dips below at first
        return (f"representation collapse at epoch {epoch}: the probe images' embeddings have "
                f"spread {spread:.3g} (threshold {threshold}); if it stays collapsed every "
                "detector will score near chance, and the run ends with a warning (then try "
                "another --seed or a lower --learning_rate)")
    if was and not collapsed:
        verdict["recovered_epoch"] = epoch
        return (f"the embeddings spread out again at epoch {epoch} (spread {spread:.3g}, "
                f"threshold {threshold}): no collapse now")
    return None


def make_monitor(probe: np.ndarray, verdict_path: Optional[Path | str],
                 threshold: float = THRESHOLD,
                 log: Optional[Callable[[str], None]] = None) -> keras.callbacks.Callback:
    """A Keras callback that measures the spread at every epoch end (imports Keras)."""
    import keras

    from data.augment import to_float_images

    log = log or (lambda msg: print(msg, file=sys.stderr))
    probe = to_float_images(probe)

    class CollapseMonitor(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.verdict = load_verdict(verdict_path)

        def measure(self):
            return embedding_spread(self.model.extract(probe)["embed"])

        def on_epoch_end(self, epoch, logs=None):
            spread = self.measure()
            if logs is not None:
                logs["embed_spread"] = spread
            message = update_verdict(self.verdict, epoch + 1, spread, threshold)
            if message:
                log(message)
            if verdict_path:
                write_json_atomic(verdict_path, self.verdict)

    return CollapseMonitor()
