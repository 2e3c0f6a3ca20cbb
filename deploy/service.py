"""The inspection station's HTTP service: an export answered over HTTP, one image at a time.

A camera or a gateway posts an image and gets its decision back; a person opens ``/``
(deploy/static/, served as they are) and reviews parts. The service is a Starlette app
run by uvicorn (script/serve.py); it scores with the functions script/score.py uses
(deploy/scoring.py, data/image_io.py), so an upload gets the same raw score as the same
file scored from a folder.

* ``Inspector``: the export loaded once (SavedModel, or its ONNX / OpenVINO conversion),
  its thresholds and what ``GET /v1/info`` says about it.
* ``BatchQueue``: one thread makes every model call. Concurrent requests queue their
  images; each call takes what is waiting (same image size, up to a batch) and hands
  each image its own rows back through its own future, so results never mix.
* Every answer a client can provoke is a 4xx with ``{"error": "<one sentence>"}``; an
  internal failure is a 500 with one sentence and one log line.
* Nothing is written unless ``--save_dir`` is given: then the flagged uploads are kept
  there as they were sent, under names the service chose, listed in the folder's
  manifest (util/ownership.py), never over a file it did not write.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from data.image_io import (DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, ImageTooLargeError,
                          check_input_bits, read_rgb8, set_max_image_pixels)
from deploy.convert import OPENVINO_XML, check_conversion, converted_path, require_converter
from deploy.export_format import (CALIB_SCORES_NAME, EXPORT_KIND, check_savedmodel_files,
                                  has_maps, read_export_meta)
from deploy.scoring import (at_working_size, decision_thresholds, load_export, map_figure,
                            mask_regions, scored_images)
from util.atomic import write_bytes_atomic
from util.errors import ConfigError
from util.ownership import Manifest, claim_output, lock_manifest_folder, manifest_kind

logger = logging.getLogger("droc.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"
RUNTIMES = ("saved_model", "onnx", "openvino")
#: the multipart field that carries an image (repeated for several)
IMAGE_FIELD = "image"
#: images of one model call at most, and their pixels together (16 camera images of 1 Mpx)
MAX_BATCH = 32
MAX_BATCH_PIXELS = 16 * 1024 * 1024
#: what a request may carry besides its images
MAX_IMAGES_PER_REQUEST = 64
DEFAULT_MAX_UPLOAD_MB = 50.0
#: the folder of kept flagged parts, recognised by its manifest
SAVED_KIND = manifest_kind("flagged parts")
RAW_TYPES = ("image/", "application/octet-stream")


class ClientError(Exception):
    """What a client sent wrong: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------- the loaded export

def _saved_model_runtime(export_dir, meta):
    import tensorflow as tf

    model = load_export(export_dir)
    serve = model.signatures["serving_default"]

    def call(batch):
        return {k: v.numpy() for k, v in serve(images=tf.constant(batch)).items()}
    return call, model


def _onnx_runtime(export_dir, meta):
    require_converter("onnx")
    path = converted_path(export_dir, "onnx")
    check_conversion(path, "onnx")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda batch: dict(zip(names, session.run(names, {"images": batch}))), session


