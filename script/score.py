"""Score new images with an exported run: one CSV line per image.

    python script/score.py --export_dir=RUN/export IMAGE_OR_DIR... [--out=scores.csv]
                           [--threshold=T | --target_fpr=F] [--maps_dir=DIR]
                           [--explain=ig|gradcam --explain_dir=DIR] [--max_image_pixels=N]

Reads JPEG/PNG/BMP/TIFF files of any size, mode and bit depth (data/image_io.py:
gray and RGBA are converted to RGB, 16-bit samples scaled to 8 by their bit
depth or by ``--input_bits``, by default the training run's; the export resizes
to its input size). Directories are searched recursively. The CSV (columns
path, raw_score, normalized_score, decision; decision 1 = flagged as abnormal;
patch and map models add defect_area_px, the predicted mask's area in the input
image's pixels) is written atomically; it may only replace a previous score
CSV. A file name that is not valid UTF-8 appears in it with backslash escapes
(``\\xff``). An unreadable file, an image of more pixels than
``--max_image_pixels`` (default: the training run's limit; judged from the
file's header before the export is loaded) and a symlink loop are skipped
with a warning and counted. Exit status 2 with one ``error:`` line, before
any image is read, for a missing, foreign, incompatible or damaged export, an
output path that is not this command's own (util/ownership.py: ``--maps_dir``
and ``--explain_dir`` may be new, empty or a previous folder of the same
kind, recognised by its manifest, never inside an export or another such
folder), an output that is, contains or lies inside an input (the images
scored, the export) or another output (``--out`` inside ``--maps_dir``), or no
images to score. A CSV inside the folder scored is allowed: only images are
read there. A folder of maps or explanations is never scored: one inside an
input folder is skipped with a note, one given as an input is refused.
``--maps_dir`` and ``--explain_dir`` are locked while the command writes them
(util/runlock.py): a second score.py into the same folder is refused at once
with one ``error:`` line. Ctrl-C keeps the maps written so far; the CSV is
written at the end. What a killed score.py leaves in its folder (a temporary
file, its lock) is the folder's own: the next run removes it.

The decision uses the export's calibrated threshold, ``--threshold`` (a raw
score), or a threshold set anew at ``--target_fpr`` on the calibration scores
the export stores (image and pixel thresholds alike). For patch and map models,
``--maps_dir`` writes ``<n>_<name>.png`` (the input, the anomaly map over it
with the predicted mask outlined) and ``<n>_<name>_mask.png`` (the predicted
mask at the input's size, 255 = defect) per image.
"""

import contextlib
import io
import itertools
import os
import sys
import time
from pathlib import Path

from data.image_io import (DEFAULT_MAX_IMAGE_PIXELS, IMAGE_EXTENSIONS, ImageReadError,
                           ImageTooLargeError, check_image_size, check_input_bits,
                           check_max_image_pixels, read_rgb8, set_max_image_pixels)
from deploy.export_format import EXPORT_KIND, has_maps
from deploy.scoring import (CSV_HEADER, at_working_size, csv_text, decision_thresholds,
                            load_export, map_figure, scored_images)
from util.background import BackgroundWriter, prefetched
from util.cli import ArgumentParser, script_main
from util.errors import ConfigError
from util.heatmaps import EXPLANATIONS_KIND, MAPS_KIND
from util.ownership import (Manifest, OutputKind, check_apart, claim_output,
                            lock_manifest_folder, recognised_output)
from util.paths import first_bytes_are, printable_path, walk_files

