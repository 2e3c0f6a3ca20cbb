"""bench/op_profile.py: op events grouped as the profile table shows them."""

import numpy as np
import pytest

from bench.op_profile import op_group, summarize


@pytest.mark.parametrize("name, group", [
    ("StatefulPartitionedCall/gradient_tape/backbone_1/stage1_block1_conv1_1/convolution/"
     "Conv2DBackpropFilter:_MklNativeConv2DBackpropFilter", "conv/matmul"),
    ("StatefulPartitionedCall/head_1/head_dense1_1/MatMul:_MklMatMul", "conv/matmul"),
    ("StatefulPartitionedCall/backbone_1/stem_bn_1/moments/mean:Mean", "batchnorm"),
    ("StatefulPartitionedCall/gradient_tape/head_1/head_bn3_1/FusedBatchNormGradV3:"
     "_MklFusedBatchNormGradV3", "batchnorm"),
    ("StatefulPartitionedCall/sgd/Mul_166:Mul", "optimizer/variables"),
    ("StatefulPartitionedCall/AssignVariableOp_12:AssignVariableOp", "optimizer/variables"),
    ("StatefulPartitionedCall/AddN_64:AddN", "L2 penalty, gradient sums"),
    ("StatefulPartitionedCall/Square_60:Square", "L2 penalty, gradient sums"),
    ("StatefulPartitionedCall/backbone_1/stage2_block1_relu_1/Relu:Relu", "relu"),
    ("StatefulPartitionedCall/Cast_3:Cast", "cast"),
    ("StatefulPartitionedCall/backbone_1/stage2_block1_conv1_pad_1/Pad:Pad", "other: Pad"),
])
def test_op_groups(name, group):
    assert op_group(name) == group


def test_summary_shares_and_per_step_seconds():
    totals = {"a/conv/Conv2D:_MklNativeConv2D": 3.0, "a/x_bn/moments/mean:Mean": 1.0}
    out = summarize(totals, steps=2)
    assert out["op_seconds_per_step"] == 2.0
    assert [(g["group"], g["share"]) for g in out["groups"]] == [("conv/matmul", 0.75),
                                                                 ("batchnorm", 0.25)]
    assert out["top_ops"][0]["seconds_per_step"] == 1.5


@pytest.mark.slow
def test_profile_of_a_tiny_step_finds_its_convolutions_and_batchnorm():
    import keras
    import tensorflow as tf

    from engine.config import resolve_config
    from engine.experiment import build_training
    from bench.op_profile import profile_step

    cfg = resolve_config(dict(model_type="contrastive", net_type="ResNet10", net_width=0.125,
                              head_dims="32,16"))
    model, _ = build_training(cfg, (32, 32, 3), tf.distribute.get_strategy(), 10)
    rng = np.random.default_rng(0)
    batch = (rng.random((8, 32, 32, 3), dtype=np.float32),) * 2
    try:
        out = profile_step(model, batch, steps=2)
    finally:
        keras.backend.clear_session()
    groups = {g["group"]: g["share"] for g in out["groups"]}
    assert groups["conv/matmul"] > 0 and groups["batchnorm"] > 0
    assert sum(groups.values()) == pytest.approx(1.0)
    assert out["op_seconds_per_step"] > 0
