"""Registry of proxy tasks (``--model_type``): a new task is one file + one line here.

Each entry names the model class (``module:Class``, imported only when a model
is built, so flag validation needs no TensorFlow) and the per-task defaults of
the paper's recipe (docs/method.md, "Optimisation" and "Network") used when a
flag is not set. ``classifier`` marks the transformation classifier (its head's
last layer has a bias and it predicts which view of ``aug_list`` it sees).
"""

import importlib

from data.aug_spec import DEFAULT_AUG, ROTATION_SUFFIX
from util.errors import ConfigError

ROTATION_TEST_VIEWS = "x" + ROTATION_SUFFIX

MODEL_TYPES = {
    "rotation": dict(cls="model.rotation:TransformationModel", batch_size=64, head_dims="512x8",
                     distaug_type="none", aug_list=DEFAULT_AUG + ROTATION_SUFFIX,
                     aug_list_for_test=ROTATION_TEST_VIEWS, score_keys=("logit", "dscore"),
                     contrastive=False, classifier=True),
    "contrastive": dict(cls="model.contrastive:ContrastiveModel", batch_size=32,
                        head_dims="512x8,128", distaug_type="none", aug_list=DEFAULT_AUG,
                        aug_list_for_test="x", score_keys=(), contrastive=True, classifier=False),
    "contrastive_da": dict(cls="model.contrastive:ContrastiveModel", batch_size=32,
                           head_dims="512x8,128", distaug_type="rot", aug_list=DEFAULT_AUG,
                           aug_list_for_test="x", score_keys=(), contrastive=True,
                           classifier=False),
    "denoising": dict(cls="model.denoising:DenoisingModel", batch_size=32, head_dims="",
                      distaug_type="none", aug_list=DEFAULT_AUG, aug_list_for_test="x",
                      score_keys=(), contrastive=False, classifier=False,
                      options=("noise_std",)),
    "raw_pixels": dict(cls="model.baselines:FrozenFeatureModel",
                       build="model.baselines:build_raw_pixels", batch_size=32, head_dims="",
                       distaug_type="none", aug_list="x", aug_list_for_test="x", score_keys=(),
                       contrastive=False, classifier=False, fixed={"num_epoch": 0}),
    "imagenet_resnet50": dict(cls="model.baselines:FrozenFeatureModel",
                              build="model.baselines:build_imagenet_resnet50", batch_size=32,
                              head_dims="", distaug_type="none", aug_list="x",
                              aug_list_for_test="x", score_keys=(), contrastive=False,
                              classifier=False, fixed={"num_epoch": 0},
                              options=("pretrained_weights",)),
    "cutpaste": dict(cls="model.cutpaste:CutPasteModel", batch_size=32, head_dims="512x8,128",
                     distaug_type="none", aug_list=DEFAULT_AUG, aug_list_for_test="x",
                     score_keys=(), contrastive=False, classifier=False,
                     options=("cutpaste_variant",)),
    # CutPaste labelled cell by cell on the local feature map (--mvtec_mode=map only)
    "cutpaste_map": dict(cls="model.cutpaste_map:CutPasteMapModel", batch_size=16, head_dims="",
                         distaug_type="none", aug_list="x", aug_list_for_test="x",
                         score_keys=(), contrastive=False, classifier=False, map_only=True,
                         options=("cutpaste_variant", "map_stages", "map_neighbourhood")),
}


def model_spec(model_type):
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"--model_type={model_type} is unknown; choose one of "
                          f"{', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def has_conv_trunk(model_type):
    """True for the ResNet proxy tasks: their backbone has the conv trunk that conv patch
    features and the export are built from; the frozen baselines have none."""
    return not model_spec(model_type).get("build")


def _resolve(target):
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def model_class(model_type):
    """The keras.Model subclass of ``model_type`` (imports TensorFlow)."""
    return _resolve(model_spec(model_type)["cls"])


def build_model(model_type, *, net_type="ResNet18", net_width=1.0, input_shape=(32, 32, 3),
                head_dims="512x8,128", stem_width=None, weight_decay=3e-4, temperature=0.2,
                sync_bn=False, aug_list=None, aug_list_for_test=None, l2_skip_batchnorm=False,
                image_norm="none", **options):
    """Builds (and calls once, so all weights exist) the model for ``model_type``.

    aug_list / aug_list_for_test default to the model type's; the transformation
    classifier takes its number of classes from the views of aug_list.
    ``options``: the spec's extra flags (e.g. noise_std), passed to the model class.
    """
    import tensorflow as tf

    from data.aug_spec import num_views as count_views
    from model.heads import build_mlp_head
    from model.resnet import build_resnet
    from model.spec import parse_head_dims

    spec = model_spec(model_type)
    if spec.get("build"):  # not a ResNet + head proxy task (frozen baselines)
        model = _resolve(spec["build"])(input_shape=tuple(input_shape), head_dims=head_dims,
                                        weight_decay=weight_decay, **options)
        model(tf.zeros((2,) + tuple(input_shape)))
        return model
    backbone = build_resnet(net_type, net_width, input_shape, stem_width=stem_width,
                            sync_bn=sync_bn, name="backbone", image_norm=image_norm)
    dims = parse_head_dims(head_dims)
    classifier = spec["classifier"]
    head = build_mlp_head(dims, backbone.output_shape[-1], sync_bn=sync_bn,
                          last_bias=classifier, name="head")
    kwargs = dict(weight_decay=weight_decay, l2_skip_batchnorm=l2_skip_batchnorm,
                  name=model_type, **options)
    if model_type == "denoising":
        kwargs["sync_bn"] = sync_bn
    if classifier:
        kwargs["num_views"] = count_views(aug_list or spec["aug_list"])
        kwargs["aug_list_for_test"] = aug_list_for_test or spec["aug_list_for_test"]
    if spec["contrastive"]:  # engine/validate.py has checked that the head is not empty
        kwargs["temperature"] = temperature
    model = model_class(model_type)(backbone, head, **kwargs)
    model(tf.zeros((2,) + tuple(input_shape)))  # creates every weight before restore/fit
    return model
