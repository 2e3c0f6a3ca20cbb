"""Shared parts of every proxy-task model: backbone f, head g, L2 penalty, metrics.

Each proxy task subclasses ``OneClassModel`` and overrides ``train_step``; the
feature extraction used by the detectors (``predict_step`` -> pool / embed) is
common. Losses follow docs/method.md: total = proxy loss + wd * sum(||w||^2) / 2
over all trainable weights; under a distribution strategy the per-replica loss
is divided by the number of replicas because gradients are summed across them.
"""

import keras
import tensorflow as tf

from model.feature_maps import FeatureMapper


def replica_count():
    return tf.distribute.get_strategy().num_replicas_in_sync


def loss_precision(x):
    """``x`` in the precision losses are computed in: float32 for half-precision
    activations (mixed precision), float64 kept as is (float64 runs stay exact)."""
    return x if x.dtype == tf.float64 else tf.cast(x, tf.float32)


def all_layers(layer):
    """``layer`` and every layer nested in it (functional sub-models included)."""
    out, stack = [], [layer]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(getattr(current, "layers", []) or [])
    return out


class OneClassModel(keras.Model):
    """Backbone + MLP head, trained on a proxy task, evaluated through its features."""

    #: how many network inputs one training image becomes (for throughput figures)
    views_per_image = 1
    #: how many augmented batches (views) the input pipeline hands train_step; None = one
    #: per view in views_per_image (a model that makes its own views, e.g. CutPaste, says 1)
    input_views = None

    def __init__(self, backbone, head, weight_decay=3e-4, l2_skip_batchnorm=False, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.head = head
        self.weight_decay = float(weight_decay)
        # the release's --regularize_bn=true: BatchNorm gamma/beta stay out of the L2 penalty
        self.l2_skip_batchnorm = bool(l2_skip_batchnorm)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.proxy_tracker = keras.metrics.Mean(name="proxy_loss")
        self.l2_tracker = keras.metrics.Mean(name="l2_loss")
        self.acc_tracker = keras.metrics.Mean(name="acc")

    @property
    def metrics(self):
        return [self.loss_tracker, self.proxy_tracker, self.l2_tracker, self.acc_tracker]

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 averages one input batch across workers here to build compiled
        # losses/metrics; under MultiWorkerMirroredStrategy that reduce fails on the
        # per-replica batch. These models compile neither, and build_model /
        # experiment.build_training create every model and optimizer variable first.
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def call(self, images, training=False):
        pooled = self.backbone(images, training=training)
        return pooled, self.head(pooled, training=training)

    def l2_variables(self):
        """The trainable variables in the L2 penalty: all, or all but BatchNorm's."""
        variables = self.trainable_variables
        if not self.l2_skip_batchnorm:
            return variables
        bn_ids = {id(v) for layer in all_layers(self)
                  if isinstance(layer, keras.layers.BatchNormalization)
                  for v in layer.trainable_variables}
        return [v for v in variables if id(v) not in bn_ids]

    def l2_penalty(self):
        variables = self.l2_variables()
        if not self.weight_decay or not variables:
            return tf.constant(0.0)
        total = tf.add_n([tf.reduce_sum(tf.square(loss_precision(v))) for v in variables])
        return 0.5 * self.weight_decay * total

    def total_loss(self, proxy_loss):
        """Returns (total, l2, loss to differentiate): call inside the GradientTape."""
        l2 = tf.cast(self.l2_penalty(), proxy_loss.dtype)
        total = proxy_loss + l2
        scaled = total / replica_count()
        if hasattr(self.optimizer, "scale_loss"):  # LossScaleOptimizer (fp16)
            scaled = self.optimizer.scale_loss(scaled)
        return total, l2, scaled

    def step_and_track(self, tape, scaled, total, proxy_loss, l2, accuracy):
        """Applies the gradients and updates the metrics shown by fit/TensorBoard."""
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.loss_tracker.update_state(total)
        self.proxy_tracker.update_state(proxy_loss)
        self.l2_tracker.update_state(l2)
        self.acc_tracker.update_state(accuracy)
        logs = {m.name: m.result() for m in self.metrics}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3.15 reduces logs across workers with reduce("MEAN", axis=0), which
            # needs a batch axis: give each scalar one (the mean over it is the scalar)
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def feature_mapper(self, stages, neighbourhood):
        """The local feature maps of the backbone's ``stages`` (model/feature_maps.py)."""
        return FeatureMapper(self.backbone, stages, neighbourhood)

    def extract(self, images):
        """Features for the detectors: pool = f(x), embed = g(f(x)) (float32)."""
        pooled, embed = self(images, training=False)
        return {"pool": tf.cast(pooled, tf.float32), "embed": tf.cast(embed, tf.float32)}

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self.extract(images)


class ClassifierModel(OneClassModel):
    """A proxy task that classifies its training inputs: the transformation classifier
    (which view of ``--aug_list``) and CutPaste (normal, cut-and-pasted or scarred).

    Subclasses create ``self.classifier`` (a Dense layer on g(f(x))) and build the
    labelled batch in ``train_step``; the step itself is ``classification_step``.
    """

    def call(self, images, training=False):
        pooled, embed = super().call(images, training=training)
        self.classifier(embed)  # builds the classifier with the model
        return pooled, embed

    def logits(self, images, training=False):
        """(pool, embed, float32 class logits) of ``images``."""
        pooled, embed = OneClassModel.call(self, images, training=training)
        return pooled, embed, tf.cast(self.classifier(embed), tf.float32)

    def classification_step(self, images, labels):
        """Cross-entropy of the classifier on (images, labels), accuracy, L2, update."""
        with tf.GradientTape() as tape:
            _, _, logits = self.logits(images, training=True)
            proxy = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
            acc = tf.reduce_mean(tf.cast(
                tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
            total, l2, scaled = self.total_loss(proxy)
        return self.step_and_track(tape, scaled, total, proxy, l2, acc)

