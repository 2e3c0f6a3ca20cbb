"""Batched, vectorised training augmentation (the project's only augmentation module).

``build_augment_fn(spec)`` turns an ``--aug_list`` spec (grammar and defaults:
data/aug_spec.py) into a function from a float32 batch [B, H, W, 3] (or uint8,
converted here) to a tuple of augmented batches, one per view of the spec.
Every op draws its random parameters per image with stateful ``tf.random`` ops
and keeps the static shape; nothing loops over images, so the whole chain runs
cheaply inside ``tf.data.Dataset.map`` after ``.batch()`` (graph mode) and
also eagerly. Views that start with the same ops (``A,+rotate90,...``, or the
two views of a contrastive pair) run those ops once on the views stacked along
the batch axis, each copy with its own random draws.

As in the public release, pixels are not clipped: brightness and the other
float ops may leave [0, 1] and training sees those values. ``clip_pixels=True``
(``--clip_pixels``) clips after each jitter op and at the end.
"""

import functools
import itertools
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from data.aug_spec import DEFAULT_AUG, parse_aug_list  # noqa: F401 (DEFAULT_AUG re-exported)
from util.errors import ConfigError

# Luma weights used by tf.image.rgb_to_grayscale.
_LUMA = (0.2989, 0.5870, 0.1140)

# ----------------------------------------------------------------------------
# Helpers


def _check_images(images, what="images"):
    """Returns images as a float32 tensor after checking the [B,H,W,3] square shape.

    Integer input is refused (not silently cast) because it is almost surely in
    [0, 255]; use to_float_images first.
    """
    images = tf.convert_to_tensor(images)
    if images.dtype.is_integer or images.dtype == tf.bool:
        raise ConfigError(
            "%s have dtype %s but augmentation needs float32 in [0,1]; convert "
            "them with data.augment.to_float_images first" % (what, images.dtype.name))
    if images.dtype != tf.float32:
        images = tf.cast(images, tf.float32)
    shape = images.shape
    if shape.rank != 4 or shape[-1] != 3:
        raise ConfigError(
            "%s must be a batch of RGB images with shape [B,H,W,3], got %s; batch "
            "the dataset (and convert gray images to 3 channels) before augmenting"
            % (what, shape))
    if shape[1] is None or shape[2] is None:
        raise ConfigError(
            "%s need a static height and width, got shape %s; resize the images to a "
            "fixed size before augmenting" % (what, shape))
    if shape[1] != shape[2]:
        raise ConfigError(
            "%s must be square (H == W), got %dx%d; resize or crop them to a square "
            "first" % (what, shape[1], shape[2]))
    return images


def _finish(out, images, clip):
    """Clips to [0,1] when asked; restores the input's static shape (gathers may lose B)."""
    if clip:
        out = tf.clip_by_value(out, 0.0, 1.0)
    if not tf.executing_eagerly():
        out.set_shape(images.shape)
    return out


def _batch_size(images):
    return tf.shape(images)[0]


def _coin(images, p):
    """Per-image Bernoulli(p) draws, boolean [B]."""
    return tf.random.uniform([_batch_size(images)], dtype=tf.float32) < p


def _uniform(images, low, high):
    """Per-image uniform draws in [low, high] (also fine for low == high)."""
    u = tf.random.uniform([_batch_size(images)], dtype=tf.float32)
    return low + (high - low) * u


def _col(v):
    """[B] -> [B,1,1,1] for per-image broadcasting."""
    return tf.reshape(v, [-1, 1, 1, 1])


# ----------------------------------------------------------------------------
# Op implementations (parameters were checked by data/aug_spec.py; no final
# clip: build_augment_fn chains these and clips at the end when asked).


def _crop_boxes(batch_size, min_scale):
    """Per-image normalised square boxes [B,4] (y1,x1,y2,x2), side in [min_scale, 1]
    (``--crop_sampling=continuous``)."""
    u = tf.random.uniform([batch_size, 3], dtype=tf.float32)
    side = min_scale + (1.0 - min_scale) * u[:, 0]
    y0 = (1.0 - side) * u[:, 1]
    x0 = (1.0 - side) * u[:, 2]
    return tf.stack([y0, x0, y0 + side, x0 + side], axis=1)


def _crop_continuous(x, min_scale):
    """'cnr' with a continuous side and corner-aligned bilinear sampling (crop_and_resize)."""
    b = _batch_size(x)
    size = x.shape[1]
    boxes = _crop_boxes(b, min_scale)
    return tf.image.crop_and_resize(x, boxes, tf.range(b), [size, size], method="bilinear")