IMAGE_SUFFIXES = IMAGE_EXTENSIONS
#: decoded images a reader thread keeps ready ahead of the model
PREFETCH_IMAGES = 16
#: pixels of one batch at most: 256 images of 256 x 256 px, 16 of 1024 x 1024 px
MAX_BATCH_PIXELS = 256 * 256 * 256
CSV_KIND = OutputKind("score CSV", first_bytes_are(",".join(CSV_HEADER)))
#: what this command writes into folders: never read back as images
OWN_FOLDERS = (MAPS_KIND, EXPLANATIONS_KIND)


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
    p.add_argument("--threshold", type=float, default=None,
                   help="raw-score threshold for the decision (default: the export's)")
    p.add_argument("--pixel_threshold", type=float, default=None,
                   help="patch and map models: anomaly-map threshold of the mask "
                        "(default: the export's)")
    p.add_argument("--target_fpr", type=float, default=None,
                   help="set both thresholds at this false-positive rate on the export's "
                        "calibration scores")
    p.add_argument("--maps_dir", default=None,
                   help="patch and map models: write the anomaly map and predicted mask PNGs here")
    p.add_argument("--input_bits", type=int, default=None,
                   help="bits per sample that 16-bit files really use (8..16, e.g. 12); 0 = "
                        "each file's own depth; default: the training run's --input_bits")
    p.add_argument("--max_image_pixels", type=int, default=None,
                   help="skip images of more pixels (width x height); default: the training "
                        f"run's limit ({DEFAULT_MAX_IMAGE_PIXELS} unless it raised it)")
    return p.parse_args(argv)


def check_kind_flags(meta, args):
    """ConfigError for a flag the export's kind has no output for: ``--maps_dir`` needs a
    patch model's maps, ``--explain`` a whole-image model's explanation signatures."""
    mapped = has_maps(meta)
    if args.maps_dir is not None and not mapped:
        raise ConfigError("--maps_dir needs an export with maps, a patch or map model (this "
                          "one scores whole "
                          "images; use --explain for its heat maps)")
    if args.explain and mapped:
        raise ConfigError("--explain needs a whole-image export; a patch model's anomaly "
                          "maps are its explanation: use --maps_dir")


def own_folder(path):
    """True (and a note) for a folder of maps or explanations, recognised by its manifest:
    its PNGs are this command's pictures, not parts to score."""
    kind = recognised_output(path, OWN_FOLDERS)
    if kind is not None:
        print(f"note: not scoring {printable_path(path)}: a {kind.name} this command wrote",
              file=sys.stderr)
    return kind is not None


def collect_files(inputs, warn=None):
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            kind = recognised_output(path, OWN_FOLDERS)
            if kind is not None:
                raise ConfigError(f"{printable_path(path)} is a {kind.name} this command wrote "
                                  "(its manifest says so): its PNGs are not images to score")
            found = walk_files(path, IMAGE_SUFFIXES, warn=warn, skip_dir=own_folder)
            if not found:
                raise ConfigError(f"{path} contains no {'/'.join(IMAGE_SUFFIXES)} images")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif os.path.lexists(path):
            raise ConfigError(f"{printable_path(path)} is a broken or looping symlink")
        else:
            raise ConfigError(f"{printable_path(path)} does not exist")
    return files


def write_csv_atomic(path, rows, area=False):
    """rows: (path, raw, normalized, decision[, defect area]) -> the CSV, atomically."""
    from util.atomic import write_text_atomic

    write_text_atomic(path, csv_text(rows, area))


def write_png_atomic(path, array):
    from PIL import Image

    from util.atomic import write_bytes_atomic

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


def write_map_files(manifest, figure, stem, image, pixel_map, mask, full_mask, caption):
    """``<stem>_mask.png`` (the mask at the input's size) and ``<stem>.png`` (the input at
    the working size under the anomaly map): the files of one image in --maps_dir."""
    write_png_atomic(manifest.directory / f"{stem}_mask.png", full_mask)
    small = at_working_size(image, pixel_map.shape)
    figure.write(manifest.directory / f"{stem}.png", small, pixel_map, mask, caption)


def batches_by_size(items, batch_size, max_pixels=MAX_BATCH_PIXELS):
    """Consecutive (paths, images) groups of one image size, at most batch_size each and
    at most ``max_pixels`` pixels together (a camera's images come in smaller batches, so
    the next ones are decoded while the model scores these)."""
    group = []
    for path, img in items:
        full = len(group) >= batch_size or (len(group) + 1) * img.shape[0] * img.shape[1] > \
            max_pixels
        if group and (img.shape != group[0][1].shape or full):
            yield group
            group = []
        group.append((path, img))
    if group:
        yield group


