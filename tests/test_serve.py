"""The HTTP service (deploy/service.py, script/serve.py): the same scores as score.py,
batching that never mixes requests, every bad input a 4xx with one sentence, a start that
refuses a damaged export, a clean stop on SIGTERM, and the review page in Chromium.

One tiny map run (a generated 128 px category, served at 96 px) is trained for the
module; the image export is the session's tiny run. The server runs in this process
(uvicorn in a thread, real HTTP on loopback); the SIGTERM test runs script/serve.py's
main in this process's main thread, where uvicorn handles signals.
"""

import base64
import concurrent.futures
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.mvtec_fixture import make_category

ROOT = Path(__file__).resolve().parents[1]
MAP_RUN = ["--model_type=cutpaste_map", "--mvtec_mode=map", "--mvtec_image_size=96",
           "--net_type=ResNet10", "--net_width=0.125", "--num_epoch=1", "--num_batch=2",
           "--batch_size=4", "--eval_epoch=0", "--detectors=membank", "--export_detector=membank",
           "--bank_size=64", "--calibration_fraction=0.3", "--nomvtec_heatmaps"]
UPLOAD_MB = 1.0
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    return Path(make_category(str(tmp_path_factory.mktemp("parts") / "widget"), n_train=8,
                              size=128))


@pytest.fixture(scope="module")
def map_export(tmp_path_factory, category):
    from tests.entry_point import run_in_process

    run = tmp_path_factory.mktemp("map_run") / "run"
    out = run_in_process(["--dataset=mvtec_folder", f"--root={category}", f"--model_dir={run}",
                          *MAP_RUN])
    assert out.returncode == 0, out.stderr[-3000:]
    return run / "export"