def _openvino_runtime(export_dir, meta):
    require_converter("openvino")
    path = converted_path(export_dir, "openvino")
    check_conversion(path, "openvino")
    import openvino as ov
    import tensorflow as tf

    from deploy.serving import preprocess

    compiled = ov.Core().compile_model(str(path / OPENVINO_XML), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    height, width = meta["input_shape"][:2]

    def call(batch):
        if batch.shape[1:3] != (height, width):  # the IR has a fixed size: resized as the graph does
            batch = np.rint(preprocess(tf.constant(batch), height, width).numpy() * 255.0)
            batch = batch.astype(np.uint8)
        out = compiled(batch)
        return {port.get_any_name(): np.asarray(out[port]) for port in compiled.outputs}
    return call, compiled


LOADERS = {"saved_model": _saved_model_runtime, "onnx": _onnx_runtime,
           "openvino": _openvino_runtime}


def check_export(export_dir: Path | str, runtime: str) -> dict:
    """The export's metadata once its files are all there (ConfigError otherwise): what
    can be said about it without loading TensorFlow."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime={runtime} is unknown; choose from {', '.join(RUNTIMES)}")
    meta = read_export_meta(export_dir)
    check_savedmodel_files(export_dir)
    decision_thresholds(meta, export_dir)
    if runtime != "saved_model":
        require_converter(runtime)
        check_conversion(converted_path(export_dir, runtime), runtime)
    return meta


class Inspector:
    """An export loaded for scoring: ``score(batch)`` is one model call on uint8 images
    [B, H, W, 3] of one size; ConfigError while loading a damaged export."""

    def __init__(self, export_dir: Path | str, runtime: str = "saved_model") -> None:
        self.export_dir = Path(export_dir)
        self.runtime = runtime
        self.meta = check_export(export_dir, runtime)
        self.image_thr, self.pixel_thr, self.threshold_source = decision_thresholds(
            self.meta, export_dir)
        self.mapped = has_maps(self.meta)
        self.input_bits = check_input_bits(self.meta.get("input_bits", 0))
        self.score, self._keep = LOADERS[runtime](export_dir, self.meta)
        self.figure = (map_figure(self.meta, self.pixel_thr,
                                  self.export_dir / "assets" / CALIB_SCORES_NAME)
                       if self.mapped else None)

    def warm_up(self) -> None:
        """One call at the input size, so the first client does not wait for tracing."""
        height, width = self.meta["input_shape"][:2]
        self.score(np.zeros((1, height, width, 3), np.uint8))

    def info(self) -> dict:
        """What the export is: ``GET /v1/info``."""
        meta, config = self.meta, self.meta.get("config") or {}
        calib = meta.get("calibration") or {}
        summary = {}
        with contextlib.suppress(OSError, ValueError):
            summary = json.loads((self.export_dir.parent / "stats" / "summary.json").read_text())
        metrics = {k: v for k, v in summary.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)} \
            if isinstance(summary, dict) else {}
        return {
            "export_dir": str(self.export_dir), "runtime": self.runtime,
            "kind": meta.get("kind", "image"), "has_maps": self.mapped,
            "model_type": config.get("model_type"), "net_type": config.get("net_type"),
            "dataset": config.get("dataset"), "category": config.get("category"),
            "detector": meta.get("score_key") or meta.get("detector"),
            "input_shape": meta.get("input_shape"),
            "threshold": self.image_thr, "threshold_source": self.threshold_source,
            "target_fpr": calib.get("target_fpr"),
            "pixel_threshold": self.pixel_thr,
            "score_range": [calib.get("norm_min"), calib.get("norm_max")],
            "created": meta.get("created"), "auc": meta.get("auc"), "metrics": metrics,
        }


# ----------------------------------------------------------------------- batching

@dataclasses.dataclass
class _Job:
    image: np.ndarray
    future: concurrent.futures.Future


_STOP = object()


class BatchQueue:
    """One thread makes every model call: each call takes the images waiting (one image
    size, at most ``max_batch`` images and ``max_pixels`` pixels), so concurrent requests
    share calls while a lone request never waits for company. ``submit`` returns a future
    of that image's own outputs (each output's row for it)."""

    def __init__(self, score: Callable[[np.ndarray], Mapping[str, np.ndarray]],
                 max_batch: int = MAX_BATCH, max_pixels: int = MAX_BATCH_PIXELS) -> None:
        self._score, self.max_batch, self.max_pixels = score, max_batch, max_pixels
        self._jobs: queue.Queue = queue.Queue()
        self._held: collections.deque = collections.deque()
        self.calls = 0
        self.images = 0
        self._thread = threading.Thread(target=self._loop, name="droc-batcher", daemon=True)
        self._thread.start()

    def submit(self, image: np.ndarray) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put(_Job(image, future))
        return future

    def close(self) -> None:
        """Scores what is queued, then stops the thread."""
        self._jobs.put(_STOP)
        self._thread.join()

    def _next_group(self):
        stopping = False
        first = self._held.popleft() if self._held else self._jobs.get()
        if first is _STOP:
            return None, True
        group, pixels = [first], first.image.shape[0] * first.image.shape[1]
        waiting = list(self._held)
        self._held.clear()
        while True:
            if waiting:
                job = waiting.pop(0)
            else:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
            if job is _STOP:
                stopping = True
                continue
            size = job.image.shape[0] * job.image.shape[1]
            if job.image.shape != first.image.shape or len(group) >= self.max_batch \
                    or pixels + size > self.max_pixels:
                self._held.append(job)
                continue
            group.append(job)
            pixels += size
        return group, stopping

    def _loop(self):
        while True:
            group, stopping = self._next_group()
            if group:
                self._run(group)
            if stopping and not self._held:
                return

    def _run(self, group):
        try:
            out = self._score(np.stack([job.image for job in group]))
        except Exception as err:  # noqa: BLE001  (handed to every request of the call)
            for job in group:
                job.future.set_exception(err)
            return
        self.calls += 1
        self.images += len(group)
        for i, job in enumerate(group):
            job.future.set_result({k: np.asarray(v)[i:i + 1] for k, v in out.items()})


# ----------------------------------------------------------------------- keeping flagged parts

class FlaggedParts:
    """``--save_dir``: the uploads flagged as abnormal, kept as they were sent, under
    ``<time>_<n>_<name>``; the folder is claimed and locked for the server's life."""

    def __init__(self, directory: Path | str, locks: Optional[contextlib.ExitStack]) -> None:
        self.manifest = Manifest(directory, SAVED_KIND)
        if locks is not None:  # else a parent process (uvicorn's workers) holds the lock
            claim_output(directory, SAVED_KIND, "--save_dir", not_inside=(EXPORT_KIND,))
            lock_manifest_folder(self.manifest, "--save_dir", locks, not_inside=(EXPORT_KIND,))
        self._count = 0
        self._lock = threading.Lock()

    def begin(self) -> None:
        """Begins the folder's record when it has none (a new or empty folder); a previous
        one goes on, so the parts kept before a restart stay."""
        if not SAVED_KIND.recognise(self.manifest.directory):
            self.manifest.start()

    def keep(self, name: str, data: bytes) -> str:
        """Writes one flagged upload; returns the name it got."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._") or "upload"
        with self._lock:
            while True:
                self._count += 1
                stem = f"{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}_{self._count:06d}_{safe}"
                if not os.path.lexists(self.manifest.directory / stem):
                    break
            write_bytes_atomic(self.manifest.add(stem), data)
        return stem


# ----------------------------------------------------------------------- one request

def _png_base64(array: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_upload(data: bytes, name: str, input_bits: int) -> np.ndarray:
    """uint8 RGB of an upload, by the decoders of score.py; ClientError for what cannot
    be scored."""
    if not data:
        raise ClientError(400, f"{name} is empty: send the image's bytes")
    try:
        return read_rgb8(bytes(data), input_bits, name=name)
    except ImageTooLargeError as err:
        raise ClientError(413, f"{name} is too large to decode: {err}") from None
    except ImageReadError as err:
        detail = str(err).split(": ", 1)[-1]
        reason = "" if "BytesIO" in detail or not detail else f" ({detail})"
        raise ClientError(415, f"{name} is not a readable JPEG, PNG, BMP or TIFF "
                               f"image{reason}") from None


def image_answer(name: str, image: np.ndarray, outputs: Mapping[str, np.ndarray],
                 inspector: Inspector, threshold: float, maps: bool) -> dict:
    """One image's JSON: the score CSV's fields, and for map exports the mask's regions
    and (``maps``) the overlay and mask PNGs in base64."""
    res = scored_images(outputs, [image], threshold, inspector.pixel_thr)[0]
    answer = {"path": name, "raw_score": res.raw_score, "normalized_score": res.normalized_score,
              "decision": res.decision, "threshold": threshold,
              "width": int(image.shape[1]), "height": int(image.shape[0])}
    if res.full_mask is not None:
        answer["defect_area_px"] = res.defect_area_px
        answer["regions"] = mask_regions(res.full_mask)
        if maps:
            small = at_working_size(image, res.anomaly_map.shape)
            answer["overlay_png"] = _png_base64(
                inspector.figure.overlay(small, res.anomaly_map, res.mask))
            answer["mask_png"] = _png_base64(res.full_mask)
    return answer


def _flag(value: Optional[str], name: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ClientError(400, f"{name}={value} must be true or false")


def _threshold(value: Optional[str], default: float) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ClientError(400, f"threshold={value} must be a finite number (a raw score)")
    return number


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    too_large = ClientError(413, f"the upload is larger than --max_upload_mb "
                                 f"({limit / 2 ** 20:g} MB)")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _one_chunk(data):
    yield data


async def uploads(request: Request, limit: int) -> list:
    """[(name, bytes)] of a request: multipart ``image`` fields, or a raw image body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _body(request, limit)
    if not body:
        raise ClientError(400, "the request body is empty: send images as multipart "
                               f"'{IMAGE_FIELD}' fields or one image as the body")
    if content_type == "multipart/form-data":
        parser = MultiPartParser(request.headers, _one_chunk(body),
                                 max_files=MAX_IMAGES_PER_REQUEST, max_fields=8)
        parser.spool_max_size = len(body) + 1  # the parts stay in memory: nothing on disk
        try:
            form = await parser.parse()
        except MultiPartException as err:
            raise ClientError(400, f"the multipart body cannot be read ({err})".replace(".)", ")"))
        found = []
        for key, value in form.multi_items():
            if key != IMAGE_FIELD or not isinstance(value, UploadFile):
                what = "file" if isinstance(value, UploadFile) else "field"
                raise ClientError(400, f"unexpected {what} '{key}': images go in file fields "
                                       f"named '{IMAGE_FIELD}'")
            found.append((value.filename or f"{IMAGE_FIELD}{len(found)}", await value.read()))
        if not found:
            raise ClientError(400, f"no '{IMAGE_FIELD}' file field in the multipart body")
        return found
    if content_type.startswith(RAW_TYPES):
        return [(request.query_params.get("name") or "upload", body)]
    raise ClientError(415, f"content type '{content_type or 'none'}' is not an image: send "
                           f"multipart/form-data with '{IMAGE_FIELD}' fields or an image body")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def answered(endpoint):
    """An endpoint whose ClientError becomes its 4xx answer and whose internal failure a
    500 with one sentence, logged as one line."""

    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ClientError as err:
            return _error(err.status, str(err))
        except Exception as err:  # noqa: BLE001  (one line, not a traceback)
            line = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            logger.error("internal error in %s %s: %s", request.method, request.url.path, line)
            return _error(500, "the server failed while answering (its log says why)")
    return run