def check_outputs(args, locks):
    """Every output path claimed (util/ownership.py) before the export is loaded or an
    image read: apart from the inputs and from each other, then each under the rule of
    its kind. The folders written image by image are locked (util/runlock.py: a second
    score.py into one of them is refused) and claimed again under the lock, which
    ``locks`` (an ExitStack) holds until the command ends; returns their manifests."""
    explain_dir = args.explain_dir if args.explain else None
    outer = (EXPORT_KIND,) + OWN_FOLDERS
    claim_output(args.out, CSV_KIND, "--out", file=True, not_inside=outer)
    folders = {}
    for flag, folder, kind in (("--explain_dir", explain_dir, EXPLANATIONS_KIND),
                               ("--maps_dir", args.maps_dir, MAPS_KIND)):
        if folder is not None:
            claim_output(folder, kind, flag, not_inside=outer)
            folders[flag] = Manifest(folder, kind)
    check_apart([("--out", args.out, False), ("--maps_dir", args.maps_dir, True),
                 ("--explain_dir", explain_dir, True)],
                [("input", item) for item in args.inputs] + [("--export_dir", args.export_dir)],
                reads=lambda path: path.name.lower().endswith(tuple(IMAGE_SUFFIXES)))
    for flag, manifest in folders.items():
        lock_manifest_folder(manifest, flag, locks, not_inside=outer)
    return folders


def too_large(path, warn):
    """True (and a warning) for a file above the size limit, judged from its header."""
    try:
        check_image_size(path)
    except ImageTooLargeError as err:
        warn(f"skipping {printable_path(path)}: {err}")
        return True
    except OSError:
        return False  # read_or_skip reports it
    return False


def read_or_skip(path, warn, input_bits=0):
    """read_image, or None and a warning for a file that cannot be used."""
    try:
        return read_rgb8(path, input_bits)
    except ImageReadError as err:
        reason = err if isinstance(err, ImageTooLargeError) else "not a readable image"
        warn(f"skipping {printable_path(path)}: {reason}")
        return None


def explain_batch(model, args, batch, group, scored, folder):
    """The --explain PNG of each image of ``group`` (``scored``: raw scores, decisions and
    the row number of the first image)."""
    import tensorflow as tf

    from deploy.explain import save_explanation

    raw, dec, first = scored
    if args.explain == "ig":
        ex = model.signatures["explain_ig"](images=batch, steps=tf.constant(args.ig_steps))
    else:
        ex = model.signatures["explain_gradcam"](images=batch)
    for i, (path, _) in enumerate(group):
        name = f"{first + i:06d}_{Path(path).stem}.png"
        save_explanation(folder.add(name), ex["model_input"][i].numpy(),
                         ex["heatmap"][i].numpy(), method=args.explain,
                         title=f"{printable_path(Path(path).name)}: score "
                               f"{raw[i]:.4g} ({'flagged' if dec[i] else 'normal'})")


def score_files(items, model, args, folders, figure, thresholds, rows, writer):
    """Scores ``items`` ((path, uint8 image) pairs) in batches of one size, appending a CSV
    row per image to ``rows``; the map files go to ``writer``."""
    import numpy as np
    import tensorflow as tf

    serve = model.signatures["serving_default"]
    image_thr, pixel_thr = thresholds
    for group in batches_by_size(items, args.batch_size):
        batch = tf.constant(np.stack([img for _, img in group]))
        out = {k: v.numpy() for k, v in serve(images=batch).items()}
        results = scored_images(out, [img for _, img in group], image_thr, pixel_thr)
        first = len(rows)
        for i, ((path, img), res) in enumerate(zip(group, results)):
            row = (path, res.raw_score, res.normalized_score, res.decision)
            if res.full_mask is None:
                rows.append(row)
                continue
            rows.append(row + (res.defect_area_px,))
            if figure is not None:
                manifest, stem = folders["--maps_dir"], f"{first + i:06d}_{Path(path).stem}"
                manifest.add(f"{stem}_mask.png")
                manifest.add(f"{stem}.png")
                caption = (f"{printable_path(Path(path).name)}: score {res.raw_score:.4g} "
                           f"({'flagged' if res.decision else 'normal'})")
                writer.submit(lambda m=manifest, s=stem, im=img, r=res, c=caption:
                              write_map_files(m, figure, s, im, r.anomaly_map, r.mask,
                                              r.full_mask, c))
        if args.explain:
            scored = ([r.raw_score for r in results], [r.decision for r in results], first)
            explain_batch(model, args, batch, group, scored, folders["--explain_dir"])


