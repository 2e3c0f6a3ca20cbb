"""Outputs of an export's ONNX and OpenVINO conversions, for the parity tests of the
exports with maps (patch and feature-map models)."""

import numpy as np
import tensorflow as tf

from deploy.export_format import cell_map


def converted_outputs(folder, images):
    """[{output name: array}] of ``folder``/export.onnx under ONNX Runtime and of
    ``folder``/export_openvino under OpenVINO (f32 inference) for uint8 ``images``."""
    import onnxruntime
    import openvino as ov

    session = onnxruntime.InferenceSession(str(folder / "export.onnx"),
                                           providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    onnx_out = dict(zip(names, session.run(None, {"images": images})))
    compiled = ov.Core().compile_model(str(folder / "export_openvino" / "model.xml"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(images)
    return [onnx_out, {o.get_any_name(): result[o] for o in compiled.outputs}]


def assert_conversions_match(export_dir, images, atol_fraction):
    """The ONNX and OpenVINO conversions beside ``export_dir`` (a folder named ``export``)
    give the SavedModel's scores and maps
    on ``images`` (absolute tolerance ``atol_fraction`` of the largest patch score) and
    the same mask on all but 1% of the pixels."""
    want = {k: v.numpy() for k, v in tf.saved_model.load(str(export_dir)).signatures[
        "serving_default"](images=tf.constant(images)).items()}
    scale = np.abs(cell_map(want)).max()
    for got in converted_outputs(export_dir.parent, images):
        np.testing.assert_allclose(cell_map(got), cell_map(want), rtol=1e-4,
                                   atol=atol_fraction * scale, err_msg="cell map")
        for key in ("raw_score", "anomaly_map"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4,
                                       atol=atol_fraction * scale, err_msg=key)
        assert np.mean(got["mask"] != want["mask"]) < 0.01
