"""Registry of proxy tasks (``--model_type``): a new task is one file + one line here.

Each entry gives the model class and the per-task defaults of the paper's
recipe (REFERENCE.md "Optimisation" and "MLP head") used when a flag is not set.
"""

import tensorflow as tf

from model.contrastive import ContrastiveModel
from model.cutpaste import CutPasteModel
from model.heads import build_mlp_head, parse_head_dims
from model.resnet import build_resnet
from model.rotation import RotationModel
from util.errors import ConfigError

MODEL_TYPES = {
    "rotation": dict(cls=RotationModel, batch_size=64, head_dims="512x8", distaug_type="none",
                     score_keys=("logit", "dscore")),
    "contrastive": dict(cls=ContrastiveModel, batch_size=32, head_dims="512x8,128",
                        distaug_type="none", score_keys=()),
    "contrastive_da": dict(cls=ContrastiveModel, batch_size=32, head_dims="512x8,128",
                           distaug_type="rot", score_keys=()),
    "cutpaste": dict(cls=CutPasteModel, batch_size=32, head_dims="512x8,128", distaug_type="none",
                     score_keys=(), model_kwargs=("cutpaste_variant",)),
}


def model_spec(model_type):
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"--model_type={model_type} is unknown; choose one of "
                          f"{', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def build_model(model_type, *, net_type="ResNet18", net_width=1.0, input_shape=(32, 32, 3),
                head_dims="512x8,128", stem_width=None, weight_decay=3e-4, temperature=0.2,
                sync_bn=False, **model_kwargs):
    """Builds (and calls once, so all weights exist) the model for ``model_type``."""
    spec = model_spec(model_type)
    backbone = build_resnet(net_type, net_width, input_shape, stem_width=stem_width,
                            sync_bn=sync_bn, name="backbone")
    dims = parse_head_dims(head_dims)
    head = build_mlp_head(dims, backbone.output_shape[-1], sync_bn=sync_bn, name="head")
    kwargs = dict(weight_decay=weight_decay, name=model_type)
    kwargs.update({k: model_kwargs[k] for k in spec.get("model_kwargs", ()) if k in model_kwargs})
    if spec["cls"] is ContrastiveModel:
        if not dims:
            raise ConfigError("--head_dims must not be empty for contrastive models "
                              "(the loss needs an embedding); e.g. --head_dims=512x8,128")
        kwargs["temperature"] = temperature
    model = spec["cls"](backbone, head, **kwargs)
    model(tf.zeros((2,) + tuple(input_shape)))  # creates every weight before restore/fit
    return model
