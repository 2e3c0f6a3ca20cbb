"""Convert an exported SavedModel to ONNX or OpenVINO IR, the runtimes factory lines serve.

The input is any DROC export directory (a SavedModel with ``assets/droc_export.json``);
only its ``serving_default`` signature is converted, so the converted model
returns the same outputs (raw score, normalised score, decision: threshold and
normalisation are constants in the graph). The explanation signatures need
gradients and are not converted.

* ONNX (tf2onnx, opset 18): the same any-size uint8 input. TensorFlow's
  antialiased resize (``ScaleAndTranslate``, which tf2onnx does not know) is
  mapped to ONNX ``Resize`` with ``antialias=1`` and ``exclude_outside=1``: the same
  triangle filter with the same treatment of the image borders.
* OpenVINO IR (``openvino.convert_model`` on the serving function): the spatial
  size is fixed at the export's input size (batch stays free). OpenVINO has no
  ``ScaleAndTranslate`` either, and with a fixed size the size check folds
  away, so the resize is not in the graph: callers resize first.

Each conversion writes its metadata beside the model (the export's own JSON
plus the format, the input it takes, the converter versions and the parity
measured against the SavedModel on a few images during the conversion). The
converter packages (requirements-deploy.txt) are imported only when converting.
"""

import importlib.util
from pathlib import Path

import numpy as np

from deploy.export_format import read_export_meta
from util.atomic import atomic_dir, write_bytes_atomic, write_json_atomic
from util.errors import ConfigError

FORMATS = ("saved_model", "onnx", "openvino")
#: packages each converted format needs (imported only when converting or serving)
CONVERTER_PACKAGES = {"onnx": ("tf2onnx", "onnx", "onnxruntime"), "openvino": ("openvino",)}
CONVERTED_FORMATS = {"onnx": "droc-onnx", "openvino": "droc-openvino"}
CONVERTED_VERSION = 1
ONNX_OPSET = 18  # the first opset whose Resize has antialias
OPENVINO_XML = "model.xml"
OPENVINO_PRECISION = "f32"  # the CPU plugin's default is bf16 where the CPU has it
#: largest |converted - SavedModel| raw score accepted, relative to the largest |score|
PARITY_RTOL = 1e-3


def require_converter(fmt):
    """ConfigError naming the packages ``fmt`` needs that are not installed (no import)."""
    missing = [p for p in CONVERTER_PACKAGES.get(fmt, ()) if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(f"--format={fmt} needs {', '.join(missing)}: "
                          "pip install -r requirements-deploy.txt")


def converted_path(export_dir, fmt):
    """Where ``fmt`` goes: beside the SavedModel, RUN/export -> RUN/export.onnx or
    RUN/export_openvino/."""
    export_dir = Path(export_dir)
    suffix = {"onnx": ".onnx", "openvino": "_openvino"}[fmt]
    return export_dir.parent / f"{export_dir.name}{suffix}"


def meta_path(path, fmt):
    """The converted model's metadata file: export.onnx.json, export_openvino/droc_export.json."""
    path = Path(path)
    return path.parent / f"{path.name}.json" if fmt == "onnx" else path / "droc_export.json"


def is_converted(path, fmt):
    """True when ``path`` holds a model converted to ``fmt`` by this module (its metadata
    says so): what a conversion may replace, so no other file is ever overwritten."""
    import json

    try:
        meta = json.loads(meta_path(path, fmt).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == CONVERTED_FORMATS[fmt]


def convert_export(export_dir, fmt, out=None, log=print):
    """Converts the SavedModel export at ``export_dir`` to ``fmt``; returns its metadata."""
    meta = read_export_meta(export_dir)
    require_converter(fmt)
    out = Path(out) if out else converted_path(export_dir, fmt)
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_dir))
    serve = loaded.signatures["serving_default"]
    height, width = (int(d) for d in meta["input_shape"][:2])
    try:
        if fmt == "onnx":
            info = _to_onnx(serve, out, height, width)
        else:
            info = _to_openvino(serve, out, height, width)
    except ConfigError:
        raise
    except Exception as err:  # the converters raise their own types for graphs they cannot map
        detail = (str(err).strip().splitlines() or [""])[0][:300]
        raise ConfigError(f"{export_dir} could not be converted to {fmt} "
                          f"({type(err).__name__}: {detail}); the SavedModel export itself is "
                          "complete") from None
    converted = dict(meta, format=CONVERTED_FORMATS[fmt], version=CONVERTED_VERSION,
                     converted_from={"format": meta["format"], "version": meta["version"],
                                     "path": str(Path(export_dir).resolve())}, **info)
    write_json_atomic(meta_path(out, fmt), converted, default=str)
    log(f"Converted {export_dir} to {fmt}: {out} (max relative raw-score difference "
        f"{info['parity']['max_rel_diff']:.2g} on {info['parity']['images']} images)")
    return converted


