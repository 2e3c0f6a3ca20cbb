"""CutPaste on the feature map (``cutpaste_map``): every cell says where the damage is.

The CutPaste task (model/cutpaste.py) asks the pooled feature of a whole image
whether a rectangle was cut and pasted or a scar painted somewhere in it: one
label per image. Here the same synthetic defects are made, and a 1x1
convolutional classifier on the local feature map that stage 2 scores
(model/feature_maps.py: stages 2 and 3 on one grid) labels every cell normal,
cut-and-pasted or scarred, from the fraction of the cell's pixels the defect
covers (at least ``CELL_COVER``). One image thus gives about a thousand
labels instead of one, and the very features the detectors compare learn to
tell local damage from normal variation: on a CPU budget of minutes this is
what makes the features better than those of a random network (the lever
study in docs/mvtec.md). Damaged cells are few, so their loss weighs
``DEFECT_WEIGHT`` times a normal cell's.

Scars on gray images are gray (model/cutpaste.py ``scar``): a coloured mark on a
gray part would be found by its colour alone.

The trained model is used like any other: stage 2 fits detectors on the
feature maps of clean good images (``extract`` and the map evaluator never
apply the damage).
"""

import keras
import tensorflow as tf

from model.base import OneClassModel, loss_precision
from model.cutpaste import DEFECTS, VARIANTS, check_variant
from model.feature_maps import FeatureMapper
from model.spec import parse_stages

#: a cell is labelled damaged when the defect covers at least this fraction of its pixels
CELL_COVER = 0.25
#: the loss weight of a damaged cell relative to a normal one
DEFECT_WEIGHT = 10.0
#: hidden channels of the cell classifier
HIDDEN = 128


def damaged_batch(images, variant):
    """[B,...] clean images -> ([(1+k)B,...] inputs, float [(1+k)B, H, W] defect masks,
    int32 [(1+k)B] kind: 0 normal, 1.. each kind of ``variant``)."""
    check_variant(variant)
    b = tf.shape(images)[0]
    inputs, masks, kinds = [images], [tf.zeros(tf.shape(images)[:3])], [tf.zeros([b], tf.int32)]
    for label, kind in enumerate(VARIANTS[variant], start=1):
        damaged, mask = DEFECTS[kind](images, True)
        inputs.append(damaged)
        masks.append(tf.cast(mask, tf.float32))
        kinds.append(tf.fill([b], label))
    return tf.concat(inputs, 0), tf.concat(masks, 0), tf.concat(kinds, 0)


def cell_labels(masks, kinds, grid):
    """int32 [N, h, w]: the kind of the image where the defect covers at least CELL_COVER of
    the cell's pixels, else 0 (normal); ``grid`` = (h, w) of the feature map."""
    cover = tf.image.resize(masks[..., None], grid, method="area")[..., 0]
    return tf.where(cover >= CELL_COVER, kinds[:, None, None], tf.zeros_like(kinds)[:, None, None])


class CutPasteMapModel(OneClassModel):
    """Keras model whose train_step takes batches of (augmented) clean images and learns to
    label each cell of their local feature map normal or the kind of damage it carries."""

    views_per_image = 3  # the default (3way); instances count their own
    input_views = 1  # the damaged copies are made inside train_step

    def __init__(self, backbone, head, cutpaste_variant="3way", map_stages="2,3",
                 map_neighbourhood=3, **kwargs):
        super().__init__(backbone, head, **kwargs)
        self.variant = check_variant(cutpaste_variant)
        self.num_classes = 1 + len(VARIANTS[self.variant])
        self.views_per_image = self.num_classes
        self.stages, self.neighbourhood = parse_stages(map_stages), int(map_neighbourhood)
        self.mapper = FeatureMapper(backbone, self.stages, self.neighbourhood)
        self.cell_classifier = keras.Sequential([
            keras.layers.Conv2D(HIDDEN, 1, activation="relu", name="cells_hidden"),
            keras.layers.Conv2D(self.num_classes, 1, name="cells_logits")],
            name="cell_classifier")

    def call(self, images, training=False):
        pooled, embed = super().call(images, training=training)
        if not self.cell_classifier.built:  # built with the model, not run at every call
            self.cell_classifier(self.mapper(images, training=training))
        return pooled, embed

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        inputs, masks, kinds = damaged_batch(images, self.variant)
        with tf.GradientTape() as tape:
            maps = self.mapper(inputs, training=True)
            logits = loss_precision(self.cell_classifier(maps, training=True))
            labels = cell_labels(masks, kinds, logits.shape[1:3])
            weights = tf.where(labels > 0, DEFECT_WEIGHT, 1.0)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            proxy = tf.reduce_sum(ce * weights) / tf.reduce_sum(weights)
            acc = tf.reduce_mean(tf.cast(
                tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
            total, l2, scaled = self.total_loss(proxy)
        return self.step_and_track(tape, scaled, total, proxy, l2, acc)
