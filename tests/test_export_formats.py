"""script/export.py --format=onnx|openvino (deploy/convert.py): the converted models give
the SavedModel's raw scores, normalised scores and decisions on the run's test images.

The session's tiny run (tests/conftest.py) is shared. The converter tests skip only
when their packages (requirements-deploy.txt) are not installed.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from util.errors import ConfigError

def _needs(*packages):
    """Skips (before the shared run is trained) when a converter package is missing."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed "
                              "(pip install -r requirements-deploy.txt)")


@pytest.fixture(scope="module")
def images(tiny_run):
    """The run's test images (32 x 32), the first 16 at two other sizes, and seeded noise
    at a third: digits have black borders, noise shows how the resize treats them."""
    from PIL import Image

    from data.registry import load_one_class_data

    test = load_one_class_data("digitsood", "3", input_shape=(32, 32, 3), seed=0).test_images
    resized = lambda size: np.stack([np.asarray(Image.fromarray(im).resize(size))  # noqa: E731
                                     for im in test[:16]])
    noise = np.random.default_rng(1).integers(0, 256, (8, 45, 37, 3), dtype=np.uint8)
    return {"same": test, "big": resized((50, 40)), "small": resized((20, 24)), "noise": noise}


def _saved_model_outputs(export_dir, batches):
    import tensorflow as tf

    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    return {k: {n: v.numpy() for n, v in serve(images=tf.constant(b)).items()}
            for k, b in batches.items()}


def _check_parity(got, want, meta, pipeline):
    """Raw scores equal the SavedModel's (and on the run's images the pipeline's) to float32
    precision; decisions and normalised scores follow from them and the stored calibration.

    Images of another size go through a resize rounded to uint8: where the two runtimes'
    resized value lands within float error of k + 0.5, they round one grey level apart
    (a few pixels of a few images), so there only the median image must agree to float32
    precision and the worst within 0.2 % of the scores' scale."""
    c = meta["calibration"]
    for part in got:
        raw, ref = got[part]["raw_score"], want[part]["raw_score"]
        scale = np.abs(ref).max()
        if part == "same":
            np.testing.assert_allclose(raw, ref, rtol=1e-4, atol=1e-5 * scale)
            np.testing.assert_array_equal(got[part]["decision"], want[part]["decision"])
        else:
            assert np.median(np.abs(raw - ref)) <= 1e-5 * scale, part
            np.testing.assert_allclose(raw, ref, atol=2e-3 * scale, err_msg=part)
        np.testing.assert_array_equal(got[part]["decision"], raw > c["threshold"], err_msg=part)
        norm = np.clip((raw - c["norm_min"]) / (c["norm_max"] - c["norm_min"]), 0, 1)
        # OpenVINO's CPU plugin computes float64 graphs in float32: (raw - min) / (max - min)
        # then carries float32's relative error of raw times raw / (max - min), a few 1e-6
        np.testing.assert_allclose(got[part]["normalized_score"], norm, atol=1e-5)
    np.testing.assert_allclose(got["same"]["raw_score"], pipeline, rtol=1e-4,
                               atol=1e-5 * np.abs(pipeline).max())


# ------------------------------------------------------------------- flag checks

