"""Score new images with an exported run: one CSV line per image.

    python script/score.py --export_dir=RUN/export IMAGE_OR_DIR... [--out=scores.csv]
                           [--explain=ig|gradcam --explain_dir=DIR]

Reads JPEG/PNG/BMP files of any size and mode (gray and RGBA are converted to
RGB; the export resizes to its input size). Directories are searched
recursively. The CSV (columns path, raw_score, normalized_score, decision;
decision 1 = flagged as abnormal) is written atomically; it may only replace a
previous score CSV. A file name that is not valid UTF-8 appears in it with
backslash escapes (``\\xff``). An unreadable file, an image above PIL's
decompression-bomb limit and a symlink loop are skipped with a warning and
counted. Exit status 2 with one ``error:`` line, before any image is read, for
a missing, foreign, incompatible or damaged export, an output path that cannot
be written, or no images to score.
"""

import csv
import io
import os
import sys
import time
import warnings
from pathlib import Path

from util.cli import ArgumentParser, quiet_stderr, script_main
from util.errors import ConfigError
from util.paths import check_output_path, first_bytes_are, printable_path, walk_files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
CSV_HEADER = ["path", "raw_score", "normalized_score", "decision"]


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--export_dir", required=True)
    p.add_argument("--out", default="scores.csv", help="CSV to write (default scores.csv)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--explain", choices=("ig", "gradcam"), default=None,
                   help="also write one PNG per image: input and heat map side by side")
    p.add_argument("--explain_dir", default="explain", help="where the PNGs go")
    p.add_argument("--ig_steps", type=int, default=32)
    return p.parse_args(argv)


def collect_files(inputs, warn=None):
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = walk_files(path, IMAGE_SUFFIXES, warn=warn)
            if not found:
                raise ConfigError(f"{path} contains no .jpg/.jpeg/.png/.bmp images")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif os.path.lexists(path):
            raise ConfigError(f"{printable_path(path)} is a broken or looping symlink")
        else:
            raise ConfigError(f"{printable_path(path)} does not exist")
    return files


def read_image(path):
    """uint8 [H,W,3] RGB, or None if PIL cannot read the file."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None


def write_csv_atomic(path, rows):
    from util.atomic import write_text_atomic

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in rows:
        writer.writerow([printable_path(row[0]), repr(float(row[1])), repr(float(row[2])),
                         int(row[3])])
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


def check_outputs(args):
    """Every output path, before the export is loaded or an image read."""
    check_output_path(args.out, "file", "--out", what="score CSV",
                      replaces=first_bytes_are(",".join(CSV_HEADER) + "\n"))
    if args.explain:
        check_output_path(args.explain_dir, "dir", "--explain_dir")


def load_export(export_dir):
    """The SavedModel; ConfigError naming the export when TensorFlow cannot load it. What
    TensorFlow logs while it is imported and loads is shown only when the load succeeds,
    so a damaged export prints the error line alone."""
    from deploy.export_format import damaged_export

    try:
        with quiet_stderr():
            import tensorflow as tf

            return tf.saved_model.load(export_dir)
    except Exception as err:  # TF raises OSError, IndexError, OpError, ... for damage
        raise damaged_export(export_dir, f"{type(err).__name__}: {err}") from None


def read_or_skip(path, warn):
    """read_image, with PIL's decompression-bomb warning as a refusal: None and a warning
    for a file that cannot be used."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = read_image(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            warn(f"skipping {printable_path(path)}: more pixels than PIL's decompression-bomb "
                 f"limit ({Image.MAX_IMAGE_PIXELS})")
            return None
    if img is None:
        warn(f"skipping {printable_path(path)}: not a readable image")
    return img


@script_main
def main(argv=None):
    args = parse_args(argv)
    if args.batch_size <= 0:
        raise ConfigError(f"--batch_size={args.batch_size} must be positive")
    if args.ig_steps <= 0:
        raise ConfigError(f"--ig_steps={args.ig_steps} must be positive")
    from deploy.export_format import check_savedmodel_files, read_export_meta

    meta = read_export_meta(args.export_dir)
    check_savedmodel_files(args.export_dir)
    check_outputs(args)
    skipped = []

    def warn(message):
        print(f"warning: {message}", file=sys.stderr)
        skipped.append(message)

    files = collect_files(args.inputs, warn)
    if not files:
        raise ConfigError("no images to score")

    t0 = time.time()
    model = load_export(args.export_dir)
    import numpy as np
    import tensorflow as tf
    from tqdm import tqdm

    serve = model.signatures["serving_default"]
    load_s = time.time() - t0
    rows = []
    explain_dir = Path(args.explain_dir)

    def readable():
        for path in tqdm(files, desc="scoring", unit="img", disable=len(files) < 500,
                         file=sys.stderr):
            img = read_or_skip(path, warn)
            if img is not None:
                yield path, img

    t1 = time.time()
    for group in batches_by_size(readable(), args.batch_size):
        batch = tf.constant(np.stack([img for _, img in group]))
        out = serve(images=batch)
        raw, norm, dec = (out[k].numpy() for k in ("raw_score", "normalized_score", "decision"))
        rows.extend((p, r, n, d) for (p, _), r, n, d in zip(group, raw, norm, dec))
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
                                 title=f"{printable_path(Path(path).name)}: score "
                                       f"{raw[i]:.4g} ({'flagged' if dec[i] else 'normal'})")
    score_s = time.time() - t1
    if not rows:
        raise ConfigError(f"none of the {len(files)} files could be read as an image")
    write_csv_atomic(args.out, rows)
    flagged = int(sum(r[3] for r in rows))
    print(f"scored {len(rows)}, flagged {flagged}, skipped {len(skipped)} "
          f"(detector {meta['score_key']}, threshold {meta['calibration']['threshold']:.6g}; "
          f"{len(rows) / max(score_s, 1e-9):.0f} images/s, load {load_s:.1f} s) -> "
          f"{printable_path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
