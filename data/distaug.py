"""Distribution augmentation: extend the training set offline with transformed copies.

Used by ``contrastive_da``: each transformed copy is a separate training
instance, so a rotated image is a negative of its original in the contrastive
loss. Works on numpy NHWC arrays before the tf.data pipeline is built.
Rotations are counter-clockwise, the same as ``tf.image.rot90``.
"""

import numpy as np

from util.errors import ConfigError

# The paper's ordered list; type 'k' takes its first k entries. 'rot90+hflip'
# means rotate by 90 degrees, then flip left-right.
_ORDERED = ("original", "hflip", "rot90", "rot90+hflip",
            "rot180", "rot180+hflip", "rot270", "rot270+hflip")

_NAMED = {
    "none": ("original",),
    "rot": ("original", "rot90", "rot180", "rot270"),
    "hflip": ("original", "hflip"),
    "vflip": ("original", "vflip"),
}

DISTAUG_TYPES = tuple(_NAMED) + tuple(str(k) for k in range(1, len(_ORDERED) + 1))

_ROTATIONS = {"original": 0, "rot90": 1, "rot180": 2, "rot270": 3}


def distaug_transforms(distaug_type):
    """Transform names, in order, for a distribution-augmentation type (str or int 1..8)."""
    key = distaug_type
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = str(int(key))
    if isinstance(key, str):
        key = key.strip().lower()
    if key in _NAMED:
        return list(_NAMED[key])
    if key in DISTAUG_TYPES:
        return list(_ORDERED[:int(key)])
    raise ConfigError(
        "unknown distribution augmentation type %r; valid types: %s ('rot' = 4 "
        "rotations, 'hflip'/'vflip' = original + flip, '1'..'8' = the first k of %s)"
        % (distaug_type, ", ".join(DISTAUG_TYPES), ", ".join(_ORDERED)))


def distaug_has_hflip(distaug_type):
    """True when the distribution augmentation makes horizontally flipped copies."""
    try:
        names = distaug_transforms(distaug_type)
    except ConfigError:
        return False  # the flag check reports the bad --distaug_type
    return any("hflip" in name for name in names)


def _check_nhwc(images, what):
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ConfigError(
            "%s needs a numpy array of images shaped [N,H,W,C], got %s; stack the "
            "images into one NHWC array first"
            % (what, getattr(images, "shape", type(images).__name__)))


def _needs_square(names):
    return any(name.startswith("rot") and _ROTATIONS[name.split("+")[0]] % 2 == 1
               for name in names)


def apply_transform(images, name):
    """One named transform of an NHWC numpy batch ('rotK' then optional '+hflip')."""
    _check_nhwc(images, "apply_transform")
    valid = _ORDERED + ("vflip",)
    if name not in valid:
        raise ConfigError("unknown transform %r; valid transforms: %s" % (name, ", ".join(valid)))
    base, _, then = name.partition("+")
    if _needs_square([name]) and images.shape[1] != images.shape[2]:
        raise ConfigError(
            "transform %r needs square images, got %dx%d; resize or crop the images "
            "to a square first, or use distaug type 'hflip'/'vflip'"
            % (name, images.shape[1], images.shape[2]))
    out = images
    if base in _ROTATIONS:
        # np.rot90 over (H, W) turns from the first axis towards the second:
        # counter-clockwise, as tf.image.rot90.
        out = np.rot90(out, _ROTATIONS[base], axes=(1, 2))
    elif base == "hflip":
        out = out[:, :, ::-1]
    else:
        out = out[:, ::-1]
    if then == "hflip":
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def apply_distribution_augmentation(images, distaug_type):
    """[T0(images); T1(images); ...] along the batch axis, dtype preserved.

    Copy t of image i is at index t * N + i, so labels/indices extend with
    np.tile(labels, len(distaug_transforms(distaug_type))).
    """
    names = distaug_transforms(distaug_type)
    _check_nhwc(images, "apply_distribution_augmentation")
    if _needs_square(names) and images.shape[1] != images.shape[2]:
        raise ConfigError(
            "distribution augmentation %r rotates images, which needs square images, "
            "got %dx%d; resize or crop them to a square first, or use 'hflip'/'vflip'"
            % (distaug_type, images.shape[1], images.shape[2]))
    return np.concatenate([apply_transform(images, name) for name in names], axis=0)