@script_main(kept="the CSV is written only at the end, so --out is as it was; the maps and "
                  "explanations written so far are kept")
def main(argv=None):
    args = parse_args(argv)
    with contextlib.ExitStack() as locks:
        return score(args, locks)


def score(args, locks):
    """Scores ``args.inputs``; the output folders' locks are entered into ``locks``."""
    if args.batch_size <= 0:
        raise ConfigError(f"--batch_size={args.batch_size} must be positive")
    if args.ig_steps <= 0:
        raise ConfigError(f"--ig_steps={args.ig_steps} must be positive")
    from deploy.export_format import check_savedmodel_files, read_export_meta

    meta = read_export_meta(args.export_dir)
    check_savedmodel_files(args.export_dir)
    image_thr, pixel_thr, thr_source = decision_thresholds(
        meta, args.export_dir, args.threshold, args.pixel_threshold, args.target_fpr)
    check_kind_flags(meta, args)
    input_bits = check_input_bits(meta.get("input_bits", 0) if args.input_bits is None
                                  else args.input_bits)
    run_limit = (meta.get("config") or {}).get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)
    set_max_image_pixels(check_max_image_pixels(
        run_limit if args.max_image_pixels is None else args.max_image_pixels))
    folders = check_outputs(args, locks)
    skipped = []

    def warn(message):
        print(f"warning: {message}", file=sys.stderr)
        skipped.append(message)

    found = collect_files(args.inputs, warn)
    if not found:
        raise ConfigError("no images to score")
    files = [path for path in found if not too_large(path, warn)]
    if not files:
        raise ConfigError(f"none of the {len(found)} files can be scored: they have more pixels "
                          "than --max_image_pixels allows (see the warnings); raise it")

    from tqdm import tqdm

    def readable():
        for path in tqdm(files, desc="scoring", unit="img", disable=len(files) < 500,
                         file=sys.stderr):
            img = read_or_skip(path, warn, input_bits)
            if img is not None:
                yield path, img

    # the files are judged up to the first readable one before TensorFlow starts: when
    # none is, the error line is all the command prints
    images = readable()
    first = next(images, None)
    if first is None:
        raise ConfigError(f"none of the {len(found)} files could be read as an image (see the "
                          "warnings)")
    t0 = time.time()
    model = load_export(args.export_dir)
    mapped = has_maps(meta)
    load_s = time.time() - t0
    rows = []
    for manifest in folders.values():
        manifest.start()
    figure = None
    if args.maps_dir is not None:
        from deploy.export_format import CALIB_SCORES_NAME

        figure = map_figure(meta, pixel_thr,
                            Path(args.export_dir) / "assets" / CALIB_SCORES_NAME)

    t1 = time.time()
    # files are decoded ahead of the model and maps written behind it, in threads
    with BackgroundWriter() as writer:
        score_files(prefetched(itertools.chain([first], images), PREFETCH_IMAGES), model, args,
                    folders, figure, (image_thr, pixel_thr), rows, writer)
    score_s = time.time() - t1
    if figure is not None:
        figure.close()
    write_csv_atomic(args.out, rows, area=mapped)
    flagged = int(sum(r[3] for r in rows))
    pixel_note = f", pixel threshold {pixel_thr:.6g}" if mapped else ""
    print(f"scored {len(rows)}, flagged {flagged}, skipped {len(skipped)} "
          f"(detector {meta['score_key']}, threshold {image_thr:.6g} {thr_source}{pixel_note}; "
          f"{len(rows) / max(score_s, 1e-9):.2f} images/s, load {load_s:.1f} s) -> "
          f"{printable_path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
