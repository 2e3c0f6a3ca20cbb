"""Heat-map pictures and raw maps of an MVTec-style evaluation.

``<run>/heatmaps/<defect>/<name>.png`` per test image: the input, the input
with the ground-truth outline (when there is a mask), and the pixel score map
overlaid on the input. One colour scale serves the whole run (from the 1st to
the 99.9th percentile of all pixel scores), so maps are comparable across
images; the colour bar shows it. ``<run>/heatmaps/maps.npz`` holds the raw
maps: ``patch_maps`` [N, n, n] float32, ``pixel_maps`` [N, H, W] float16,
``image_scores``, ``labels``, ``defects``, ``names`` and (with masks)
``masks``, plus ``vmin``/``vmax`` of the colour scale.
"""

import io
import os

import numpy as np
from tqdm import tqdm

from util.atomic import atomic_path, write_bytes_atomic


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "_"


def write_heatmaps(out_dir, images, pixel_maps, patch_maps, image_scores, labels, defects, names,
                   masks=None, title=""):
    """Writes one PNG per image and maps.npz under ``out_dir``; returns the number of PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    vmin, vmax = np.percentile(pixel_maps, [1.0, 99.9])
    if not vmax > vmin:
        vmax = vmin + 1e-6
    arrays = dict(patch_maps=np.asarray(patch_maps, np.float32),
                  pixel_maps=np.asarray(pixel_maps, np.float16),
                  image_scores=np.asarray(image_scores, np.float64),
                  labels=np.asarray(labels, np.int64), defects=np.asarray(defects, dtype=str),
                  names=np.asarray(names, dtype=str), vmin=np.float64(vmin),
                  vmax=np.float64(vmax))
    if masks is not None:
        arrays["masks"] = np.asarray(masks, np.uint8)
    with atomic_path(os.path.join(out_dir, "maps.npz")) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    panels = 3 if masks is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels + 0.6, 3.4))
    for i in tqdm(range(len(images)), desc="heatmaps", unit="img", mininterval=2):
        for ax in axes:
            ax.clear()
            ax.axis("off")
        axes[0].imshow(images[i])
        axes[0].set_title(f"{defects[i]}/{names[i]}", fontsize=8)
        if masks is not None:
            axes[1].imshow(images[i])
            if masks[i].any():
                axes[1].contour(masks[i], levels=[0.5], colors="lime", linewidths=1)
            axes[1].set_title("ground truth", fontsize=8)
        axes[-1].imshow(images[i])
        im = axes[-1].imshow(pixel_maps[i], cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
        axes[-1].set_title(f"score {image_scores[i]:.4g}", fontsize=8)
        if i == 0:
            fig.colorbar(im, ax=axes[-1], fraction=0.046, pad=0.04)
            if title:
                fig.suptitle(title, fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        write_bytes_atomic(os.path.join(out_dir, _safe(defects[i]), f"{_safe(names[i])}.png"),
                           buf.getvalue())
    plt.close(fig)
    return len(images)