def _serving_function(serve, fixed_size=None):
    """A tf.function over the signature's inputs (positional, as converters want them),
    with their spatial size fixed at ``fixed_size`` when given."""
    import tensorflow as tf

    inputs = serve.structured_input_signature[1]
    names = sorted(inputs)
    specs = [tf.TensorSpec([None, *fixed_size, inputs[n].shape[-1]] if fixed_size
                           else inputs[n].shape, inputs[n].dtype, name=n) for n in names]

    @tf.function(input_signature=specs)
    def serving(*args):
        return serve(**dict(zip(names, args)))

    return serving, specs


def _signature_text(serve, image_input):
    outs = {k: f"{v.dtype.name} {list(v.shape)}" for k, v in serve.structured_outputs.items()}
    return {"inputs": {"images": image_input}, "outputs": outs}


# ----------------------------------------------------------------------------- ONNX

def _scale_and_translate_as_resize(ctx, node, name, args):
    """tf2onnx handler: TF's antialiased resize (uint8 or float NHWC in, float out) as
    ONNX Resize over the two spatial axes: linear, antialias, half-pixel centres, and
    taps outside the image dropped with the rest renormalised (exclude_outside), which
    is what TF does at the borders (without it up to 13 grey levels differ there)."""
    from onnx import TensorProto
    from tf2onnx import utils

    empty = ctx.make_const(utils.make_name(f"{name}_empty"), np.array([], np.float32)).output[0]
    sizes = ctx.make_node("Cast", [node.input[1]], attr={"to": TensorProto.INT64}).output[0]
    images = ctx.make_node("Cast", [node.input[0]], attr={"to": TensorProto.FLOAT}).output[0]
    outputs, shapes, dtypes = node.output, node.output_shapes, node.output_dtypes
    ctx.remove_node(node.name)
    ctx.make_node("Resize", [images, empty, empty, sizes], name=node.name, outputs=outputs,
                  shapes=shapes, dtypes=dtypes,
                  attr={"mode": "linear", "antialias": 1, "axes": [1, 2],
                        "coordinate_transformation_mode": "half_pixel", "exclude_outside": 1})


def _to_onnx(serve, path, height, width):
    import logging

    import onnx
    import onnxruntime
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)  # failures become one error line
    serving, specs = _serving_function(serve)
    proto, _ = tf2onnx.convert.from_function(
        serving, input_signature=specs, opset=ONNX_OPSET,
        custom_op_handlers={"ScaleAndTranslate": (_scale_and_translate_as_resize, [])})
    data = proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in session.get_outputs()]
    parity = _parity(serve, lambda images: dict(zip(out_names, session.run(
        None, {"images": images}))), height, width, any_size=True)
    write_bytes_atomic(path, data)
    return {"file": Path(path).name, "onnx_opset": ONNX_OPSET, "parity": parity,
            "signature": _signature_text(serve, "uint8 [B,H,W,3], any H, W"),
            "converter_versions": {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                                   "onnxruntime": onnxruntime.__version__}}


# ------------------------------------------------------------------------- OpenVINO

def _to_openvino(serve, out_dir, height, width):
    import openvino as ov

    # The serving function, not the SavedModel directory: on a ResNet-18 export
    # convert_model(directory) failed with "Cannot find requested variable" (VarHandleOp).
    serving, _ = _serving_function(serve, fixed_size=(height, width))
    model = ov.convert_model(serving.get_concrete_function())
    with atomic_dir(out_dir) as tmp:
        # fp16 weight compression (openvino's default) would change the scores
        ov.save_model(model, str(tmp / OPENVINO_XML), compress_to_fp16=False)
        compiled = ov.compile_model(str(tmp / OPENVINO_XML), "CPU",
                                    {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION})
        names = [o.get_any_name() for o in compiled.outputs]
        parity = _parity(serve, lambda images: dict(zip(names, compiled(images).values())),
                         height, width, any_size=False)
    return {"file": OPENVINO_XML, "openvino_precision_hint": OPENVINO_PRECISION,
            "parity": parity,
            "signature": _signature_text(
                serve, f"uint8 [B,{height},{width},3] (resize to the export's input first)"),
            "converter_versions": {"openvino": ov.__version__}}


# --------------------------------------------------------------------------- parity

def _parity(serve, run, height, width, any_size, n=4):
    """Scores a few seeded random images both ways (at the input size, and for an
    any-size format at another size too); RuntimeError when the converted model's raw
    scores differ from the SavedModel's by more than PARITY_RTOL of their scale."""
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)]
    if any_size:
        batches.append(rng.integers(0, 256, (n, height + 7, width + 3, 3), dtype=np.uint8))
    worst = 0.0
    for images in batches:
        want = {k: v.numpy() for k, v in serve(images=images).items()}
        got = run(images)
        scale = max(float(np.abs(want["raw_score"]).max()), 1e-12)
        diff = float(np.abs(got["raw_score"] - want["raw_score"]).max()) / scale
        worst = max(worst, diff)
        if diff > PARITY_RTOL:
            raise RuntimeError(f"converted model's raw scores differ from the SavedModel's by "
                               f"{diff:.3g} of their scale on {images.shape}")
    return {"images": n * len(batches), "max_rel_diff": worst}

