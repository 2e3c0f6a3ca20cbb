"""BatchNorm whose training pass is one fused op.

Keras 3's BatchNormalization trains through separate ops (mean, squared
difference, variance, rsqrt, scale, shift, and as many again for the gradient),
each a pass over the activations; on a CPU these took about 30% of the op time of
a width-0.25 training step (docs/performance.md). ``FusedBatchNorm`` computes the
same normalisation with TensorFlow's FusedBatchNormV3 (oneDNN on CPUs, cuDNN on
GPUs) and its fused gradient. The moving statistics are updated exactly as
Keras does (momentum, biased batch variance), inference is Keras's own code, and
the variables are the same four, so checkpoints, BatchNorm folding and the L2
penalty see an ordinary BatchNormalization.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="droc")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization with a fused training pass over channels-last
    images (rank 4) and features (rank 2); every other case is Keras's own path."""

    def _fusable(self, inputs, training, mask):
        return (training and self.trainable and mask is None and not self.synchronized
                and not self.renorm and self.scale and self.center
                and len(inputs.shape) in (2, 4) and self.axis in (-1, len(inputs.shape) - 1)
                and self.variable_dtype == "float32"  # the fused op keeps float32 statistics
                and keras.backend.backend() == "tensorflow")

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # as Keras: statistics in float32 under mixed precision
        shape = tf.shape(x)
        if len(inputs.shape) == 2:
            x = tf.reshape(x, [shape[0], 1, 1, shape[1]])
        empty = tf.constant([], tf.float32)
        y, mean, bessel_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.cast(self.gamma, tf.float32), offset=tf.cast(self.beta, tf.float32),
            mean=empty, variance=empty, epsilon=self.epsilon, exponential_avg_factor=1.0,
            data_format="NHWC", is_training=True)
        # the fused op returns the unbiased (n - 1) batch variance; Keras averages the biased
        n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        variance = bessel_variance * ((n - 1.0) / n)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + variance * (1.0 - self.momentum))
        if len(inputs.shape) == 2:
            y = tf.reshape(y, shape)
        return tf.cast(y, self.compute_dtype)
