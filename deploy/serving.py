"""Graph pieces every exported scorer shares: the input preprocessing and the calibrated
outputs (raw score -> normalised score and decision)."""

from typing import Mapping

import tensorflow as tf

#: the serving signature's input: uint8 RGB images of any size
IMAGE_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")


def preprocess(images: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """uint8 [B,H,W,3] -> float32 [B,height,width,3] in [0, 1].

    Images of another size are resized bilinearly with antialiasing and rounded to
    uint8 first, as the data layer does (data.base.conform_images)."""
    shape = tf.shape(images)

    def resized():
        x = tf.image.resize(images, (height, width), method="bilinear", antialias=True)
        return tf.clip_by_value(tf.round(x), 0.0, 255.0)

    same = tf.logical_and(tf.equal(shape[1], height), tf.equal(shape[2], width))
    x = tf.cond(same, lambda: tf.cast(images, tf.float32), resized) / 255.0
    return tf.ensure_shape(x, [None, height, width, 3])


def normalized(raw: tf.Tensor, norm_min: tf.Tensor, norm_max: tf.Tensor) -> tf.Tensor:
    """float64 scores mapped from the calibration [min, max] to [0, 1], clipped."""
    span = norm_max - norm_min
    span = tf.where(span > 0, span, tf.ones_like(span))
    return tf.clip_by_value((tf.cast(raw, tf.float64) - norm_min) / span, 0.0, 1.0)


def calibration_variables(calib: Mapping) -> tuple[tf.Variable, tf.Variable, tf.Variable]:
    """tf.Variables (threshold, norm_min, norm_max) of a calibration dict."""
    return tuple(tf.Variable(float(calib[k]), dtype=tf.float64, trainable=False)
                 for k in ("threshold", "norm_min", "norm_max"))