def _resample_axis(x, axis, start, side, size):
    """Bilinear resampling along ``axis`` of the window [start, start + side) of every image
    to ``size`` samples with half-pixel centres, clamped to the window (tf.image.resize's
    rule), as two batched gathers; ``start``, ``side``: int [B]."""
    s = tf.cast(side, tf.float32)[:, None]
    pos = (tf.range(size, dtype=tf.float32)[None, :] + 0.5) * (s / float(size)) - 0.5
    pos = tf.clip_by_value(pos, 0.0, s - 1.0)  # [B, size], inside the window
    low = tf.floor(pos)
    frac = pos - low
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, side[:, None] - 1)
    both = tf.gather(x, start[:, None] + tf.concat([low, high], axis=1), axis=axis,
                     batch_dims=1)  # one gather: the low then the high neighbours
    a, c = tf.split(both, 2, axis=axis)
    shape = [-1, 1, 1, 1]
    shape[axis] = size
    return a + (c - a) * tf.reshape(frac, shape)


def _crop(x, min_scale):
    """'cnr' as the release samples it: a square of integer side uniform in
    [int(min_scale * H), H] at a uniform integer offset, resized back to H x H by bilinear
    interpolation with half-pixel centres (what tf.image.resize does to the cut window),
    for the whole batch at once."""
    b = _batch_size(x)
    size = x.shape[1]
    side = tf.random.uniform([b], int(size * min_scale), size + 1, dtype=tf.int32)
    room = tf.cast(size - side + 1, tf.float32)[:, None]
    start = tf.minimum(tf.cast(tf.floor(tf.random.uniform([b, 2]) * room), tf.int32),
                       (size - side)[:, None])
    rows = _resample_axis(x, 1, start[:, 0], side, size)
    return _resample_axis(rows, 2, start[:, 1], side, size)


def _flip(x, p, axis):
    """Flips along axis (1: up-down, 2: left-right) with prob p, as one batched gather."""
    if p == 0.0:
        return x
    n = x.shape[axis]
    ramp = tf.range(n)
    index = tf.where(_coin(x, p)[:, None], n - 1 - ramp[None, :], ramp[None, :])  # [B, n]
    return tf.gather(x, index, axis=axis, batch_dims=1)


_JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
_HSV_OPS = ("saturation", "hue")


def _jitter_schedule(ops):
    """Static plan [(phase, kind, substeps, always), ...] covering every op order.

    Saturation and hue both act in HSV and commute, so an image's run of
    adjacent HSV ops needs one HSV round trip; brightness and contrast are
    cheap affine maps applied one per substep. Phases alternate between the
    kinds, so every image's order maps onto the plan, each op at its own phase
    and substep; with all four ops the plan is affine(2) hsv affine(2) hsv
    affine(1): two HSV round trips instead of four. `always` says every order
    uses the phase (so no image needs to be skipped there).
    """
    kinds = ["hsv" if op in _HSV_OPS else "affine" for op in ops]
    first = kinds[0] if len(set(kinds)) == 1 else "affine"
    longest, users = {}, {}
    orders = set(itertools.permutations(kinds))
    for seq in orders:
        phase = 0 if seq[0] == first else 1
        run = 0
        for t in range(len(seq)):
            if t > 0:
                if seq[t] == seq[t - 1]:
                    run += 1
                else:
                    phase, run = phase + 1, 0
            longest[phase] = max(longest.get(phase, 0), run + 1)
            users.setdefault(phase, set()).add(seq)
    other = "hsv" if first == "affine" else "affine"
    plan = []
    for phase in sorted(longest):
        kind = first if phase % 2 == 0 else other
        substeps = longest[phase] if kind == "affine" else 1
        plan.append((phase, kind, substeps, len(users[phase]) == len(orders)))
    return plan