def test_unknown_or_uninstalled_format_is_one_error_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    from deploy import convert
    from engine.validate import check_export_format
    from script import export

    with pytest.raises(ConfigError, match="unknown; choose one of saved_model, onnx, openvino"):
        check_export_format("tflite")
    check_export_format("saved_model")  # needs nothing beyond TensorFlow
    real = importlib.util.find_spec
    monkeypatch.setattr(convert.importlib.util, "find_spec",
                        lambda name: None if name == "openvino" else real(name))
    with pytest.raises(ConfigError, match="needs openvino: pip install -r requirements-deploy"):
        check_export_format("openvino")
    # checked before the run is read: nothing is loaded or written
    assert export.main([str(tmp_path / "no_run"), "--format=openvino"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --format=openvino needs openvino")
    assert list(tmp_path.iterdir()) == []


def test_conversion_fails_when_scores_drift_and_leaves_no_partial_output(tmp_path):
    """The parity check run during every conversion rejects a converted model whose raw
    scores differ by more than PARITY_RTOL of their scale (OpenVINO's default bfloat16
    differed by about 1 %); a failed OpenVINO conversion leaves the old directory as it was."""
    from deploy import convert
    from util.atomic import atomic_dir

    class Tensor:
        def __init__(self, value):
            self.value = value

        def numpy(self):
            return self.value

    def serve(images):
        return {"raw_score": Tensor(images.reshape(len(images), -1).mean(1) + 10.0)}

    def converted(drift):
        return lambda images: {"raw_score": serve(images)["raw_score"].numpy() * (1 + drift)}

    ok = convert._parity(serve, converted(1e-5), 8, 8, any_size=True)
    assert ok["images"] == 8 and 0 < ok["max_rel_diff"] <= 1e-5 * (1 + 1e-9)
    with pytest.raises(RuntimeError, match="differ from the SavedModel"):
        convert._parity(serve, converted(1e-2), 8, 8, any_size=False)
    target = tmp_path / "export_openvino"
    target.mkdir()
    (target / "model.xml").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "model.xml").write_text("new")
        convert._parity(serve, converted(1e-2), 8, 8, any_size=False)
    assert [p.name for p in tmp_path.iterdir()] == ["export_openvino"]
    assert (target / "model.xml").read_text() == "old"


# ---------------------------------------------------------------- the converters

@pytest.mark.slow
@_needs("tf2onnx", "onnx", "onnxruntime")
def test_onnx_export_scores_like_the_saved_model(tiny_run, images, tmp_path):
    """--format=onnx --out=DIR writes DIR (SavedModel), DIR.onnx and DIR.onnx.json; the
    ONNX model takes any image size like the SavedModel (its resize is ONNX Resize)."""
    import onnxruntime as ort

    from detect.scores_file import read_scores
    from script import export

    out = tmp_path / "gde_export"
    assert export.main([str(tiny_run), "--export_detector=gde", f"--out={out}",
                        "--format=onnx"]) == 0
    meta = json.loads(Path(f"{out}.onnx.json").read_text())
    assert (meta["format"], meta["score_key"], meta["file"]) == ("droc-onnx", "pool.gde",
                                                                 "gde_export.onnx")
    assert meta["calibration"] == json.loads(
        (out / "assets" / "droc_export.json").read_text())["calibration"]
    from deploy.convert import check_conversion

    assert check_conversion(Path(f"{out}.onnx"), "onnx") == meta  # made from this export
    session = ort.InferenceSession(f"{out}.onnx", providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    names = [o.name for o in session.get_outputs()]
    got = {k: dict(zip(names, session.run(None, {"images": b}))) for k, b in images.items()}
    assert got["same"]["raw_score"].dtype == np.float64
    want = _saved_model_outputs(out, images)
    _check_parity(got, want, meta, read_scores(tiny_run / "stats" / "scores.npz")["test"][
        "pool.gde"])


@pytest.mark.slow
@_needs("openvino")
def test_openvino_export_scores_like_the_saved_model(tiny_run, images, tmp_path):
    """--format=openvino with the default output: RUN/export (the run's KDE export, now
    re-exported) and RUN/export_openvino/ with model.xml, model.bin, droc_export.json. The
    IR has a fixed 32 x 32 input, so the other sizes are resized as the data layer does.
    On a copy of the session's run, which other modules read."""
    import shutil

    import openvino as ov

    from data.base import conform_images
    from detect.scores_file import read_scores
    from script import export

    tiny_run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    assert export.main([str(tiny_run), "--format=openvino"]) == 0
    ir_dir = tiny_run / "export_openvino"
    assert sorted(p.name for p in ir_dir.iterdir()) == ["droc_export.json", "model.bin",
                                                         "model.xml"]
    meta = json.loads((ir_dir / "droc_export.json").read_text())
    assert (meta["format"], meta["score_key"]) == ("droc-openvino", "pool.kde")
    compiled = ov.compile_model(str(ir_dir / "model.xml"), "CPU",
                                {"INFERENCE_PRECISION_HINT": meta["openvino_precision_hint"]})
    assert str(compiled.inputs[0].get_partial_shape()) == "[?,32,32,3]"
    fixed = {k: conform_images(b, (32, 32, 3)) for k, b in images.items()}
    names = [o.get_any_name() for o in compiled.outputs]
    got = {k: dict(zip(names, compiled(b).values())) for k, b in fixed.items()}
    want = _saved_model_outputs(tiny_run / "export", fixed)
    _check_parity(got, want, meta, read_scores(tiny_run / "stats" / "scores.npz")["test"][
        "pool.kde"])
