"""Rotation-prediction proxy task (RotNet; with an MLP head, the paper's variant).

Each augmented training image is rotated by 0/90/180/270 degrees inside the
step (on the accelerator, batched) and a 4-way classifier on g(f(x)) predicts
the rotation. Its built-in anomaly scores use the same classifier at test time:
``logit`` = -p(y=0 | x) and ``dscore`` = -sum_k log p(y=k | rot_k(x)).
"""

import keras
import tensorflow as tf

from model.base import OneClassModel

NUM_ROTATIONS = 4


def rotate_batch(images):
    """[B,H,W,C] -> ([4B,H,W,C] all four rotations stacked by k, labels [4B])."""
    rotated = tf.concat([tf.image.rot90(images, k) for k in range(NUM_ROTATIONS)], axis=0)
    labels = tf.repeat(tf.range(NUM_ROTATIONS), tf.shape(images)[0])
    return rotated, labels


class RotationModel(OneClassModel):
    """Keras model whose train_step takes batches of augmented (unrotated) images."""

    views_per_image = NUM_ROTATIONS

    def __init__(self, backbone, head, **kwargs):
        super().__init__(backbone, head, **kwargs)
        self.classifier = keras.layers.Dense(NUM_ROTATIONS, name="rotation_logits")

    def call(self, images, training=False):
        pooled, embed = super().call(images, training=training)
        self.classifier(embed)  # builds the classifier with the model
        return pooled, embed

    def rotation_logits(self, images, training=False):
        _, embed = super().call(images, training=training)
        return embed, tf.cast(self.classifier(embed), tf.float32)

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        rotated, labels = rotate_batch(images)
        with tf.GradientTape() as tape:
            _, logits = self.rotation_logits(rotated, training=True)
            proxy = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
            acc = tf.reduce_mean(tf.cast(
                tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
            total, l2, scaled = self.total_loss(proxy)
        return self.step_and_track(tape, scaled, total, proxy, l2, acc)

    def extract(self, images):
        """pool/embed of the upright image plus the two rotation-classifier scores."""
        batch = tf.shape(images)[0]
        rotated, _ = rotate_batch(images)
        pooled, embed = OneClassModel.call(self, rotated, training=False)
        logp = tf.nn.log_softmax(tf.cast(self.classifier(embed), tf.float32), axis=-1)
        # logp rows are ordered [k=0 block, k=1 block, ...]; take log p(y=k | rot_k x)
        logp = tf.reshape(logp, [NUM_ROTATIONS, batch, NUM_ROTATIONS])
        own = tf.transpose(tf.stack([logp[k, :, k] for k in range(NUM_ROTATIONS)]))
        return {
            "pool": tf.cast(pooled[:batch], tf.float32),
            "embed": tf.cast(embed[:batch], tf.float32),
            "logit": -tf.exp(own[:, 0]),
            "dscore": -tf.reduce_sum(own, axis=-1),
        }
