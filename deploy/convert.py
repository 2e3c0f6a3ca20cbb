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

Each conversion writes its record beside the model (the export's own JSON
plus the format, the input it takes, the converter versions, the parity
measured against the SavedModel on a few images during the conversion, the
export's fingerprint it was made from and the sha256 of each model file).
The record is written before the ONNX file (inside the OpenVINO directory
before it appears), so a conversion cut short is still recognised as ours and
never passes for current: ``check_conversion`` compares both hashes.
Replacing an export by one that computes something else removes the
conversions beside it first (``remove_stale_conversions``, called by
deploy/export.py). The converter packages
(requirements-deploy.txt) are imported only when converting.
"""

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from deploy.export_format import EXPORT_KIND, export_fingerprint, read_export_meta
from util.atomic import atomic_dir, write_bytes_atomic, write_json_atomic
from util.errors import ConfigError
from util.ownership import OutputKind, claim_output

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


def require_converter(fmt: str) -> None:
    """ConfigError naming the packages ``fmt`` needs that are not installed (no import)."""
    missing = [p for p in CONVERTER_PACKAGES.get(fmt, ()) if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError(f"--format={fmt} needs {', '.join(missing)}: "
                          "pip install -r requirements-deploy.txt")


def converted_path(export_dir: Path | str, fmt: str) -> Path:
    """Where ``fmt`` goes: beside the SavedModel, RUN/export -> RUN/export.onnx or
    RUN/export_openvino/."""
    export_dir = Path(export_dir)
    suffix = {"onnx": ".onnx", "openvino": "_openvino"}[fmt]
    return export_dir.parent / f"{export_dir.name}{suffix}"


def meta_path(path: Path | str, fmt: str) -> Path:
    """The converted model's metadata file: export.onnx.json, export_openvino/droc_export.json."""
    path = Path(path)
    return path.parent / f"{path.name}.json" if fmt == "onnx" else path / "droc_export.json"


def _read_record(path, fmt):
    try:
        record = json.loads(meta_path(path, fmt).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_converted(path: Path | str, fmt: str) -> bool:
    """True when ``path`` holds a model converted to ``fmt`` by this module (its record
    says so): what a conversion may replace, so no other file is ever overwritten."""
    record = _read_record(path, fmt)
    return record is not None and record.get("format") == CONVERTED_FORMATS[fmt]


OPENVINO_FILES = (OPENVINO_XML, "model.bin", "droc_export.json")
CONVERSION_KINDS = {
    "onnx": OutputKind("onnx export", lambda p: is_converted(p, "onnx")),
    "openvino": OutputKind("openvino export", lambda p: is_converted(p, "openvino"),
                           lambda root, rel: rel in OPENVINO_FILES),
}
ONNX_RECORD_KIND = OutputKind("onnx export record", lambda p: is_converted(
    Path(str(p)[:-len(".json")]), "onnx"))


def claim_conversion(export_dir: Path | str, fmt: str, flag: str = "--format") -> Path:
    """The converted model's path beside ``export_dir``, claimed under util/ownership.py
    (the ONNX model and its record alike); ConfigError before any work otherwise."""
    path = converted_path(export_dir, fmt)
    claim_output(path, CONVERSION_KINDS[fmt], flag, file=fmt == "onnx", not_inside=(EXPORT_KIND,))
    if fmt == "onnx":
        claim_output(meta_path(path, fmt), ONNX_RECORD_KIND, flag, file=True)
    return path


def remove_stale_conversions(export_dir: Path | str, fingerprint: Optional[str]) -> None:
    """Removes the conversions beside ``export_dir`` made by this module (recognised by their
    records) from an export other than one of ``fingerprint``: called before the export is
    replaced, so none outlives what it was made from."""
    for fmt in CONVERTED_FORMATS:
        path = converted_path(export_dir, fmt)
        if not is_converted(path, fmt):
            continue
        source = _read_record(path, fmt).get("converted_from") or {}
        if fingerprint is not None and source.get("fingerprint") == fingerprint:
            continue
        if fmt == "onnx":
            path.unlink(missing_ok=True)
            meta_path(path, fmt).unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_conversion(path: Path | str, fmt: str) -> dict:
    """The record of the conversion at ``path`` when it is current: its model files are
    the ones it recorded and the export it names is unchanged; ConfigError saying why not."""
    record = _read_record(path, fmt) if is_converted(path, fmt) else None
    if record is None:
        raise ConfigError(f"{path} is not a {fmt} conversion of a DROC export (no record "
                          f"{meta_path(path, fmt)})")
    where = Path(path).parent if fmt == "onnx" else Path(path)
    for name, digest in (record.get("files") or {}).items():
        if not (where / name).is_file() or _sha256(where / name) != digest:
            raise ConfigError(f"{where / name} is not the file its record {meta_path(path, fmt)} "
                              "names (missing or changed): convert the export again")
    source = record.get("converted_from") or {}
    current = export_fingerprint(source.get("path", ""))
    if current is None or current != source.get("fingerprint"):
        raise ConfigError(f"{path} was converted from an export that has changed since "
                          f"({source.get('path')}): convert it again with script/export.py")
    return record


def convert_export(export_dir: Path | str, fmt: str, out: Optional[Path | str] = None,
                   log: Callable[[str], None] = print) -> dict:
    """Converts the SavedModel export at ``export_dir`` to ``fmt``; returns its metadata."""
    meta = read_export_meta(export_dir)
    require_converter(fmt)
    out = Path(out) if out else converted_path(export_dir, fmt)
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_dir))
    serve = loaded.signatures["serving_default"]
    height, width = (int(d) for d in meta["input_shape"][:2])
    source = {"format": meta["format"], "version": meta["version"],
              "path": str(Path(export_dir).resolve()),
              "fingerprint": export_fingerprint(export_dir)}

    def record(info):
        return dict(meta, format=CONVERTED_FORMATS[fmt], version=CONVERTED_VERSION,
                    converted_from=source, **info)

    try:
        if fmt == "onnx":
            converted = _to_onnx(serve, out, height, width, record)
        else:
            converted = _to_openvino(serve, out, height, width, record)
    except ConfigError:
        raise
    except Exception as err:  # the converters raise their own types for graphs they cannot map
        detail = (str(err).strip().splitlines() or [""])[0][:300]
        raise ConfigError(f"{export_dir} could not be converted to {fmt} "
                          f"({type(err).__name__}: {detail}); the SavedModel export itself is "
                          "complete") from None
    log(f"Converted {export_dir} to {fmt}: {out} (max relative raw-score difference "
        f"{converted['parity']['max_rel_diff']:.2g} on {converted['parity']['images']} images)")
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


def _to_onnx(serve, path, height, width, record):
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
    path = Path(path)
    converted = record({
        "file": path.name, "onnx_opset": ONNX_OPSET, "parity": parity,
        "files": {path.name: hashlib.sha256(data).hexdigest()},
        "signature": _signature_text(serve, "uint8 [B,H,W,3], any H, W"),
        "converter_versions": {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                               "onnxruntime": onnxruntime.__version__}})
    if os.path.lexists(path):  # the previous conversion (claimed as ours): never half-replaced
        path.unlink()
    write_json_atomic(meta_path(path, "onnx"), converted, default=str)
    write_bytes_atomic(path, data)
    return converted


# ------------------------------------------------------------------------- OpenVINO

def _to_openvino(serve, out_dir, height, width, record):
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
        converted = record({
            "file": OPENVINO_XML, "openvino_precision_hint": OPENVINO_PRECISION,
            "parity": parity,
            "files": {name: _sha256(tmp / name) for name in OPENVINO_FILES[:2]},
            "signature": _signature_text(
                serve, f"uint8 [B,{height},{width},3] (resize to the export's input first)"),
            "converter_versions": {"openvino": ov.__version__}})
        write_json_atomic(meta_path(tmp, "openvino"), converted, default=str)
    return converted


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

