"""Registry of proxy tasks (``--model_type``): a new task is one file + one line here.

Each entry gives the model class and the per-task defaults of the paper's
recipe (docs/method.md, "Optimisation" and "Network") used when a flag is not set.
"""

import tensorflow as tf

from data.aug_spec import DEFAULT_AUG, ROTATION_SUFFIX
from data.aug_spec import num_views as count_views
from model.contrastive import ContrastiveModel
from model.heads import build_mlp_head, parse_head_dims
from model.resnet import build_resnet
from model.rotation import ROTATION_TEST_VIEWS, TransformationModel
from util.errors import ConfigError

MODEL_TYPES = {
    "rotation": dict(cls=TransformationModel, batch_size=64, head_dims="512x8",
                     distaug_type="none", aug_list=DEFAULT_AUG + ROTATION_SUFFIX,
                     aug_list_for_test=ROTATION_TEST_VIEWS, score_keys=("logit", "dscore")),
    "contrastive": dict(cls=ContrastiveModel, batch_size=32, head_dims="512x8,128",
                        distaug_type="none", aug_list=DEFAULT_AUG, aug_list_for_test="x",
                        score_keys=()),
    "contrastive_da": dict(cls=ContrastiveModel, batch_size=32, head_dims="512x8,128",
                           distaug_type="rot", aug_list=DEFAULT_AUG, aug_list_for_test="x",
                           score_keys=()),
}


def model_spec(model_type):
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"--model_type={model_type} is unknown; choose one of "
                          f"{', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def build_model(model_type, *, net_type="ResNet18", net_width=1.0, input_shape=(32, 32, 3),
                head_dims="512x8,128", stem_width=None, weight_decay=3e-4, temperature=0.2,
                sync_bn=False, aug_list=None, aug_list_for_test=None):
    """Builds (and calls once, so all weights exist) the model for ``model_type``.

    aug_list / aug_list_for_test default to the model type's; the transformation
    classifier takes its number of classes from the views of aug_list.
    """
    spec = model_spec(model_type)
    backbone = build_resnet(net_type, net_width, input_shape, stem_width=stem_width,
                            sync_bn=sync_bn, name="backbone")
    dims = parse_head_dims(head_dims)
    classifier = spec["cls"] is TransformationModel
    head = build_mlp_head(dims, backbone.output_shape[-1], sync_bn=sync_bn,
                          last_bias=classifier, name="head")
    kwargs = dict(weight_decay=weight_decay, name=model_type)
    if classifier:
        kwargs["num_views"] = count_views(aug_list or spec["aug_list"])
        kwargs["aug_list_for_test"] = aug_list_for_test or spec["aug_list_for_test"]
    if spec["cls"] is ContrastiveModel:
        if not dims:
            raise ConfigError("--head_dims must not be empty for contrastive models "
                              "(the loss needs an embedding); e.g. --head_dims=512x8,128")
        kwargs["temperature"] = temperature
    model = spec["cls"](backbone, head, **kwargs)
    model(tf.zeros((2,) + tuple(input_shape)))  # creates every weight before restore/fit
    return model
