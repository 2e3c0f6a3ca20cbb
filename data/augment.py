"""Batched, vectorised training augmentation (the project's only augmentation module).

Every op takes a float32 batch [B, H, W, 3] in [0, 1] (square, static H and W),
draws its random parameters per image with stateful ``tf.random`` ops and returns
a float32 batch of the same static shape, clipped to [0, 1]. Nothing loops over
images, so the ops run cheaply inside ``tf.data.Dataset.map`` after ``.batch()``
(graph mode) and also eagerly.

The spec syntax (``parse_aug_list``) is the reference's, e.g. the paper default
``cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5``.
"""

import functools
import itertools
import math

import numpy as np
import tensorflow as tf

from data.aug_spec import DEFAULT_AUG, parse_aug_list  # noqa: F401  (re-exported)
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


def _finish(out, images):
    """Clips to [0,1] and restores the input's static shape (gathers may lose B)."""
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


def _check_range(name, value, low, high, low_open=False):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError("%s must be a number, got %r" % (name, value)) from None
    ok = (math.isfinite(value) and (value > low if low_open else value >= low)
          and value <= high)
    if not ok:
        raise ConfigError("%s must be in %s%g, %g], got %r" % (
            name, "(" if low_open else "[", low, high, value))
    return value


def _check_prob(name, p):
    return _check_range(name, p, 0.0, 1.0)


# ----------------------------------------------------------------------------
# Op implementations (no validation, no final clip: build_augment_fn chains
# these and clips once; the public wrappers below validate and clip).


def _crop_boxes(batch_size, min_scale):
    """Per-image normalised square boxes [B,4] (y1,x1,y2,x2), side in [min_scale, 1]."""
    u = tf.random.uniform([batch_size, 3], dtype=tf.float32)
    side = min_scale + (1.0 - min_scale) * u[:, 0]
    y0 = (1.0 - side) * u[:, 1]
    x0 = (1.0 - side) * u[:, 2]
    return tf.stack([y0, x0, y0 + side, x0 + side], axis=1)


def _crop(x, min_scale):
    b = _batch_size(x)
    size = x.shape[1]
    boxes = _crop_boxes(b, min_scale)
    return tf.image.crop_and_resize(x, boxes, tf.range(b), [size, size], method="bilinear")


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


