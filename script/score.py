"""Score new images with an exported run: one CSV line per image.

    python script/score.py --export_dir=RUN/export IMAGE_OR_DIR... [--out=scores.csv]
                           [--explain=ig|gradcam --explain_dir=DIR]

Reads JPEG/PNG/BMP/TIFF files of any size, mode and bit depth (data/image_io.py:
gray and RGBA are converted to RGB, 16-bit samples scaled to 8 by their bit
depth or by ``--input_bits``, by default the training run's; the export resizes
to its input size). Directories are searched
recursively. The CSV (columns path, raw_score, normalized_score, decision;
decision 1 = flagged as abnormal) is written atomically. An unreadable file is
skipped with a warning and counted. Exit status 2 with one ``error:`` line for
a missing, foreign or incompatible export, or no images to score.
"""

import argparse
import csv
import io
import sys
import time
from pathlib import Path

from data.image_io import IMAGE_EXTENSIONS, ImageReadError, check_input_bits, read_rgb8
from util.errors import ConfigError

IMAGE_SUFFIXES = IMAGE_EXTENSIONS


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--export_dir", required=True)
    p.add_argument("--out", default="scores.csv", help="CSV to write (default scores.csv)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--explain", choices=("ig", "gradcam"), default=None,
                   help="also write one PNG per image: input and heat map side by side")
    p.add_argument("--explain_dir", default="explain", help="where the PNGs go")
    p.add_argument("--ig_steps", type=int, default=32)
    p.add_argument("--input_bits", type=int, default=None,
                   help="bits per sample that 16-bit files really use (8..16, e.g. 12); 0 = "
                        "each file's own depth; default: the training run's --input_bits")
    return p.parse_args(argv)


def collect_files(inputs):
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"{path} contains no .jpg/.jpeg/.png/.bmp images")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path} does not exist")
    return files


def read_image(path, input_bits=0):
    """uint8 [H,W,3] RGB, or None if the file cannot be read as an image."""
    try:
        return read_rgb8(path, input_bits)
    except ImageReadError:
        return None


def write_csv_atomic(path, rows):
    from util.atomic import write_text_atomic

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "raw_score", "normalized_score", "decision"])
    for row in rows:
        writer.writerow([row[0], repr(float(row[1])), repr(float(row[2])), int(row[3])])
    write_text_atomic(path, buf.getvalue())


def batches_by_size(items, batch_size):
    """Consecutive (paths, images) groups of one image size, at most batch_size each."""
    group = []
    for path, img in items:
        if group and (img.shape != group[0][1].shape or len(group) >= batch_size):
            yield group
            group = []
        group.append((path, img))
    if group:
        yield group


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.batch_size <= 0:
            raise ConfigError(f"--batch_size={args.batch_size} must be positive")
        from deploy.export_format import read_export_meta

        meta = read_export_meta(args.export_dir)
        input_bits = check_input_bits(meta.get("input_bits", 0) if args.input_bits is None
                                      else args.input_bits)
        files = collect_files(args.inputs)
        if not files:
            raise ConfigError("no images to score")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    t0 = time.time()
    model = tf.saved_model.load(args.export_dir)
    serve = model.signatures["serving_default"]
    load_s = time.time() - t0
    rows, skipped = [], []
    explain_dir = Path(args.explain_dir)

    def readable():
        for path in tqdm(files, desc="scoring", unit="img", disable=len(files) < 500,
                         file=sys.stderr):
            img = read_image(path, input_bits)
            if img is None:
                print(f"warning: skipping {path}: not a readable image", file=sys.stderr)
                skipped.append(path)
                continue
            yield path, img

    t1 = time.time()
    for group in batches_by_size(readable(), args.batch_size):
        batch = tf.constant(np.stack([img for _, img in group]))
        out = serve(images=batch)
        raw, norm, dec = (out[k].numpy() for k in ("raw_score", "normalized_score", "decision"))
        rows.extend((str(p), r, n, d) for (p, _), r, n, d in zip(group, raw, norm, dec))
        if args.explain:
            if args.explain == "ig":
                ex = model.signatures["explain_ig"](images=batch,
                                                   steps=tf.constant(args.ig_steps))
            else:
                ex = model.signatures["explain_gradcam"](images=batch)
            from deploy.explain import save_explanation

            for i, (path, _) in enumerate(group):
                name = f"{len(rows) - len(group) + i:06d}_{Path(path).stem}.png"
                save_explanation(explain_dir / name, ex["model_input"][i].numpy(),
                                 ex["heatmap"][i].numpy(), method=args.explain,
                                 title=f"{Path(path).name}: score {raw[i]:.4g} "
                                       f"({'flagged' if dec[i] else 'normal'})")
    score_s = time.time() - t1
    if not rows:
        print(f"error: none of the {len(files)} files could be read as an image",
              file=sys.stderr)
        return 2
    write_csv_atomic(args.out, rows)
    flagged = int(sum(r[3] for r in rows))
    print(f"scored {len(rows)}, flagged {flagged}, skipped {len(skipped)} "
          f"(detector {meta['score_key']}, threshold {meta['calibration']['threshold']:.6g}; "
          f"{len(rows) / max(score_s, 1e-9):.0f} images/s, load {load_s:.1f} s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
