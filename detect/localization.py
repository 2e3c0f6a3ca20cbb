"""Dense patch scoring for localisation: the patch grid, batched patch features, upsampling.

At test time every ``patch x patch`` window at ``stride`` is one detector
input: for 256 / 32 / 4 that is a 57 x 57 grid (``(256 - 32) // 4 + 1``),
patch (i, j) covering rows ``4i .. 4i+31`` and columns ``4j .. 4j+31``.
Patches are cut with ``tf.image.extract_patches`` a few images at a time and
run through the network in fixed-size batches (no Python loop per patch), so
memory stays bounded whatever the number of images.

The image score is the max of its map; the pixel map is the patch map
upsampled by a transposed convolution with one ``patch x patch`` Gaussian
kernel at ``stride``, normalised by the Gaussian-weighted overlap of the
patches covering each pixel (see ``upsample_maps``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

from util.errors import ConfigError

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

# sigma of the upsampling Gaussian, as a fraction of the patch side (32 px -> 4 px)
GAUSSIAN_SIGMA_FRACTION = 0.125


def grid_size(image_size: int, patch_size: int, stride: int) -> int:
    """Patches per side: (image - patch) // stride + 1; ConfigError when it does not tile."""
    image_size, patch_size, stride = int(image_size), int(patch_size), int(stride)
    if patch_size <= 0 or stride <= 0 or patch_size > image_size:
        raise ConfigError(f"patch size {patch_size} / stride {stride} do not fit images of "
                          f"{image_size} px (need 0 < patch <= image, stride > 0)")
    if (image_size - patch_size) % stride:
        raise ConfigError(f"--patch_stride={stride} does not tile {image_size} px images with "
                          f"{patch_size} px patches: (image - patch) must be a multiple of the "
                          "stride, e.g. 256/32/4")
    return (image_size - patch_size) // stride + 1


def grid_coords(image_size: int, patch_size: int, stride: int) -> np.ndarray:
    """int [n, n, 2]: (row, col) of the top-left pixel of patch (i, j)."""
    n = grid_size(image_size, patch_size, stride)
    starts = np.arange(n) * int(stride)
    return np.stack(np.meshgrid(starts, starts, indexing="ij"), axis=-1)