def _apply_jitter(images, ops, params, perm, clip=False):
    """Applies the jitter ops to each image in its own order, with given parameters.

    ops: names of the active ops (subset of _JITTER_OPS); params: dict name -> [B]
    per-image value (brightness delta, contrast factor, saturation factor, hue
    delta); perm: int [B, len(ops)], perm[i, t] = index into ops of the op image
    i applies at step t. The result equals applying tf.image.adjust_* to each
    image in that order (up to float rounding), clipping to [0,1] after each op
    when clip is true.
    Separate from color_jitter so tests can fix the order and the parameters.
    """
    ops = list(ops)
    n = len(ops)
    b = _batch_size(images)
    perm = tf.cast(perm, tf.int32)
    kinds = tf.gather(tf.constant([op in _HSV_OPS for op in ops]), perm)  # [B, n]
    first_hsv = all(op in _HSV_OPS for op in ops)
    # Phase and substep of the static plan at which each image runs each step.
    phase = tf.cast(tf.not_equal(kinds[:, 0], first_hsv), tf.int32)
    sub = tf.zeros_like(phase)
    phases, subs = [phase], [sub]
    for t in range(1, n):
        same = tf.equal(kinds[:, t], kinds[:, t - 1])
        phase = tf.where(same, phase, phase + 1)
        sub = tf.where(same, sub + 1, 0)
        phases.append(phase)
        subs.append(sub)
    phases = tf.stack(phases, axis=1)
    subs = tf.stack(subs, axis=1)

    def selected(name, p, q=None):
        hit = tf.logical_and(tf.equal(perm, ops.index(name)), tf.equal(phases, p))
        if q is not None:
            hit = tf.logical_and(hit, tf.equal(subs, q))
        return tf.reduce_any(hit, axis=1)  # [B]

    x = images
    for p, kind, substeps, always in _jitter_schedule(ops):
        if kind == "affine":
            for q in range(substeps):
                # Images not selected get scale 1 and shift 0: exactly unchanged.
                shift = 0.0
                if "brightness" in ops:
                    shift = _col(tf.where(selected("brightness", p, q), params["brightness"], 0.0))
                if "contrast" in ops:
                    f = _col(tf.where(selected("contrast", p, q), params["contrast"], 1.0))
                    mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
                    x = x * f + (shift + (1.0 - f) * mean)
                else:
                    x = x + shift
                if clip:
                    x = tf.clip_by_value(x, 0.0, 1.0)
            continue
        # HSV phase: one round trip for the images whose order puts a run of
        # saturation/hue here; other images are left out (gathered away) because
        # the round trip is neither free nor bit-exact.
        sel = {name: selected(name, p) for name in _HSV_OPS if name in ops}
        if always:
            idx, sub_x = None, x
        else:
            touched = tf.reduce_any(tf.stack(list(sel.values())), axis=0)
            idx = tf.cast(tf.reshape(tf.where(touched), [-1]), tf.int32)
            sub_x = tf.gather(x, idx)
        # A pixel is (hue, lowest channel, highest channel): rgb = lo + (hi - lo) *
        # profile(hue), profile = hsv_to_rgb(hue, 1, 1). This is how tf.image.adjust_hue
        # works, so out-of-range pixels (the release does not clip) keep their chroma;
        # saturation scales S = (hi - lo) / hi and clips it to [0,1] as
        # tf.image.adjust_saturation does (S = 0 when hi <= 0).
        hue = tf.image.rgb_to_hsv(sub_x)[..., 0]
        hi = tf.reduce_max(sub_x, axis=-1)
        lo = tf.reduce_min(sub_x, axis=-1)

        def pick(name, neutral):
            v = tf.where(sel[name], params[name], neutral)
            return tf.reshape(v if idx is None else tf.gather(v, idx), [-1, 1, 1])

        def chosen(name):
            v = sel[name] if idx is None else tf.gather(sel[name], idx)
            return tf.reshape(v, [-1, 1, 1])

        if "saturation" in ops:
            sat = tf.where(hi > 0.0, (hi - lo) / tf.where(hi > 0.0, hi, 1.0), 0.0)
            sat = tf.clip_by_value(sat * pick("saturation", 1.0), 0.0, 1.0)
            lo = tf.where(chosen("saturation"), hi * (1.0 - sat), lo)
        if "hue" in ops:
            hue = hue + pick("hue", 0.0)
            hue = hue - tf.floor(hue)  # wrap around
        unit = tf.ones_like(hue)
        profile = tf.image.hsv_to_rgb(tf.stack([hue, unit, unit], axis=-1))
        rgb = lo[..., None] + (hi - lo)[..., None] * profile
        if clip:
            rgb = tf.clip_by_value(rgb, 0.0, 1.0)
        if idx is None:
            x = rgb
        else:
            slot = tf.cumsum(tf.cast(touched, tf.int32)) - 1
            index = tf.where(touched, b + slot, tf.range(b))
            x = tf.gather(tf.concat([x, rgb], axis=0), index)
    return x


