"""bench/flops.py: FLOPs counted from layer shapes, against hand counts."""

import keras
import pytest

from bench.flops import conv_dense_macs, train_flops_per_view


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



def test_bf16_step_is_compared_with_the_bf16_matmul_and_the_fp32_one():
    """One run measures both references; a bf16 throughput row gets its fraction of each,
    an fp32 row only of the fp32 matmul."""
    from types import SimpleNamespace

    from bench.flops import flops_section

    tp = dict(model_type="rotation", net_width=0.25, train_images_per_sec=100.0,
              ceiling_images_per_sec=120.0)
    rows = [dict(tp, precision="fp32"), dict(tp, precision="bf16")]
    out = flops_section(SimpleNamespace(quick=True), lambda *_: None, rows)
    refs = out["references"]
    for prec in ("fp32", "bf16"):
        assert refs[prec]["matmul_gflops"] > 0 and refs[prec]["conv_gflops"] > 0
    assert out["matmul_gflops"] == refs["fp32"]["matmul_gflops"]
    fp32, bf16 = out["rows"]
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert "fit_fraction_of_bf16_matmul" not in fp32
    for label, rate in (("fit", 100.0), ("ceiling", 120.0)):
        achieved = fp32["gflop_per_view"] * rate
        assert bf16[f"{label}_gflops"] == pytest.approx(achieved)
        assert bf16[f"{label}_fraction_of_matmul"] == pytest.approx(
            achieved / refs["fp32"]["matmul_gflops"])
        assert bf16[f"{label}_fraction_of_bf16_matmul"] == pytest.approx(
            achieved / refs["bf16"]["matmul_gflops"])
