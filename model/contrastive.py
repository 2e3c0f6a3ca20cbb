"""Contrastive proxy task (SimCLR-style), the paper's main representation.

Two independent augmentations x1, x2 of each image; phi = l2_normalize(g(f(.)));
logits = phi(x1) . phi(x2_all)^T / tau and the target of row i is column i.
Negatives are the other images' second views in the whole global batch: the
second views are gathered across replicas, so 1 and N replicas give the same
loss. ``contrastive_da`` is this same model trained on a distribution-augmented
training set (see data/distaug.py); nothing in the loss changes.
"""

import tensorflow as tf

from model.base import OneClassModel, loss_precision


def contrastive_loss(z1, z2_all, temperature, offset=0):
    """Mean cross entropy of rows of z1 . z2_all^T / tau against columns offset+i.

    z1: [B, D] l2-normalised first views of this replica; z2_all: [N, D] the
    l2-normalised second views of the global batch; offset: position of this
    replica's images in z2_all. Returns (loss, accuracy of the argmax).
    """
    logits = tf.matmul(z1, z2_all, transpose_b=True) / temperature
    labels = offset + tf.range(tf.shape(z1)[0])
    loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
    return loss, tf.reduce_mean(tf.cast(correct, tf.float32))


def gather_global(z):
    """All-gathers [b, D] per-replica rows into [B, D]; returns (rows, offset of ours)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return z, 0
    offset = ctx.replica_id_in_sync_group * tf.shape(z)[0]
    return ctx.all_gather(z, axis=0), offset


class ContrastiveModel(OneClassModel):
    """Keras model whose train_step takes (x1, x2) batches of augmented views."""

    views_per_image = 2

    def __init__(self, backbone, head, temperature=0.2, **kwargs):
        super().__init__(backbone, head, **kwargs)
        self.temperature = float(temperature)

    def train_step(self, data):
        x1, x2 = data
        with tf.GradientTape() as tape:
            _, embed = self(tf.concat([x1, x2], axis=0), training=True)
            z = tf.math.l2_normalize(loss_precision(embed), axis=-1)
            z1, z2 = tf.split(z, 2, axis=0)
            z2_all, offset = gather_global(z2)
            proxy, acc = contrastive_loss(z1, z2_all, self.temperature, offset)
            total, l2, scaled = self.total_loss(proxy)
        return self.step_and_track(tape, scaled, total, proxy, l2, acc)
