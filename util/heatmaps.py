"""Heat-map pictures and raw maps of an MVTec-style evaluation.

``<run>/heatmaps/<defect>/<name>.png`` per test image: the input, the input
with the ground-truth outline (when there is a mask), and the pixel score map
overlaid on the input. One colour scale serves the whole run, so maps are
comparable across images; the colour bar shows it in score units (see
``heat_norm``). ``<run>/heatmaps/maps.npz`` holds the raw maps:
``patch_maps`` [N, n, n] float32, ``pixel_maps`` [N, H, W] float16,
``image_scores``, ``labels``, ``defects``, ``names`` and (with masks)
``masks``, plus the colour scale's ``vmin``, ``pivot`` and ``vmax``.

The scripts write such pictures for new images into folders of their own
kinds (util/ownership.py): ``MAPS_KIND`` (score.py --maps_dir) and
``EXPLANATIONS_KIND`` (score.py --explain_dir, explain.py --out).
"""

import io
import os

import numpy as np
from tqdm import tqdm

from util.atomic import atomic_path, write_bytes_atomic
from util.ownership import manifest_kind

MAPS_KIND = manifest_kind("folder of anomaly maps")
EXPLANATIONS_KIND = manifest_kind("folder of explanations")


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "_"


def scale_params(pixel_maps, labels=None):
    """(vmin, pivot, vmax) of a run's colour scale, from all its pixel scores.

    pivot = the 99.5th percentile of the good test images' pixel scores (of all
    pixels' 99th when the run has no good test image); vmin / vmax = the 1st /
    99.9th percentile of all pixel scores.
    """
    maps = np.asarray(pixel_maps, np.float64)
    good = maps[np.asarray(labels) == 0] if labels is not None else maps[:0]
    pivot = np.percentile(good, 99.5) if good.size else np.percentile(maps, 99.0)
    vmin, vmax = np.percentile(maps, [1.0, 99.9])
    vmin = min(vmin, pivot - 1e-6)
    return float(vmin), float(pivot), float(max(vmax, pivot + 1e-6))


def heat_norm(pixel_maps, labels=None):
    """The run's colour normalisation: the middle of the bar = the good images' top.

    Detector scores are heavy-tailed (GDE's Mahalanobis terms, KDE's
    -log density): on a linear scale up to the 99.9th percentile a few huge
    defects take the top colour and paint every moderate defect as normal. Here
    scores up to ``pivot`` (what 99.5% of the good test images' pixels stay
    under) fill the lower half of the bar linearly, and scores above it fill
    the upper half on a log scale, log1p((s - pivot) / w) with w = pivot - vmin,
    up to the 99.9th percentile. So a warm colour means "above nearly every
    good pixel", moderate and huge anomalies both stand out, and the colour bar
    still reads in score units.
    """
    return split_norm(*scale_params(pixel_maps, labels))


def split_norm(vmin, pivot, vmax):
    """``heat_norm``'s colour normalisation for explicit (vmin, pivot, vmax): linear up to
    ``pivot`` in the lower half of the bar, logarithmic above it in the upper half."""
    from matplotlib.colors import FuncNorm

    pivot = float(pivot)
    # a gap relative to the pivot: 1e-6 below -1e30 is -1e30 itself, and a zero width
    eps = max(1e-6, abs(pivot) * 1e-6)
    vmin = min(float(vmin), pivot - eps)
    vmax = max(float(vmax), pivot + eps)
    w = pivot - vmin
    top = np.log1p((vmax - pivot) / w)

    def forward(x):
        x = np.asarray(x, np.float64)
        low = 0.5 * (x - vmin) / w
        high = 0.5 + 0.5 * np.log1p(np.maximum(x - pivot, 0.0) / w) / top
        return np.where(x <= pivot, low, high)

    def inverse(y):
        y = np.asarray(y, np.float64)
        low = vmin + 2.0 * y * w
        high = pivot + w * np.expm1(np.maximum(2.0 * y - 1.0, 0.0) * top)
        return np.where(y <= 0.5, low, high)

    return FuncNorm((forward, inverse), vmin=vmin, vmax=vmax)


def write_heatmaps(out_dir, images, pixel_maps, patch_maps, image_scores, labels, defects, names,
                   masks=None, title=""):
    """Writes one PNG per image and maps.npz under ``out_dir``; returns the number of PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    norm = heat_norm(pixel_maps, labels)
    vmin, pivot, vmax = scale_params(pixel_maps, labels)
    arrays = dict(patch_maps=np.asarray(patch_maps, np.float32),
                  pixel_maps=np.asarray(pixel_maps, np.float16),
                  image_scores=np.asarray(image_scores, np.float64),
                  labels=np.asarray(labels, np.int64), defects=np.asarray(defects, dtype=str),
                  names=np.asarray(names, dtype=str), vmin=np.float64(vmin),
                  vmax=np.float64(vmax), pivot=np.float64(pivot))
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
        im = axes[-1].imshow(pixel_maps[i], cmap="jet", alpha=0.5, norm=norm)
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


def _rgb(image):
    """uint8 [H, W, 3] of a gray [H, W] or colour [H, W, C>=3] image."""
    image = np.asarray(image, np.uint8)
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]


def outline(mask):
    """bool [H, W]: the pixels of ``mask`` with a 4-neighbour outside it (its border)."""
    m = np.asarray(mask, bool)
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


class PredictionFigure:
    """One PNG per scored image: the input, the anomaly map over it with the predicted
    mask's outline in white, and a colour bar, on one fixed scale (``split_norm``) for
    every image.

    The picture is composed with numpy and written by Pillow (a few milliseconds an
    image), not drawn by matplotlib (a tenth of a second or more), so writing maps does
    not slow scoring down much: the colours are the ``jet`` colour map of the norm,
    blended half and half with the input.
    """

    BAR = 12  # px, the width of the colour bar

    def __init__(self, norm, title=""):
        import matplotlib

        self.norm, self.title = norm, title
        self.cmap = matplotlib.colormaps["jet"]

    def overlay(self, image, pixel_map, mask):
        """uint8 [H, W, 3]: the map's colours blended with the image, the mask outlined."""
        colours = self.cmap(np.clip(self.norm(pixel_map), 0.0, 1.0), bytes=True)[..., :3]
        mixed = ((_rgb(image).astype(np.uint16) + colours) // 2).astype(np.uint8)
        mixed[outline(mask)] = 255
        return mixed

    def write(self, path, image, pixel_map, mask, caption):
        from PIL import Image, ImageDraw

        mixed = self.overlay(image, pixel_map, mask)
        h = mixed.shape[0]
        bar = self.cmap(np.linspace(1.0, 0.0, h), bytes=True)[:, None, :3].repeat(self.BAR, 1)
        gap = np.full((h, 4, 3), 255, np.uint8)
        body = np.concatenate([_rgb(image), gap, mixed, gap, bar], axis=1)
        header = 14 * (2 if self.title else 1)
        canvas = Image.new("RGB", (body.shape[1], h + header), "white")
        canvas.paste(Image.fromarray(body), (0, header))
        draw = ImageDraw.Draw(canvas)
        draw.text((2, 1), caption, fill="black")
        if self.title:
            draw.text((2, 15), self.title, fill="black")
        buf = io.BytesIO()
        canvas.save(buf, format="PNG", compress_level=1)
        write_bytes_atomic(path, buf.getvalue())

    def close(self):
        pass
