"""Section ``serve``: the HTTP service (script/serve.py) under load, beside score.py.

    python script/benchmark.py --sections=serve [--serve_export=RUN/export]
        [--serve_root=CATEGORY] [--serve_train_minutes=3] [--serve_images=40]

The export is ``--serve_export``, or a short inspector run (``--preset=inspector
--train_minutes=--serve_train_minutes``) trained on ``--serve_root`` (the shared
bottle) under ``<out>/serve_run`` and reused by the next benchmark. The images are the
category's test images at their own 256 px and the same images upscaled to
1024 x 1024 PNG (camera resolution), under ``<out>/serve_images``.

For each size the section starts ``script/serve.py --port=0`` on loopback, as a user
would, and drives it with a bounded load generator: 1 (sequential), 4 and 16 clients,
each posting one image per request with ``maps=true`` (overlay and mask PNGs in the
answer) until ``--serve_images`` x 3 requests are answered or a minute has passed. It
reports images/s (answered requests over the wall time), the median and 95th-percentile
latency, and ``script/score.py --maps_dir`` on the same files in the same run (its own
images/s line: scoring and map writing, without its load). The server is stopped by
SIGTERM after each size. Needs requirements-serve.txt.
"""

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from util.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "script" / "serve.py"
SCORE = ROOT / "script" / "score.py"
ENTRY = ROOT / "train_and_eval_loop.py"
SHARED_BOTTLE = ROOT.parent / "shared" / "data" / "mvtec_ad" / "bottle"
CLIENTS = (1, 4, 16)
SIZES = (256, 1024)
#: one load level at most this long, whatever is left of its requests
LEVEL_SECONDS = 60.0


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def check_args(args):
    """The section's arguments, checked before anything runs."""
    if args.serve_export is None and not Path(args.serve_root, "train", "good").is_dir():
        raise ConfigError(f"--serve_root={args.serve_root} has no train/good folder: give an "
                          "MVTec-layout category or --serve_export=RUN/export")
    if args.serve_export is not None and not Path(args.serve_export).is_dir():
        raise ConfigError(f"--serve_export={args.serve_export} does not exist")
    if args.serve_train_minutes <= 0 or args.serve_images <= 0:
        raise ConfigError("--serve_train_minutes and --serve_images must be positive")


def _export(args, out, log):
    """The export to serve: given, or a short inspector run (trained once, then reused)."""
    if args.serve_export is not None:
        return Path(args.serve_export), None
    run = out / "serve_run"
    if (run / "export" / "saved_model.pb").is_file():
        log(f"serve: reusing the inspector run {run}")
        return run / "export", None
    log(f"serve: training an inspector run on {args.serve_root} for "
        f"{args.serve_train_minutes:g} minutes -> {run}")
    t0 = time.time()
    done = subprocess.run([sys.executable, str(ENTRY), "--dataset=mvtec_folder",
                           f"--root={args.serve_root}", "--preset=inspector",
                           f"--train_minutes={args.serve_train_minutes}", f"--model_dir={run}"],
                          capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise ConfigError(f"the inspector run failed: {done.stderr.strip().splitlines()[-1:]}")
    return run / "export", round(time.time() - t0, 1)


def _images(root, out, count):
    """{size: folder} of ``count`` test images at their own size and upscaled to 1024 px."""
    from PIL import Image

    files = sorted(Path(root, "test").rglob("*.png"))[::max(1, len(list(
        Path(root, "test").rglob("*.png"))) // count)][:count]
    folders = {}
    for size in SIZES:
        folder = out / "serve_images" / str(size)
        if folder.is_dir() and len(list(folder.glob("*.png"))) == len(files):
            folders[size] = folder
            continue
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for path in files:
            img = Image.open(path).convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BICUBIC)
            img.save(folder / f"{path.parent.name}_{path.name}")
        folders[size] = folder
    return folders


def _start_server(export):
    proc = subprocess.Popen([sys.executable, str(SERVE), f"--export_dir={export}", "--port=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        raise ConfigError(f"script/serve.py did not start: {proc.stderr.read().strip()[-300:]}")
    return proc, line.split(" at ")[1].strip().rstrip("/")


def drive(url, bodies, clients, requests, seconds=LEVEL_SECONDS):
    """Latencies (s) of ``requests`` POSTs of ``bodies`` (round robin) from ``clients``
    threads, stopping early after ``seconds``; and the wall time."""
    import httpx

    lock, latencies, errors = threading.Lock(), [], []
    counter = iter(range(requests))
    deadline = time.perf_counter() + seconds

    def client():
        with httpx.Client(trust_env=False, timeout=120) as session:
            while time.perf_counter() < deadline:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                t0 = time.perf_counter()
                reply = session.post(f"{url}/v1/score", params={"maps": "true"},
                                     content=bodies[index % len(bodies)],
                                     headers={"content-type": "image/png"})
                spent = time.perf_counter() - t0
                with lock:
                    (latencies if reply.status_code == 200 else errors).append(spent)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests were refused")
    return latencies, wall


def _score_py_rate(export, folder, tmp):
    out = tmp / "score_py"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    done = subprocess.run([sys.executable, str(SCORE), f"--export_dir={export}", str(folder),
                           f"--maps_dir={out / 'maps'}", f"--out={out / 'scores.csv'}"],
                          capture_output=True, text=True, env=_env())
    found = re.search(r"([0-9.]+) images/s", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"score.py failed: {done.stderr.strip()[-300:]}")
    return float(found.group(1))


def serve_section(args, out, log):
    export, trained_s = _export(args, Path(out), log)
    folders = _images(args.serve_root, Path(out), args.serve_images)
    rows = []
    for size, folder in folders.items():
        bodies = [p.read_bytes() for p in sorted(folder.glob("*.png"))]
        proc, url = _start_server(export)
        try:
            drive(url, bodies, 1, 4)  # warm-up: first calls at this size
            for clients in CLIENTS:
                latencies, wall = drive(url, bodies, clients, 3 * len(bodies))
                ordered = sorted(latencies)
                row = {"size_px": size, "clients": clients, "requests": len(latencies),
                       "images_per_sec": round(len(latencies) / wall, 2),
                       "median_ms": round(1e3 * statistics.median(ordered), 1),
                       "p95_ms": round(1e3 * ordered[min(len(ordered) - 1,
                                                         int(0.95 * len(ordered)))], 1)}
                rows.append(row)
                log(f"serve: {size} px, {clients} client(s): {row['images_per_sec']} images/s, "
                    f"median {row['median_ms']} ms, p95 {row['p95_ms']} ms "
                    f"({row['requests']} requests)")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        rate = _score_py_rate(export, folder, Path(out))
        for row in rows:
            if row["size_px"] == size:
                row["score_py_images_per_sec"] = rate
                row["ratio_to_score_py"] = round(row["images_per_sec"] / rate, 2)
        log(f"serve: {size} px, score.py --maps_dir on the same {len(bodies)} images: "
            f"{rate} images/s")
    return {"export": str(export), "trained_seconds": trained_s, "images": args.serve_images,
            "rows": rows}