def _jitter_ops(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
    """The active jitter ops (strength > 0), in _JITTER_OPS order."""
    strengths = {"brightness": brightness, "contrast": contrast,
                 "saturation": saturation, "hue": hue}
    return [name for name in _JITTER_OPS if strengths[name] > 0.0]


def _jitter(x, brightness, contrast, saturation, hue, clip=False, orders=None):
    """Colour jitter with random strengths per image. ``orders``: None draws a random order
    of the ops per image; else one fixed order per view ([views][ops]), every image of a
    view's block of the (view-stacked) batch in its view's order."""
    strengths = {"brightness": brightness, "contrast": contrast,
                 "saturation": saturation, "hue": hue}
    ops = _jitter_ops(brightness, contrast, saturation, hue)
    if not ops:
        return x
    params = {}
    for name in ops:
        k = strengths[name]
        if name in ("brightness", "hue"):
            params[name] = _uniform(x, -k, k)
        else:
            params[name] = _uniform(x, 1.0 - k, 1.0 + k)
    b = _batch_size(x)
    if len(ops) == 1:
        perm = tf.zeros([b, 1], dtype=tf.int32)
    elif orders is not None:  # one order per view, as drawn when the pipeline was built
        perm = tf.repeat(tf.constant(orders, tf.int32), b // len(orders), axis=0)
    else:  # a uniformly random permutation per image
        perm = tf.argsort(tf.random.uniform([b, len(ops)]), axis=1)
    return _apply_jitter(x, ops, params, perm, clip)


def _gray(x, p):
    """Per-image 3x3 colour matrix (identity or luma in every channel): one matmul."""
    if p == 0.0:
        return x
    luma = tf.constant([[w] * 3 for w in _LUMA])
    mats = tf.where(_coin(x, p)[:, None, None], luma, tf.eye(3))
    size = x.shape[1]
    out = tf.linalg.matmul(tf.reshape(x, [-1, size * size, 3]), mats)
    return tf.reshape(out, [-1, size, size, 3])


def blur_kernel_size(size):
    """SimCLR-style kernel: about 10% of the image side, odd, at least 3."""
    k = max(3, int(size) // 10)
    return k + 1 if k % 2 == 0 else k


@functools.lru_cache(maxsize=None)
def _reflect_taps(size, k):
    """[k, size, size] 0/1 matrices: tap t of output row i reads input row reflect(i+t-k//2)."""
    r = k // 2
    taps = np.zeros([k, size, size], np.float32)
    for t in range(k):
        for i in range(size):
            j = i + t - r
            if j < 0:
                j = -j
            if j >= size:
                j = 2 * (size - 1) - j
            taps[t, i, j] += 1.0
    return taps


def _blur_with_sigma(x, sigma):
    """Separable Gaussian blur, per-image sigma [B] (0 = unchanged), reflect padding.

    Each image's 1-D blur (padding included) is a [H,H] band matrix, so both
    passes are batched matmuls; a sigma of 0 gives the identity matrix, which
    leaves an image exactly as it is.
    """
    size = x.shape[1]
    k = blur_kernel_size(size)
    offsets = tf.range(-(k // 2), k // 2 + 1, dtype=tf.float32)
    safe = tf.maximum(sigma, 1e-6)[:, None]
    w = tf.exp(-tf.square(offsets)[None, :] / (2.0 * tf.square(safe)))
    w = w / tf.reduce_sum(w, axis=1, keepdims=True)
    w = tf.where((sigma > 0.0)[:, None], w, tf.cast(tf.equal(offsets, 0.0), tf.float32)[None, :])
    taps = tf.constant(_reflect_taps(size, k).reshape(k, size * size))
    mats = tf.reshape(tf.linalg.matmul(w, taps), [-1, size, size])  # [B, H, H]
    y = tf.reshape(tf.linalg.matmul(mats, tf.reshape(x, [-1, size, size * 3])),
                   [-1, size, size, 3])  # vertical pass
    y = tf.transpose(y, [0, 2, 1, 3])
    y = tf.reshape(tf.linalg.matmul(mats, tf.reshape(y, [-1, size, size * 3])),
                   [-1, size, size, 3])  # horizontal pass (on the transpose)
    return tf.transpose(y, [0, 2, 1, 3])


def _blur(x, p, sigma_min, sigma_max, train_blur=True):
    if p == 0.0 or not train_blur:
        return x
    sigma = tf.where(_coin(x, p), _uniform(x, sigma_min, sigma_max), 0.0)
    return _blur_with_sigma(x, sigma)


@functools.lru_cache(maxsize=None)
def _rot90_tables(size):
    """[4, size*size] pixel index maps of tf.image.rot90 for k = 0..3 (counter-clockwise)."""
    grid = np.arange(size * size, dtype=np.int32).reshape(size, size)
    return np.stack([np.rot90(grid, k).reshape(-1) for k in range(4)])


def _rotate_random(x):
    """'rotrand': per-image rotation by k*90 degrees, k uniform in 0..3, as one batched gather."""
    size = x.shape[1]
    k = tf.random.uniform([_batch_size(x)], 0, 4, dtype=tf.int32)
    index = tf.gather(tf.constant(_rot90_tables(size)), k)  # [B, H*W]
    out = tf.gather(tf.reshape(x, [-1, size * size, 3]), index, batch_dims=1)
    return tf.reshape(out, [-1, size, size, 3])


def _random_crop_resized(x, size):
    """'crop': a random size x size window per image (no padding), resized back to H.

    The release returns the window itself (smaller than the input); our network
    takes one fixed input size, so the window is resized back (bilinear, corner
    pixels aligned, one crop_and_resize call for the whole batch).
    """
    full = x.shape[1]
    b = _batch_size(x)
    span = float(max(full - 1, 1))
    off = tf.floor(tf.random.uniform([b, 2]) * float(full - size + 1))
    y0, x0 = off[:, 0] / span, off[:, 1] / span
    ext = (size - 1) / span
    boxes = tf.stack([y0, x0, y0 + ext, x0 + ext], axis=1)
    return tf.image.crop_and_resize(x, boxes, tf.range(b), [full, full], method="bilinear")


def _shift(x):
    """'shift': reflect-pad by int(0.125*H) on every side, then a random HxW window per image."""
    size = x.shape[1]
    pad = int(0.125 * size)
    if pad == 0:
        return x
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    off = tf.random.uniform([_batch_size(x), 2], 0, 2 * pad + 1, dtype=tf.int32)
    ramp = tf.range(size)[None, :]
    rows = off[:, :1] + ramp  # [B, H]
    cols = off[:, 1:] + ramp
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


# ----------------------------------------------------------------------------
# Public API


def to_float_images(uint8_images):
    """uint8 [B,H,W,3] -> float32 in [0,1]; the one place pixels get rescaled."""
    x = tf.convert_to_tensor(uint8_images)
    if x.dtype != tf.uint8:
        raise ConfigError(
            "to_float_images expects uint8 pixels in [0,255], got dtype %s; pass the "
            "raw uint8 images (float images are assumed to be in [0,1] already)"
            % x.dtype.name)
    return tf.cast(x, tf.float32) / 255.0


def _fixed_rotation(k):
    """Counter-clockwise rotation by k*90 degrees of every image (as tf.image.rot90)."""
    def rotate(x):
        if k == 2:
            return tf.reverse(x, [1, 2])
        x = tf.transpose(x, [0, 2, 1, 3])
        return tf.reverse(x, [1] if k == 1 else [2])
    return rotate


_OP_IMPLS = {
    "cnr": _crop,
    "cnr_continuous": _crop_continuous,
    "crop": _random_crop_resized,
    "shift": _shift,
    "resize": lambda x: x,  # images already have the network's input size
    "hflip": lambda x: _flip(x, 0.5, axis=2),
    "vflip": lambda x: _flip(x, 0.5, axis=1),
    "rotate90": _fixed_rotation(1),
    "rotate180": _fixed_rotation(2),
    "rotate270": _fixed_rotation(3),
    "rotrand": _rotate_random,
    "jitter": _jitter,
    "gray": _gray,
    "blur": lambda x, p, train_blur=True: _blur(x, p, 0.1, 2.0, train_blur),
}


def _resolve(chain, size, clip, options=None, orders=None):
    """Binds the image size (crop's default window), the clip mode and the run's options
    (``AugmentOptions``) into each op; ``orders[j]``: the fixed jitter orders of position j
    (one per view the op runs on) when the jitter order is drawn per run."""
    options = options or AugmentOptions()
    ops = []
    for j, (name, kwargs) in enumerate(chain):
        kwargs = dict(kwargs)
        if name == "cnr" and options.crop_sampling == "continuous":
            name = "cnr_continuous"
        if name == "blur":
            kwargs["train_blur"] = options.train_blur
        if name == "crop":
            if kwargs["size"] is None:
                kwargs["size"] = int(0.875 * size)
            if not 1 <= kwargs["size"] <= size:
                raise ConfigError("--aug_list: crop%d needs a window of at most the image "
                                  "size %d" % (kwargs["size"], size))
        if name == "jitter":
            kwargs["clip"] = clip
            if orders is not None:
                kwargs["orders"] = orders[j]
        ops.append(functools.partial(_OP_IMPLS[name], **kwargs))
    return ops


class AugmentOptions(NamedTuple):
    """The run-level choices where the release's behaviour and ours differ (docs/method.md).

    ``train_blur``: False makes ``blur`` a no-op, as the release's blur during training;
    ``jitter_order``: ``run`` draws one random order of the jitter ops per view when the
    function is built (from ``seed``, so a run is repeatable), as the release; ``image``
    draws one per image; ``crop_sampling``: ``release`` crops an integer side and resizes
    with half-pixel centres, ``continuous`` draws a continuous side (crop_and_resize).
    The defaults are the ops' own semantics; the training pipeline passes the run's flags,
    whose defaults are the release's.
    """

    train_blur: bool = True
    jitter_order: str = "image"
    crop_sampling: str = "release"
    seed: Optional[int] = None


def _jitter_orders(chains, seed):
    """{(view, position): fixed order of that jitter op's active ops} for every jitter op,
    drawn once from ``seed`` (None: an unseeded draw)."""
    rng = np.random.default_rng(seed)
    orders = {}
    for v, chain in enumerate(chains):
        for j, (name, kwargs) in enumerate(chain):
            if name == "jitter":
                orders[(v, j)] = [int(i) for i in rng.permutation(len(_jitter_ops(**kwargs)))]
    return orders


def _common_prefix(chains):
    n = 0
    while all(len(c) > n for c in chains) and all(c[n] == chains[0][n] for c in chains):
        n += 1
    return n


def build_augment_fn(spec, clip_pixels=False, num_views=None, options=None):
    """Returns images -> tuple of augmented batches, one per view of ``spec``.

    Parses first, so a bad spec raises ConfigError before any pipeline is
    built. ``num_views``: the number of views the caller needs; a one-entry
    spec is then drawn that many times independently (the contrastive pair),
    any other count must match. uint8 batches are converted with
    to_float_images. ``clip_pixels`` clips to [0,1] after each jitter op and
    at the end (the release never clips). ``options``: an ``AugmentOptions``.
    """
    chains = parse_aug_list(spec)
    if num_views is not None and len(chains) != num_views:
        if len(chains) != 1:
            raise ConfigError("--aug_list=%r has %d views but this model needs %d (or one "
                              "entry, drawn %d times)" % (spec, len(chains), num_views,
                                                          num_views))
        chains = chains * num_views
    shared = _common_prefix(chains)
    views = len(chains)
    options = options or AugmentOptions()
    if options.jitter_order == "run":
        fixed = _jitter_orders(chains, options.seed)
        prefix_orders = {j: [fixed[(v, j)] for v in range(views)]
                         for j in range(shared) if (0, j) in fixed}
        view_orders = [{j: [fixed[(v, j)]] for j in range(len(chains[v])) if (v, j) in fixed}
                       for v in range(views)]
    else:
        prefix_orders, view_orders = None, [None] * views

    def augment(images):
        images = tf.convert_to_tensor(images)
        if images.dtype == tf.uint8:
            images = to_float_images(images)
        images = _check_images(images)
        size = images.shape[1]
        prefix = _resolve(chains[0][:shared], size, clip_pixels, options, prefix_orders)
        if prefix:
            # the shared ops run once on the stacked copies (independent draws per copy)
            x = tf.concat([images] * views, axis=0) if views > 1 else images
            for op in prefix:
                x = op(x)
            xs = tf.split(x, views, axis=0) if views > 1 else [x]
        else:
            xs = [images] * views
        outs = []
        for v, (chain, x) in enumerate(zip(chains, xs)):
            suffix = None if view_orders[v] is None else {
                j - shared: order for j, order in view_orders[v].items() if j >= shared}
            for op in _resolve(chain[shared:], size, clip_pixels, options, suffix):
                x = op(x)
            outs.append(_finish(x, images, clip_pixels))
        return tuple(outs)

    # Every branch above is on Python values (the parsed spec, static shapes), so the
    # graph needs no AutoGraph conversion; converting this module's functions took
    # about 6 s at the start of every run.
    return tf.autograph.experimental.do_not_convert(augment)