@dataclasses.dataclass
class ServeOptions:
    """What script/serve.py's flags ask for (checked there)."""

    export_dir: str
    runtime: str = "saved_model"
    max_image_pixels: Optional[int] = None
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    save_dir: Optional[str] = None


def create_app(inspector: Inspector, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               saved: Optional[FlaggedParts] = None) -> Starlette:
    """The Starlette app serving ``inspector``; its lifespan starts and stops the batch
    thread."""
    limit = int(max_upload_mb * 2 ** 20)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["batches"] = BatchQueue(inspector.score)
        try:
            yield
        finally:
            await run_in_threadpool(state["batches"].close)

    @answered
    async def score(request: Request) -> Response:
        threshold = _threshold(request.query_params.get("threshold"), inspector.image_thr)
        maps = _flag(request.query_params.get("maps"), "maps")
        files = await uploads(request, limit)
        # every upload decoded before any is scored: a bad one refuses the request whole
        images = [await run_in_threadpool(decode_upload, data, name, inspector.input_bits)
                  for name, data in files]
        futures = [state["batches"].submit(image) for image in images]
        answers = []
        for (name, data), image, future in zip(files, images, futures):
            outputs = await asyncio.wrap_future(future)
            answer = await run_in_threadpool(image_answer, name, image, outputs, inspector,
                                             threshold, maps)
            if saved is not None and answer["decision"]:
                answer["saved_as"] = await run_in_threadpool(saved.keep, name, data)
            answers.append(answer)
        return JSONResponse({"threshold": threshold, "images": answers})

    @answered
    async def info(request: Request) -> Response:
        return JSONResponse(inspector.info())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html")

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = {404: f"no such page: {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}
        return _error(exc.status_code, message.get(exc.status_code, str(exc.detail)))

    routes = [Route("/", page), Route("/healthz", healthz), Route("/v1/info", info),
              Route("/v1/score", score, methods=["POST"]),
              Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={HTTPException: http_error})


def open_service(options: ServeOptions, locks: Optional[contextlib.ExitStack]) -> Starlette:
    """The app of ``options``: the export loaded, the size limit set, ``--save_dir``
    claimed and locked into ``locks`` (None: a parent process holds it); ConfigError for
    anything wrong, before any port is opened."""
    meta = check_export(options.export_dir, options.runtime)
    run_limit = (meta.get("config") or {}).get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS)
    set_max_image_pixels(run_limit if options.max_image_pixels is None
                         else options.max_image_pixels)
    saved = FlaggedParts(options.save_dir, locks) if options.save_dir else None
    inspector = Inspector(options.export_dir, options.runtime)
    inspector.warm_up()
    if saved is not None and locks is not None:
        saved.begin()
    return create_app(inspector, options.max_upload_mb, saved)


#: the environment variable that hands ``ServeOptions`` to uvicorn's worker processes
OPTIONS_ENV = "DROC_SERVE_OPTIONS"


def worker_app() -> Starlette:
    """The app of one of uvicorn's worker processes (``--workers`` > 1), from the options
    the parent checked and left in ``OPTIONS_ENV``."""
    options = ServeOptions(**json.loads(os.environ[OPTIONS_ENV]))
    return open_service(options, None)
