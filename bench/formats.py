"""Benchmark section ``formats``: the same export served by TensorFlow, ONNX Runtime and
OpenVINO, on the same uint8 batches in the same process.

The model and export are the ``scoring`` section's (width-0.25 ResNet-18 at 32x32,
KDE over 5,000 random features; bench/scoring.py); deploy/convert.py
converts it as ``script/export.py --format=...`` does. Each runtime scores the
same batch; the figure is the median of the timed repetitions after one
warm-up. OpenVINO runs at float32 (what the export's metadata asks for) and,
for reference, at the CPU plugin's default precision (bfloat16 where the CPU
has it, which changes the scores by about 1 %). Needs requirements-deploy.txt.
"""

import tempfile

import numpy as np


def formats_section(args, log, n_train=5000, width=0.25, batch_sizes=(256, 1024)):
    import onnxruntime as ort
    import openvino as ov
    import tensorflow as tf

    from deploy.convert import OPENVINO_XML, convert_export
    from bench.scoring import benchmark_export, median_rate, scoring_budget

    repeats, n_train, batch_sizes = scoring_budget(args, n_train, batch_sizes)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = f"{tmp}/export"
        benchmark_export(export_dir, width, n_train)
        for fmt in ("onnx", "openvino"):
            convert_export(export_dir, fmt, log=lambda m: None)
        serve = tf.saved_model.load(export_dir).signatures["serving_default"]
        session = ort.InferenceSession(f"{export_dir}.onnx", providers=["CPUExecutionProvider"])
        xml = f"{export_dir}_openvino/{OPENVINO_XML}"
        core = ov.Core()
        ov_f32 = core.compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        ov_default = core.compile_model(xml, "CPU")
        default_precision = ov_default.get_property("INFERENCE_PRECISION_HINT").to_string()
        runtimes = {
            "saved_model": lambda b: serve(images=tf.constant(b))["raw_score"].numpy(),
            "onnxruntime": lambda b: session.run(["raw_score"], {"images": b})[0],
            "openvino_f32": lambda b: ov_f32(b),
            f"openvino_{default_precision}": lambda b: ov_default(b)}
        for bs in batch_sizes:
            batch = rng.integers(0, 256, (bs, 32, 32, 3), dtype=np.uint8)
            row = {"batch_size": bs}
            for name, fn in runtimes.items():
                row[f"{name}_images_per_sec"] = round(median_rate(fn, batch, repeats), 1)
            rows.append(row)
            base = row["saved_model_images_per_sec"]
            log(f"formats: batch {bs}: " + ", ".join(
                f"{name} {row[f'{name}_images_per_sec']:,.0f} images/s "
                f"({row[f'{name}_images_per_sec'] / base:.2f}x)" for name in runtimes))
    return {"n_train_features": n_train, "net_width": width,
            "openvino_default_precision": default_precision, "throughput": rows}
