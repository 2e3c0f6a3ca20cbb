"""Serve an export over HTTP: an inspection station's scoring service and review page.

    droc-serve --export_dir=RUN/export [--host=127.0.0.1] [--port=8000] [--workers=1]
               [--runtime=saved_model|onnx|openvino] [--max_image_pixels=N]
               [--max_upload_mb=50] [--save_dir=DIR]

``POST /v1/score`` takes images (multipart ``image`` fields, or one image as the body
with its content type) and answers score.py's CSV fields per image; ``GET /`` is a page
to drop parts on; ``GET /v1/info`` and ``GET /healthz`` say what is served and that it
is up (docs/serve.md). Every flag and the export are checked, the export loaded and the
port bound before it listens: a missing or damaged export, a port in use or a
``--save_dir`` that is not this command's own is one ``error:`` line and exit 2. Ctrl-C
or SIGTERM lets the requests in flight finish, then the server exits with 0.
"""

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys

from data.image_io import check_max_image_pixels
from deploy.service import (DEFAULT_MAX_UPLOAD_MB, OPTIONS_ENV, RUNTIMES, SAVED_KIND,
                            ServeOptions, open_service)
from deploy.export_format import EXPORT_KIND
from util.cli import ArgumentParser, script_main
from util.errors import ConfigError
from util.ownership import check_apart, claim_output

DEFAULT_PORT = 8000


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--export_dir", required=True, help="the export to serve (RUN/export)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT}; 0 = any free port, printed)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes, each with its own copy of the model (default 1)")
    p.add_argument("--runtime", choices=RUNTIMES, default="saved_model",
                   help="what runs the model: the SavedModel, or its conversion made by "
                        "script/export.py --format=onnx|openvino")
    p.add_argument("--max_image_pixels", type=int, default=None,
                   help="refuse images of more pixels (width x height); default: the training "
                        "run's limit")
    p.add_argument("--max_upload_mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"refuse request bodies above this size (default {DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--save_dir", default=None,
                   help="keep the uploads flagged as abnormal here (default: nothing is written)")
    return p.parse_args(argv)


def check_args(args):
    """Every flag checked before the export is loaded or anything written (ConfigError)."""
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port={args.port} must be in 0..65535")
    if args.workers < 1:
        raise ConfigError(f"--workers={args.workers} must be at least 1")
    if args.workers > 1 and args.port == 0:
        raise ConfigError("--workers above 1 needs a --port: the workers share one socket")
    if args.max_upload_mb <= 0:
        raise ConfigError(f"--max_upload_mb={args.max_upload_mb} must be positive")
    if args.max_image_pixels is not None:
        check_max_image_pixels(args.max_image_pixels)
    if args.save_dir is not None:
        claim_output(args.save_dir, SAVED_KIND, "--save_dir", not_inside=(EXPORT_KIND,))
        check_apart([("--save_dir", args.save_dir, True)], [("--export_dir", args.export_dir)])


def bind(host, port):
    """A socket bound to (host, port), not yet listening; ConfigError when it cannot be."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def quiet_signals():
    """SIGINT and SIGTERM answered by uvicorn's graceful shutdown alone: it raises the
    signal again once it has stopped, and this handler makes that a clean exit."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)


def run_server(args, options, locks):
    import uvicorn

    sock = bind(args.host, args.port)
    settings = dict(log_level="warning", access_log=False, timeout_graceful_shutdown=None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    if args.workers == 1:
        app = open_service(options, locks)
        config = uvicorn.Config(app, **settings)
    else:
        open_service(options, locks)  # the export loads: refused here, not in each worker
        os.environ[OPTIONS_ENV] = json.dumps(dataclasses.asdict(options))
        config = uvicorn.Config("deploy.service:worker_app", factory=True,
                                workers=args.workers, **settings)
    sock.listen(2048)  # the export is loaded: connections wait here until uvicorn accepts
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {options.export_dir} ({options.runtime}, {args.workers} worker"
          f"{'s' if args.workers > 1 else ''}) at http://{shown}:{port}/", flush=True)
    quiet_signals()
    if args.workers == 1:
        uvicorn.Server(config).run(sockets=[sock])
    else:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[sock]).run()
    print("stopped: the requests in flight were answered", flush=True)
    return 0


@script_main
def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    options = ServeOptions(export_dir=args.export_dir, runtime=args.runtime,
                           max_image_pixels=args.max_image_pixels,
                           max_upload_mb=args.max_upload_mb, save_dir=args.save_dir)
    with contextlib.ExitStack() as locks:
        return run_server(args, options, locks)


if __name__ == "__main__":
    sys.exit(main())
