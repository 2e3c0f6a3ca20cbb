"""script/bench_flops.py: FLOPs counted from layer shapes, against hand counts."""

import keras
import pytest

from script.bench_flops import conv_dense_macs, train_flops_per_view


def test_macs_of_conv_and_dense_by_hand():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False)(inputs)  # 4x4x4
    x = keras.layers.Conv2D(6, 1, use_bias=False)(x)  # 4x4x6
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5)(x)
    model = keras.Model(inputs, outputs)
    macs = 16 * 3 * 3 * 3 * 4 + 16 * 4 * 6 + 6 * 5
    assert conv_dense_macs(model) == macs
    assert train_flops_per_view(model) == 6 * macs


def test_resnet18_width_quarter_is_about_028_gflop_per_view():
    from model.registry import build_model

    # release shape: 64-filter stem, 512x8 head (+128): 3 x 2 x 46.4 M multiply-adds
    model = build_model("contrastive", net_width=0.25, head_dims="512x8,128")
    assert train_flops_per_view(model) / 1e9 == pytest.approx(0.2788, abs=5e-4)

