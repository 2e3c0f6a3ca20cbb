"""Generates small MVTec-layout category folders: a striped texture with painted defects."""

import os

import numpy as np
from PIL import Image


def texture(rng, size):
    """Diagonal stripes with a random phase plus mild noise (uint8 RGB)."""
    y, x = np.mgrid[0:size, 0:size]
    phase = rng.uniform(0, 2 * np.pi)
    base = 128 + 60 * np.sin((x + y) * 2 * np.pi / 8 + phase)
    img = np.stack([base, base * 0.9, base * 0.8], axis=-1) + rng.normal(0, 6, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_category(root, n_train=6, n_good=3, defects=("scratch", "hole"), n_defect=2, size=64,
                  masks=True, seed=0):
    """Writes ROOT/{train/good, test/good, test/<defect>, ground_truth/<defect>}; returns ROOT."""
    rng = np.random.default_rng(seed)

    def save(path, arr, mode=None):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(arr, mode).save(path)

    for i in range(n_train):
        save(os.path.join(root, "train", "good", f"{i:03d}.png"), texture(rng, size))
    for i in range(n_good):
        save(os.path.join(root, "test", "good", f"{i:03d}.png"), texture(rng, size))
    for d, defect in enumerate(defects):
        for i in range(n_defect):
            img = texture(rng, size)
            mask = np.zeros((size, size), np.uint8)
            h, w = (size // 8, size // 3) if d % 2 == 0 else (size // 5, size // 5)
            y0, x0 = rng.integers(0, size - h), rng.integers(0, size - w)
            mask[y0:y0 + h, x0:x0 + w] = 255
            img[mask > 0] = (20, 200, 40) if d % 2 == 0 else (0, 0, 0)
            save(os.path.join(root, "test", defect, f"{i:03d}.png"), img)
            if masks:
                save(os.path.join(root, "ground_truth", defect, f"{i:03d}_mask.png"), mask, "L")
    return root