def _apply_jitter(images, ops, params, perm):
    """Applies the jitter ops to each image in its own order, with given parameters.

    ops: names of the active ops (subset of _JITTER_OPS); params: dict name -> [B]
    per-image value (brightness delta, contrast factor, saturation factor, hue
    delta); perm: int [B, len(ops)], perm[i, t] = index into ops of the op image
    i applies at step t. The result equals applying tf.image.adjust_* to each
    image in that order, clipping to [0,1] after each op (up to float rounding).
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
        hsv = tf.image.rgb_to_hsv(sub_x)
        ones = tf.ones_like(idx if idx is not None else perm[:, 0], dtype=tf.float32)
        zeros = tf.zeros_like(ones)

        def pick(name, neutral):
            v = tf.where(sel[name], params[name], neutral)
            return v if idx is None else tf.gather(v, idx)

        if "saturation" in ops:
            scale = tf.stack([ones, pick("saturation", 1.0), ones], axis=1)
            hsv = hsv * tf.reshape(scale, [-1, 1, 1, 3])
        if "hue" in ops:
            offset = tf.stack([pick("hue", 0.0), zeros, zeros], axis=1)
            hsv = hsv + tf.reshape(offset, [-1, 1, 1, 3])
            hsv = hsv - tf.floor(hsv) * tf.constant([1.0, 0.0, 0.0])  # wrap hue only
        # Clipping S is adjust_saturation's rule; H, V are already in [0,1].
        rgb = tf.clip_by_value(tf.image.hsv_to_rgb(tf.clip_by_value(hsv, 0.0, 1.0)), 0.0, 1.0)
        if idx is None:
            x = rgb
        else:
            slot = tf.cumsum(tf.cast(touched, tf.int32)) - 1
            index = tf.where(touched, b + slot, tf.range(b))
            x = tf.gather(tf.concat([x, rgb], axis=0), index)
    return x


def _jitter(x, brightness, contrast, saturation, hue):
    strengths = {"brightness": brightness, "contrast": contrast,
                 "saturation": saturation, "hue": hue}
    ops = [name for name in _JITTER_OPS if strengths[name] > 0.0]
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
    else:  # a uniformly random permutation per image
        perm = tf.argsort(tf.random.uniform([b, len(ops)]), axis=1)
    return _apply_jitter(x, ops, params, perm)


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


def _blur(x, p, sigma_min, sigma_max):
    if p == 0.0:
        return x
    sigma = tf.where(_coin(x, p), _uniform(x, sigma_min, sigma_max), 0.0)
    return _blur_with_sigma(x, sigma)


@functools.lru_cache(maxsize=None)
def _rot90_tables(size):
    """[4, size*size] pixel index maps of tf.image.rot90 for k = 0..3 (counter-clockwise)."""
    grid = np.arange(size * size, dtype=np.int32).reshape(size, size)
    return np.stack([np.rot90(grid, k).reshape(-1) for k in range(4)])


def _rotate90(x):
    """Per-image rotation as one batched gather of pixel index maps."""
    size = x.shape[1]
    k = tf.random.uniform([_batch_size(x)], 0, 4, dtype=tf.int32)
    index = tf.gather(tf.constant(_rot90_tables(size)), k)  # [B, H*W]
    out = tf.gather(tf.reshape(x, [-1, size * size, 3]), index, batch_dims=1)
    return tf.reshape(out, [-1, size, size, 3])


# ----------------------------------------------------------------------------
# Public ops


def to_float_images(uint8_images):
    """uint8 [B,H,W,3] -> float32 in [0,1]; the one place pixels get rescaled."""
    x = tf.convert_to_tensor(uint8_images)
    if x.dtype != tf.uint8:
        raise ConfigError(
            "to_float_images expects uint8 pixels in [0,255], got dtype %s; pass the "
            "raw uint8 images (float images are assumed to be in [0,1] already)"
            % x.dtype.name)
    return tf.cast(x, tf.float32) / 255.0


def random_resized_crop(images, min_scale):
    """Random square crop per image (side uniform in [min_scale*H, H]), resized back to HxW.

    One crop_and_resize call with a box per image keeps it vectorised.
    """
    images = _check_images(images)
    min_scale = _check_range("cnr min_scale", min_scale, 0.0, 1.0, low_open=True)
    return _finish(_crop(images, min_scale), images)


def random_hflip(images, p=0.5):
    """Left-right flip of each image with probability p."""
    images = _check_images(images)
    return _finish(_flip(images, _check_prob("hflip p", p), axis=2), images)


def random_vflip(images, p=0.5):
    """Up-down flip of each image with probability p."""
    images = _check_images(images)
    return _finish(_flip(images, _check_prob("vflip p", p), axis=1), images)


def color_jitter(images, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
    """SimCLR-style colour jitter with per-image parameters and a per-image op order.

    brightness: additive delta in [-b, b]; contrast: factor in [1-c, 1+c] around
    the per-image per-channel mean (as tf.image.adjust_contrast); saturation:
    factor in [1-s, 1+s] on S in HSV (as tf.image.adjust_saturation); hue: delta
    in [-h, h] added to H in HSV with wrap-around (as tf.image.adjust_hue).
    Values are clipped to [0,1] after each op; a strength of 0 skips its op.
    The order of the ops is a random permutation drawn per image; the public
    release draws one order when the pipeline is built, so ours differs there.
    HSV conversions only run when saturation or hue is non-zero.
    """
    images = _check_images(images)
    out = _jitter(images,
                  _check_range("jitter brightness", brightness, 0.0, 1.0),
                  _check_range("jitter contrast", contrast, 0.0, 1.0),
                  _check_range("jitter saturation", saturation, 0.0, 1.0),
                  _check_range("jitter hue", hue, 0.0, 0.5))
    return _finish(out, images)


def random_grayscale(images, p):
    """With probability p per image, replace it by its luma (rgb_to_grayscale weights) x3."""
    images = _check_images(images)
    return _finish(_gray(images, _check_prob("gray p", p)), images)


def random_gaussian_blur(images, p, sigma_min=0.1, sigma_max=2.0):
    """With probability p per image, Gaussian blur with sigma uniform in [sigma_min, sigma_max].

    Kernel size follows SimCLR (about 10% of the side, odd, >= 3: 3 taps at
    32 px), reflect padding. In the public release this blur is accidentally a
    no-op during training; ours really blurs.
    """
    images = _check_images(images)
    p = _check_prob("blur p", p)
    sigma_min = _check_range("blur sigma_min", sigma_min, 0.0, 1e6, low_open=True)
    sigma_max = _check_range("blur sigma_max", sigma_max, sigma_min, 1e6)
    return _finish(_blur(images, p, sigma_min, sigma_max), images)


def random_rotate90(images):
    """Rotates each image by k*90 degrees counter-clockwise (as tf.image.rot90), k uniform in 0..3."""
    images = _check_images(images)
    return _finish(_rotate90(images), images)


_OP_IMPLS = {
    "cnr": _crop,
    "hflip": lambda x: _flip(x, 0.5, axis=2),
    "vflip": lambda x: _flip(x, 0.5, axis=1),
    "jitter": _jitter,
    "gray": _gray,
    "blur": lambda x, p: _blur(x, p, 0.1, 2.0),
    "rotate90": _rotate90,
}


def build_augment_fn(spec):
    """Returns images -> images applying the spec's ops in order.

    Parses first so a bad spec raises ConfigError before any pipeline is built.
    The ops are chained without intermediate clipping (each stays in [0,1] up to
    rounding; jitter clips inside) and the result is clipped once. uint8 batches
    are converted with to_float_images; 'x' returns float input unchanged.
    """
    ops = parse_aug_list(spec)
    if not ops:
        def identity(images):
            # uint8 still becomes float so every spec yields the same dtype.
            if getattr(images, "dtype", None) in (tf.uint8, np.uint8):
                return to_float_images(images)
            return images
        return identity

    def augment(images):
        images = tf.convert_to_tensor(images)
        if images.dtype == tf.uint8:
            images = to_float_images(images)
        images = _check_images(images)
        x = images
        for name, kwargs in ops:
            x = _OP_IMPLS[name](x, **kwargs)
        return _finish(x, images)

    return augment