class LiveServer:
    """uvicorn serving ``app`` in a thread on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


@contextlib.contextmanager
def serving(app):
    """``app`` on loopback for the block: a client whose paths are relative to it."""
    import httpx

    server = LiveServer(app)
    try:
        with httpx.Client(base_url=server.url, trust_env=False, timeout=60) as client:
            yield client
    finally:
        server.stop()


@pytest.fixture(scope="module")
def map_inspector(map_export):
    from deploy.service import Inspector

    return Inspector(map_export)


@pytest.fixture(scope="module")
def live(map_inspector):
    from deploy.service import create_app

    server = LiveServer(create_app(map_inspector, max_upload_mb=UPLOAD_MB))
    yield server
    server.stop()


def http():
    import httpx

    return httpx.Client(trust_env=False, timeout=60)  # loopback only, never a proxy


def png_bytes(array, **kwargs):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def score_py(export, files, tmp_path):
    """{file name: CSV row} of script/score.py on ``files``."""
    from script import score

    out = tmp_path / "scores.csv"
    assert score.main([*map(str, files), f"--export_dir={export}", f"--out={out}"]) == 0
    with open(out) as f:
        return {Path(row["path"]).name: row for row in csv.DictReader(f)}


def post_files(url, files, **params):
    with http() as client:
        reply = client.post(f"{url}/v1/score", params=params,
                            files=[("image", (Path(f).name, Path(f).read_bytes())) for f in files])
    assert reply.status_code == 200, reply.text
    return reply.json()["images"]


def assert_same_as_score_py(answers, reference, area):
    assert sorted(a["path"] for a in answers) == sorted(reference)
    for answer in answers:
        row = reference[answer["path"]]
        assert abs(answer["raw_score"] - float(row["raw_score"])) <= 1e-5, answer["path"]
        assert abs(answer["normalized_score"] - float(row["normalized_score"])) <= 1e-5
        assert answer["decision"] == int(row["decision"])
        if area:
            assert answer["defect_area_px"] == int(row["defect_area_px"])
        else:
            assert "defect_area_px" not in answer


@pytest.fixture(scope="module")
def map_reference(map_export, category, tmp_path_factory):
    """The category's test images under names of their own, and score.py's rows for them."""
    folder = tmp_path_factory.mktemp("map_images")
    for path in sorted((category / "test").rglob("*.png")):
        shutil.copy(path, folder / f"{path.parent.name}_{path.name}")
    files = sorted(folder.iterdir())
    return files, score_py(map_export, files, tmp_path_factory.mktemp("map_csv"))


# ------------------------------------------------------------------ the scores

@pytest.mark.slow
def test_map_export_scores_equal_score_py_with_regions_and_maps(live, map_reference):
    files, reference = map_reference
    answers = post_files(live.url, files)  # one request: the images share model calls
    assert_same_as_score_py(answers, reference, area=True)
    flagged = [a for a in answers if a["defect_area_px"]]
    assert flagged, "the tiny map model masks nothing: the region check would be empty"
    for answer in flagged:
        assert sum(r["area_px"] for r in answer["regions"]) == answer["defect_area_px"]
    # maps=true: the overlay at the working size, the mask at the input's, whose area is
    # the answer's defect_area_px
    with http() as client:
        data = files[-1].read_bytes()
        reply = client.post(f"{live.url}/v1/score", params={"maps": "true", "name": "x.png"},
                            content=data, headers={"content-type": "image/png"}).json()["images"][0]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["mask_png"]))))
    overlay = Image.open(io.BytesIO(base64.b64decode(reply["overlay_png"])))
    assert mask.shape == (128, 128) and int((mask > 0).sum()) == reply["defect_area_px"]
    assert overlay.size == (96, 96) and overlay.mode == "RGB"
    assert reply["path"] == "x.png"
    assert abs(reply["raw_score"] - float(reference[files[-1].name]["raw_score"])) <= 1e-5


@pytest.mark.slow
def test_image_export_scores_equal_score_py_for_every_decoder(tiny_run, tmp_path):
    from deploy.service import Inspector, create_app

    rng = np.random.default_rng(3)
    folder = tmp_path / "images"
    folder.mkdir()
    rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb).save(folder / "rgb.jpg", quality=90)
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(rgb).save(folder / "rgb.tif")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "same.bmp")
    (folder / "deep.png").write_bytes(png_bytes(rgb[..., 1].astype(np.uint16) * 257))
    files = sorted(folder.iterdir())
    reference = score_py(tiny_run / "export", files, tmp_path)
    with serving(create_app(Inspector(tiny_run / "export"))) as client:
        reply = client.post("/v1/score", files=[("image", (f.name, f.read_bytes())) for f in files])
        assert reply.status_code == 200, reply.text
        assert_same_as_score_py(reply.json()["images"], reference, area=False)
        # a threshold given with the request decides at it, for every image
        raws = sorted(float(r["raw_score"]) for r in reference.values())
        middle = (raws[0] + raws[-1]) / 2
        answers = client.post("/v1/score", params={"threshold": repr(middle)},
                              files=[("image", (f.name, f.read_bytes())) for f in files]).json()
        assert {a["path"]: a["decision"] for a in answers["images"]} == \
            {name: int(float(r["raw_score"]) > middle) for name, r in reference.items()}
        info = client.get("/v1/info").json()
        assert (info["kind"], info["has_maps"], info["input_shape"]) == ("image", False, [32, 32, 3])
        meta = json.loads((tiny_run / "export" / "assets" / "droc_export.json").read_text())
        assert info["threshold"] == meta["calibration"]["threshold"]
        assert info["target_fpr"] == meta["calibration"]["target_fpr"]


@pytest.mark.slow
def test_concurrent_requests_get_their_own_results(live, map_reference):
    files, reference = map_reference

    def ask(path):
        with http() as client:
            reply = client.post(f"{live.url}/v1/score", params={"name": path.name},
                                content=path.read_bytes(), headers={"content-type": "image/png"})
        return path.name, reply.json()["images"][0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for name, answer in pool.map(ask, files * 3):
            assert answer["path"] == name
            assert abs(answer["raw_score"] - float(reference[name]["raw_score"])) <= 1e-5


def test_batch_queue_groups_waiting_images_by_size_and_hands_each_its_row():
    from deploy.service import BatchQueue

    release, calls = threading.Event(), []

    def model(batch):
        calls.append(batch.shape)
        release.wait(10)
        return {"raw_score": batch.reshape(len(batch), -1)[:, 0].astype(np.float64)}

    queue = BatchQueue(model, max_batch=4)
    images = [np.full((8, 8, 3), i, np.uint8) for i in range(7)] + [np.full((4, 4, 3), 9, np.uint8)]
    futures = [queue.submit(images[0])]
    time.sleep(0.2)  # the first call is running, the others wait for it
    futures += [queue.submit(image) for image in images[1:]]
    release.set()
    rows = [float(f.result(10)["raw_score"][0]) for f in futures]
    queue.close()
    assert rows == [0, 1, 2, 3, 4, 5, 6, 9]
    assert calls == [(1, 8, 8, 3), (4, 8, 8, 3), (2, 8, 8, 3), (1, 4, 4, 3)]


# ------------------------------------------------------------------ bad input

def _bomb_png():
    """A valid 1x1 PNG whose header then claims 60000 x 60000 pixels."""
    data = bytearray(png_bytes(np.zeros((1, 1, 3), np.uint8)))
    data[16:24] = (60000).to_bytes(4, "big") * 2
    return bytes(data)


def _jpeg(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG")
    return buf.getvalue()


GOOD = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
BAD_INPUTS = [
    # (what, how it is sent, status, words of the error)
    ("non-image file", dict(files=[("image", ("notes.txt", b"hello, not an image"))]), 415,
     "not a readable"),
    ("empty body", dict(content=b"", headers={"content-type": "image/png"}), 400, "empty"),
    ("empty file", dict(files=[("image", ("a.png", b""))]), 400, "empty"),
    ("truncated JPEG", dict(files=[("image", ("cut.jpg", _jpeg(GOOD)[:700]))]), 415, "truncated"),
    ("decompression bomb", dict(files=[("image", ("bomb.png", _bomb_png()))]), 413,
     "megapixels"),
    ("oversized upload", dict(content=b"\0" * int(1.5 * 2 ** 20),
                              headers={"content-type": "image/png"}), 413, "--max_upload_mb"),
    ("wrong field name", dict(files=[("picture", ("a.png", png_bytes(GOOD)))]), 400, "'picture'"),
    ("text field", dict(content=b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\n'
                        b'a.png\r\n--b--\r\n',
                        headers={"content-type": "multipart/form-data; boundary=b"}), 400,
     "unexpected field"),
    ("not an image type", dict(content=b"abc", headers={"content-type": "text/plain"}), 415,
     "text/plain"),
    ("multipart without boundary", dict(content=b"--x\r\n", headers={
        "content-type": "multipart/form-data"}), 400, "multipart"),
    ("bad threshold", dict(params={"threshold": "nan"}, files=[("image", ("a.png", png_bytes(GOOD)))]),
     400, "threshold"),
    ("bad maps flag", dict(params={"maps": "perhaps"}, files=[("image", ("a.png", png_bytes(GOOD)))]),
     400, "maps"),
]


@pytest.mark.parametrize("what, request_kwargs, status, words", BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
@pytest.mark.slow
def test_bad_input_is_a_4xx_with_one_sentence_and_the_next_request_is_answered(
        live, map_export, map_reference, what, request_kwargs, status, words, tmp_path, monkeypatch):
    files, reference = map_reference
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))  # where an upload would spill to disk
    before = sorted((p, p.stat().st_mtime_ns) for p in map_export.rglob("*"))
    with http() as client:
        reply = client.post(f"{live.url}/v1/score", **request_kwargs)
        assert reply.status_code == status, reply.text
        body = reply.json()
        assert list(body) == ["error"] and words in body["error"]
        message = body["error"]
        assert "\n" not in message and "Traceback" not in message and ". " not in message
        good = client.post(f"{live.url}/v1/score", files=[("image", (files[0].name,
                                                                     files[0].read_bytes()))])
    assert good.status_code == 200
    assert abs(good.json()["images"][0]["raw_score"] - float(reference[files[0].name]["raw_score"])) \
        <= 1e-5
    assert list(spool.iterdir()) == []
    assert sorted((p, p.stat().st_mtime_ns) for p in map_export.rglob("*")) == before


@pytest.mark.slow
def test_unknown_routes_and_methods_answer_json(live):
    with http() as client:
        assert client.get(f"{live.url}/nothing").json() == {"error": "no such page: /nothing"}
        reply = client.get(f"{live.url}/v1/score")
        assert reply.status_code == 405 and "GET is not allowed" in reply.json()["error"]
        assert client.get(f"{live.url}/healthz").json() == {"status": "ok"}
        page = client.get(f"{live.url}/")
        assert page.status_code == 200 and "/static/app.js" in page.text
        assert client.get(f"{live.url}/static/app.js").status_code == 200


@pytest.mark.slow
def test_internal_failure_is_a_500_of_one_logged_line(map_inspector, caplog):
    from deploy.service import create_app

    class Broken:
        def __getattr__(self, name):
            return getattr(map_inspector, name)

        def score(self, batch):
            raise RuntimeError("the model fell over\nsecond line")

    with serving(create_app(Broken())) as client, caplog.at_level("ERROR", "droc.serve"):
        reply = client.post("/v1/score", content=png_bytes(GOOD),
                            headers={"content-type": "image/png"})
    assert reply.status_code == 500 and list(reply.json()) == ["error"]
    lines = [r.getMessage() for r in caplog.records if r.name == "droc.serve"]
    assert len(lines) == 1 and "the model fell over second line" in lines[0]


# ------------------------------------------------------------------ --save_dir

@pytest.mark.slow
def test_save_dir_keeps_flagged_uploads_only_and_refuses_a_foreign_folder(map_inspector,
                                                                          map_reference, tmp_path):
    from deploy.service import FlaggedParts, create_app
    from util.errors import ConfigError

    files, reference = map_reference
    saved_dir = tmp_path / "flagged"
    with contextlib.ExitStack() as locks:
        saved = FlaggedParts(saved_dir, locks)
        saved.begin()
        with serving(create_app(map_inspector, saved=saved)) as client:
            reply = client.post("/v1/score", params={"threshold": "-1e9"},
                                files=[("image", ("../odd name.png", files[0].read_bytes()))])
            kept = reply.json()["images"][0]["saved_as"]
            reply = client.post("/v1/score", params={"threshold": "1e9"},
                                files=[("image", ("normal.png", files[1].read_bytes()))])
            assert "saved_as" not in reply.json()["images"][0]
    assert kept.endswith("_odd_name.png") and "/" not in kept
    assert (saved_dir / kept).read_bytes() == files[0].read_bytes()
    assert sorted(p.name for p in saved_dir.iterdir()) == sorted([".droc_outputs.jsonl", kept])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    with contextlib.ExitStack() as locks, pytest.raises(ConfigError, match="--save_dir"):
        FlaggedParts(foreign, locks)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------ the command

@pytest.mark.slow
def test_serve_refuses_a_missing_or_damaged_export_and_bad_flags(map_export, tmp_path, capsys):
    from script import serve

    damaged = tmp_path / "damaged"
    shutil.copytree(map_export, damaged)
    data = next((damaged / "variables").glob("variables.data-*"))
    data.write_bytes(data.read_bytes()[:100])
    cases = [([f"--export_dir={tmp_path / 'none'}"], "does not exist"),
             ([f"--export_dir={damaged}"], "is damaged"),
             ([f"--export_dir={map_export}", "--port=70000"], "--port=70000"),
             ([f"--export_dir={map_export}", "--max_upload_mb=0"], "--max_upload_mb"),
             ([f"--export_dir={map_export}", "--runtime=torch"], "--runtime"),
             ([f"--export_dir={map_export}", f"--save_dir={map_export / 'kept'}"], "inside")]
    for argv, words in cases:
        assert serve.main([*argv, "--port=0"] if "--port" not in argv[-1] else argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], (argv, err)
    assert not (map_export / "kept").exists()


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish_then_exits_cleanly(map_export, tmp_path,
                                                                      monkeypatch, capsys):
    from script import serve

    monkeypatch.chdir(tmp_path)
    with socket.socket() as probe:  # a free port: serve.py binds it itself
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    big = png_bytes(np.random.default_rng(1).integers(0, 256, (1024, 1024, 3), np.uint8),
                    compress_level=1)
    replies = []

    def client_then_sigterm():
        with http() as client:
            deadline = time.time() + 60
            while time.time() < deadline:
                with contextlib.suppress(Exception):
                    if client.get(f"{url}/healthz").status_code == 200:
                        break
                time.sleep(0.05)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pending = pool.submit(client.post, f"{url}/v1/score", params={"maps": "true"},
                                      files=[("image", (f"{i}.png", big)) for i in range(6)])
                time.sleep(0.3)  # the request is being received or scored
                os.kill(os.getpid(), signal.SIGTERM)
                replies.append(pending.result(60))

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    driver = threading.Thread(target=client_then_sigterm)
    try:
        driver.start()
        code = serve.main([f"--export_dir={map_export}", f"--port={port}"])
        driver.join(60)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert code == 0
    assert replies and replies[0].status_code == 200 and len(replies[0].json()["images"]) == 6
    out = capsys.readouterr().out
    assert out.startswith(f"serving {map_export}") and "stopped" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------------ the page in Chromium

def chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--no-proxy-server"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER))
                    and os.environ.get("CI") != "true",
                    reason="Debian's chromium and chromium-driver (.ci/run installs them; "
                           "under CI their absence fails the test)")
@pytest.mark.slow
def test_page_scores_two_parts_draws_the_overlay_and_the_slider_redecides(live, category,
                                                                          tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    good, defective = tmp_path / "good.png", tmp_path / "hole.png"
    shutil.copy(category / "test" / "good" / "000.png", good)
    shutil.copy(category / "test" / "hole" / "000.png", defective)
    driver = chrome()
    try:
        driver.get(live.url + "/")
        WebDriverWait(driver, 20).until(
            lambda d: "threshold" in d.find_element(By.ID, "export-info").text)
        driver.find_element(By.ID, "pick").send_keys(f"{good}\n{defective}")
        WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".part")) == 2)

        def shown():
            return {card.get_attribute("data-name"): (
                float(card.get_attribute("data-raw-score")),
                card.find_element(By.CSS_SELECTOR, ".decision").text)
                for card in driver.find_elements(By.CSS_SELECTOR, ".part")}

        parts = shown()
        with http() as client:
            answers = {a["path"]: a for a in client.post(
                f"{live.url}/v1/score", files=[("image", (p.name, p.read_bytes()))
                                               for p in (good, defective)]).json()["images"]}
        assert set(parts) == set(answers) == {"good.png", "hole.png"}
        for name, (raw, _) in parts.items():
            assert abs(raw - answers[name]["raw_score"]) <= 1e-5
        raws = sorted(raw for raw, _ in parts.values())
        threshold = float(driver.execute_script("return state.threshold"))
        for raw, decision in parts.values():
            assert decision == ("flagged" if raw > threshold else "normal")
        drawn = driver.execute_script(
            "return Array.from(document.querySelectorAll('img.overlay')).map("
            "i => i.complete && i.naturalWidth)")
        assert drawn == [96, 96]
        outlined = driver.execute_script(
            "const c = document.querySelector('canvas.outline');"
            "return c.width * c.height > 0 && c.getContext('2d').getImageData(0, 0, c.width, "
            "c.height).data.some((v, i) => i % 4 === 3 && v > 0)")
        assert outlined == (max(a["defect_area_px"] for a in answers.values()) > 0)
        assert raws[0] < raws[1], "two parts of one score: the slider cannot separate them"
        middle = (raws[0] + raws[1]) / 2
        slider = driver.find_element(By.ID, "threshold")
        driver.execute_script("arguments[0].value = arguments[1];"
                              "arguments[0].dispatchEvent(new Event('input'))", slider, middle)
        after = sorted(shown().values())
        assert [d for _, d in after] == ["normal", "flagged"]
        driver.execute_script("arguments[0].value = arguments[0].max;"
                              "arguments[0].dispatchEvent(new Event('input'))", slider)
        assert [d for _, d in sorted(shown().values())] == ["normal", "normal"]
        csv_text = driver.execute_script("return csvText()")
        assert csv_text.splitlines()[0] == "path,raw_score,normalized_score,decision,defect_area_px"
        rows = {line.split(",")[0]: line.split(",") for line in csv_text.splitlines()[1:]}
        for name, answer in answers.items():
            assert rows[name][1:] == [repr(answer["raw_score"]), repr(answer["normalized_score"]),
                                      "0", str(answer["defect_area_px"])]
    finally:
        driver.quit()


def test_the_page_ships_with_the_package_and_droc_serve_is_declared():
    """Every file of deploy/static/ matches pyproject.toml's package data (a wheel carries
    the page), and droc-serve is script/serve.py's main."""
    import fnmatch
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["deploy"]
    shipped = sorted(p.relative_to(ROOT / "deploy").as_posix()
                     for p in (ROOT / "deploy" / "static").iterdir())
    assert {"static/index.html", "static/app.js", "static/style.css"} <= set(shipped)
    assert [f for f in shipped if not any(fnmatch.fnmatch(f, pat) for pat in patterns)] == []
    assert project["project"]["scripts"]["droc-serve"] == "script.serve:main"
