"""Outputs of an export's ONNX and OpenVINO conversions, for the parity tests of the
exports with maps (patch and feature-map models)."""


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