def extract_patches(images: np.ndarray | tf.Tensor, patch_size: int, stride: int) -> tf.Tensor:
    """[N, H, W, C] -> [N, n, n, patch, patch, C] (same dtype), every window of the grid."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    n = grid_size(images.shape[1], patch_size, stride)
    c = images.shape[-1]
    flat = tf.image.extract_patches(images, sizes=[1, patch_size, patch_size, 1],
                                    strides=[1, stride, stride, 1], rates=[1, 1, 1, 1],
                                    padding="VALID")
    return tf.reshape(flat, [-1, n, n, patch_size, patch_size, c])


def patch_feature_fn(model: keras.Model, feature_sets: Sequence[str]) -> Callable:
    """A compiled function float patches [B,p,p,3] -> {name: [B, D]} for ``feature_sets``.

    Uses the model's plain forward pass (pool = f(x), embed = g(f(x))), not its
    ``extract``: built-in scores such as rotation's would multiply the cost.
    """
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def fn(x):
        pooled, embed = model(x, training=False)
        out = {"pool": tf.cast(pooled, tf.float32), "embed": tf.cast(embed, tf.float32)}
        return {k: out[k] for k in feature_sets}

    return fn


def features_of_patches(fn: Callable, patches: np.ndarray | tf.Tensor,
                        batch_size: int = 512) -> dict:
    """{name: float32 [P, D]} of uint8 patches [P,p,p,C] through ``patch_feature_fn``'s ``fn``.

    Fixed-size batches (the last one padded) so one trace serves every call.
    """
    import tensorflow as tf

    from data.augment import to_float_images

    parts = {}
    total = int(patches.shape[0])
    for b in range(0, total, batch_size):
        x = to_float_images(patches[b:b + batch_size])
        real = int(x.shape[0])
        if real < batch_size:
            x = tf.pad(x, [[0, batch_size - real], [0, 0], [0, 0], [0, 0]])
        for k, v in fn(x).items():
            parts.setdefault(k, []).append(v.numpy()[:real])
    return {k: np.concatenate(v) for k, v in parts.items()}


def dense_patch_features(model: keras.Model, images: np.ndarray, patch_size: int, stride: int,
                         feature_sets: Sequence[str] = ("pool",), batch_size: int = 512,
                         progress: bool = True) -> dict:
    """{name: float32 [N, n, n, D]}: features of every grid patch of uint8 ``images``.

    Images are cut a few at a time (bounded memory) and their patches pushed
    through the model in batches of ``batch_size``.
    """
    import tensorflow as tf
    from tqdm import tqdm

    images = np.asarray(images)
    n = grid_size(images.shape[1], patch_size, stride)
    fn = patch_feature_fn(model, tuple(feature_sets))
    chunk = max(1, batch_size * 4 // (n * n))  # images cut at once
    out = None
    bar = tqdm(total=len(images), desc="patch features", unit="img", mininterval=2,
               disable=not progress)
    for start in range(0, len(images), chunk):
        imgs = images[start:start + chunk]
        patches = tf.reshape(extract_patches(imgs, patch_size, stride),
                             [-1, patch_size, patch_size, images.shape[-1]])
        feats = features_of_patches(fn, patches, batch_size)
        if out is None:
            out = {k: np.empty((len(images), n, n, v.shape[-1]), np.float32)
                   for k, v in feats.items()}
        for k, v in feats.items():
            out[k][start:start + len(imgs)] = v.reshape(len(imgs), n, n, -1)
        bar.update(len(imgs))
    bar.close()
    return out


def conv_phases(n: int, stride: int, net_stride: int) -> dict:
    """{shift r: (grid indices i with (i * stride) % S == r, their cell index i * stride // S)}.

    Grid patches whose start has residue r modulo the network stride S start on a
    trunk cell boundary of the pass over the image shifted by r pixels; the
    export's graph (deploy/patch_scorer.py) assembles its grids the same way.
    """
    phases = {}
    for i, start in enumerate(np.arange(int(n)) * int(stride)):
        rows, cells = phases.setdefault(int(start % net_stride), ([], []))
        rows.append(i)
        cells.append(int(start // net_stride))
    return {r: (np.array(i), np.array(c)) for r, (i, c) in sorted(phases.items())}


class ConvGridFeatures:
    """Grid features from fully convolutional passes (``--patch_features=conv``).

    Instead of cropping every patch, the whole image goes through the conv trunk
    once per phase, and the pool feature of patch (i, j) is the mean of the
    ``k x k`` trunk cells under it (k = patch / network stride S), as global
    average pooling does for a cropped patch. A grid stride that is not a
    multiple of S needs S / gcd(S, stride) shifted passes per axis (2 x 2 for
    stride 4 and S = 8): about 12x fewer FLOPs than cropping at 256 / 32 / 4.
    The features see context beyond the patch (the receptive field is not cut at
    the patch border), so they differ from the cropped ones; the detectors are
    fit on features made the same way (``sampled``).
    """

    def __init__(self, model: keras.Model, image_size: int, patch_size: int, stride: int,
                 feature_sets: Sequence[str] = ("pool",)) -> None:
        import tensorflow as tf

        from model.trunk import network_stride, shape_free_trunk  # TensorFlow: features only

        self.model, self.size, self.feature_sets = model, int(image_size), tuple(feature_sets)
        self.n = grid_size(image_size, patch_size, stride)
        trunk = shape_free_trunk(model)
        self.net_stride = network_stride(trunk, patch_size)
        k = patch_size // self.net_stride
        self.pooled = tf.function(
            lambda x: tf.nn.avg_pool2d(trunk(x, training=False), k, 1, "VALID"),
            reduce_retracing=True)
        self.phases = conv_phases(self.n, stride, self.net_stride)

    def __call__(self, images: np.ndarray, images_per_pass: int = 4, progress: bool = True) -> dict:
        """{name: float32 [N, n, n, D]} of uint8 images [N, size, size, C]."""
        from tqdm import tqdm

        from data.augment import to_float_images

        images = self._checked(images)
        pool = None
        bar = tqdm(total=len(images), desc="conv patch features", unit="img", mininterval=2,
                   disable=not progress)
        for b in range(0, len(images), images_per_pass):
            x = to_float_images(images[b:b + images_per_pass])
            for r, (rows, row_cells) in self.phases.items():
                for c, (cols, col_cells) in self.phases.items():
                    grid = self._phase_cells(x, r, c)
                    if pool is None:
                        pool = np.empty((len(images), self.n, self.n, grid.shape[-1]), np.float32)
                    pool[b:b + len(x), rows[:, None], cols[None]] = \
                        grid[:, row_cells[:, None], col_cells[None]]
            bar.update(len(x))
        bar.close()
        return self._with_embed(pool)

    def _checked(self, images):
        images = np.asarray(images)
        if images.shape[1:3] != (self.size, self.size):
            raise ConfigError(f"conv patch features expect {self.size}x{self.size} images, got "
                              f"{images.shape[1]}x{images.shape[2]}")
        return images

    def _phase_cells(self, x, r, c):
        """Pooled trunk cells of float images ``x`` shifted by (r, c) pixels: [B, h, w, D]."""
        h = (self.size - r) // self.net_stride * self.net_stride
        w = (self.size - c) // self.net_stride * self.net_stride
        return self.pooled(x[:, r:r + h, c:c + w]).numpy()

    def _with_embed(self, pool):
        """{name: features} for the requested sets, from pool features [..., D]."""
        import tensorflow as tf

        out = {"pool": pool}
        if "embed" in self.feature_sets:
            flat = pool.reshape(-1, pool.shape[-1])
            out["embed"] = np.concatenate([
                tf.cast(self.model.head(flat[s:s + 4096], training=False), tf.float32).numpy()
                for s in range(0, len(flat), 4096)]).reshape(pool.shape[:-1] + (-1,))
        return {k: out[k] for k in self.feature_sets}

    def sampled(self, images: np.ndarray, count: int, seed: int = 0, chunk: int = 16,
                draw: str = "phase") -> dict:
        """{name: [count, D]}: features of ``count`` random grid patches of ``images``, the
        detectors' training set.

        ``draw="phase"``: each image gets one random shift (r, c) of the S / gcd(S,
        stride) per axis (S = network stride), and its positions are drawn among
        the grid patches of that shift, so one pass per image (a quarter of the
        test grid's passes at stride 4, S = 8) still covers every shift across
        the training set. Shifts matter: the trunk is equivariant only to
        multiples of S, so patches off a cell boundary have their own feature
        statistics (drawing on the unshifted cells only scored 6 image AUROC
        points lower on bottle). ``draw="grid"``: all shifts of every image, the
        same draw as ``sample_grid_patches`` (crop mode), at 4x the passes.
        """
        if draw not in ("phase", "grid"):
            raise ConfigError(f"conv detector draw must be 'phase' or 'grid', got {draw!r}")
        images = self._checked(images)
        if draw == "grid":
            return self._grid_draw(images, count, seed, chunk)
        return self._phase_draw(images, count, seed, chunk)

    def _grid_draw(self, images, count, seed, chunk):
        cells = self.n * self.n
        img, pos = draw_grid_positions(len(images), cells, count, seed)
        out = {k: [] for k in self.feature_sets}
        for start in range(0, len(images), chunk):  # bounded memory: a few images' grids
            sel = (img >= start) & (img < start + chunk)
            if sel.any():
                for k, v in self(images[start:start + chunk], progress=False).items():
                    out[k].append(v.reshape(-1, cells, v.shape[-1])[img[sel] - start, pos[sel]])
        return {k: np.concatenate(v) for k, v in out.items()}

    def phase_draw(self, num_images: int, count: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The "phase" draw: (img, grid row, grid col, shift [num_images, 2]) of ``count``
        patches, each image's positions among the grid patches of its one random shift."""
        shifts = np.array(sorted(self.phases))
        shift = shifts[np.random.default_rng([seed, 1]).integers(0, len(shifts),
                                                                 (num_images, 2))]
        sizes = np.array([len(self.phases[r][0]) * len(self.phases[c][0]) for r, c in shift])
        img, pos = draw_sizes_positions(sizes, count, seed)
        ncols = np.array([len(self.phases[c][0]) for c in shift[img, 1]])
        rows = np.array([self.phases[r][0][q] for r, q in zip(shift[img, 0], pos // ncols)])
        cols = np.array([self.phases[c][0][q] for c, q in zip(shift[img, 1], pos % ncols)])
        return img, rows.astype(np.int64), cols.astype(np.int64), shift

    def _phase_draw(self, images, count, seed, chunk):
        from data.augment import to_float_images

        img, rows, cols, shift = self.phase_draw(len(images), count, seed)
        # grid index -> cell index of its shift's pass (start = index * stride)
        cell = {i: c for r, (idx, cells) in self.phases.items() for i, c in zip(idx, cells)}
        cell_row = np.array([cell[i] for i in rows], np.int64)
        cell_col = np.array([cell[j] for j in cols], np.int64)
        pool = None
        for start in range(0, len(images), chunk):
            here = np.flatnonzero((img >= start) & (img < start + chunk))
            if not len(here):
                continue
            for r, c in {tuple(t) for t in shift[img[here]]}:  # one batched pass per shift
                mine = here[(shift[img[here], 0] == r) & (shift[img[here], 1] == c)]
                members = np.unique(img[mine])
                grid = self._phase_cells(to_float_images(images[members]), r, c)
                vals = grid[np.searchsorted(members, img[mine]), cell_row[mine], cell_col[mine]]
                if pool is None:
                    pool = np.empty((len(img), vals.shape[-1]), np.float32)
                pool[mine] = vals
        return self._with_embed(pool)


def draw_grid_positions(num_images: int, cells: int, count: int,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``min(count, num_images * cells)`` distinct (image, cell) pairs, sorted: the
    detectors' training draw, shared by the crop and conv patch features."""
    total = int(num_images) * int(cells)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(total, size=min(int(count), total), replace=False))
    return pick // cells, pick % cells


def draw_sizes_positions(sizes: np.ndarray, count: int,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Like ``draw_grid_positions`` when image i has its own number of cells ``sizes[i]``."""
    sizes = np.asarray(sizes, np.int64)
    ends = np.cumsum(sizes)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(int(ends[-1]), size=min(int(count), int(ends[-1])), replace=False))
    img = np.searchsorted(ends, pick, side="right")
    return img, pick - (ends[img] - sizes[img])


def sample_grid_patches(images: np.ndarray, count: int, patch_size: int, stride: int,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct (image, grid position) patches of uint8 ``images``, uint8 [count,p,p,C].

    The detectors' training set: clean crops of the good images on the same grid
    as the test patches. Returns (patches, [count, 3] int (image, row, col)).
    """
    images = np.asarray(images)
    coords = grid_coords(images.shape[1], patch_size, stride).reshape(-1, 2)
    img, pos = draw_grid_positions(len(images), len(coords), count, seed)
    rows, cols = coords[pos, 0], coords[pos, 1]
    r = rows[:, None] + np.arange(patch_size)  # [count, p]
    c = cols[:, None] + np.arange(patch_size)
    patches = images[img[:, None, None], r[:, :, None], c[:, None, :]]
    return patches, np.stack([img, rows, cols], axis=1)


def image_scores(maps: np.ndarray) -> np.ndarray:
    """Image score = max over its patch map: [N, n, n] -> [N]."""
    maps = np.asarray(maps)
    return maps.reshape(len(maps), -1).max(axis=1)


def gaussian_kernel(patch_size: int, sigma: Optional[float] = None) -> np.ndarray:
    """[patch, patch] Gaussian centred on the patch, peak 1."""
    sigma = patch_size * GAUSSIAN_SIGMA_FRACTION if sigma is None else float(sigma)
    ax = np.arange(patch_size) - (patch_size - 1) / 2.0
    g = np.exp(-0.5 * (ax / sigma) ** 2)
    return np.outer(g, g).astype(np.float32)


def upsample_maps(maps: np.ndarray, patch_size: int, stride: int, sigma: Optional[float] = None,
                  batch: int = 16) -> np.ndarray:
    """Patch maps [N, n, n] -> pixel maps [N, H, H] with H = (n - 1) * stride + patch.

    pixel(y, x) = sum_ij map[i, j] G(y - stride*i, x - stride*j) / sum_ij G(...):
    a transposed convolution with the Gaussian G divided by the same transposed
    convolution of an all-ones map, i.e. the Gaussian-weighted overlap of the
    patches covering the pixel. In the interior at stride 4 (sigma 4) that
    overlap is constant, so this is the overlap-count normalisation up to a
    constant factor; unlike dividing by the count, it keeps a constant map
    constant up to the image border and for any stride, which matters because
    detector scores (negative log-densities) can be negative.
    """
    import tensorflow as tf

    maps = np.asarray(maps, np.float32)
    n = maps.shape[1]
    size = (n - 1) * stride + patch_size
    kernel = tf.constant(gaussian_kernel(patch_size, sigma)[:, :, None, None])
    overlap = tf.nn.conv2d_transpose(tf.ones([1, n, n, 1]), kernel, [1, size, size, 1],
                                     strides=stride, padding="VALID")
    out = np.empty((len(maps), size, size), np.float32)
    for s in range(0, len(maps), batch):
        m = tf.constant(maps[s:s + batch, :, :, None])
        up = tf.nn.conv2d_transpose(m, kernel, [m.shape[0], size, size, 1], strides=stride,
                                    padding="VALID")
        out[s:s + batch] = (up / overlap).numpy()[..., 0]
    return out


# ----------------------------------------------------------------------------
# Feature-map grids (--mvtec_mode=map): cells of the trunk's map, one pass per image
# ----------------------------------------------------------------------------

def side_or_shape(height: int, width: int) -> int | tuple:
    """One side for a square, else (height, width): how sizes are stored, so that square
    runs keep the single number they always had."""
    return int(height) if int(height) == int(width) else (int(height), int(width))


def height_width(size: int | Sequence[int]) -> tuple:
    """(height, width) of a size stored by ``side_or_shape``."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    return int(size[0]), int(size[1])


#: sigma of the Gaussian that smooths an upsampled cell map, in pixels per 256 px of image
MAP_SIGMA_PER_256 = 4.0


def map_sigma(image_size: int) -> float:
    """The smoothing sigma (px) of anomaly maps at ``image_size`` px: 4 px at 256 px."""
    return MAP_SIGMA_PER_256 * float(image_size) / 256.0


def gaussian_taps(sigma: float) -> np.ndarray:
    """float32 [2r + 1] taps of a normalised 1-D Gaussian, r = ceil(4 sigma)."""
    radius = max(1, int(np.ceil(4.0 * sigma)))
    ax = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (ax / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def smooth_upsample(maps: np.ndarray | tf.Tensor, image_size: int | Sequence[int],
                    sigma: Optional[float] = None) -> tf.Tensor:
    """Cell maps [B, h, w] -> anomaly maps [B, H, W] (TensorFlow, graph-safe) at
    ``image_size``: one side, or (H, W); the sigma scales with the longer side.

    Bilinear upsampling to the image, then a separable Gaussian blur divided by the
    same blur of an all-ones image: near the border the average is taken over the
    pixels inside the image only, so a constant map stays constant everywhere (scores
    are distances and may be large; zero padding would pull the border down).
    """
    import tensorflow as tf

    height, width = height_width(image_size)
    taps = gaussian_taps(map_sigma(max(height, width)) if sigma is None else float(sigma))
    rows, cols = taps.reshape(-1, 1, 1, 1), taps.reshape(1, -1, 1, 1)

    def blur(x):
        x = tf.nn.conv2d(x, rows, 1, "SAME")
        return tf.nn.conv2d(x, cols, 1, "SAME")

    up = tf.image.resize(tf.cast(maps, tf.float32)[..., None], [height, width],
                         method="bilinear")
    weight = blur(tf.ones([1, height, width, 1]))
    return (blur(up) / weight)[..., 0]


def map_pixels(maps: np.ndarray, image_size: int | Sequence[int], batch: int = 16) -> np.ndarray:
    """numpy cell maps [N, h, w] -> float32 anomaly maps [N, H, W] (``smooth_upsample``)."""
    maps = np.asarray(maps, np.float32)
    out = np.empty((len(maps), *height_width(image_size)), np.float32)
    for s in range(0, len(maps), batch):
        out[s:s + batch] = smooth_upsample(maps[s:s + batch], image_size).numpy()
    return out
