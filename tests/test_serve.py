"""``convision serve``: the REST API (limits, bad uploads, concurrency), the server without torch,
and the page driven in a headless Chromium (Debian's package, installed by ``make install``)."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

import convision
from convision.cli import main
from convision.serve.app import create_app
from convision.serve.predictors import load_predictor
from tests.test_export import scenes

torch.set_num_threads(1)


@pytest.fixture
def models(fcn_files, detector_files) -> dict[str, Path]:
    return {
        "seg.pt": fcn_files[0],
        "seg.onnx": fcn_files[1],
        "det.pt": detector_files[0],
        "det.onnx": detector_files[1],
    }


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def mask_of(answer: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"]))))


@contextmanager
def serving(app):
    """``app`` on uvicorn in a thread, on a free port of 127.0.0.1; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True
    )
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.parametrize("kind", ["seg.pt", "seg.onnx"])
def test_api_answers_health_model_and_predict(models, kind: str) -> None:
    client = TestClient(create_app(load_predictor(models[kind])))
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["task"] == "segment" and info["classes"] == [
        "background",
        "disc",
        "square",
    ]
    assert (
        info["runtime"] == ("onnxruntime" if kind.endswith("onnx") else "pytorch")
        and info["max_upload_mb"] == 10
    )
    image = scenes(1, size=64)[0]
    answer = client.post(
        "/predict", files={"image": ("scene.png", png(image), "image/png")}
    ).json()
    expected = convision.predict(convision.load(models["seg.pt"]), image, device="cpu")[
        0
    ]
    np.testing.assert_array_equal(mask_of(answer), expected)
    assert answer["width"] == answer["height"] == 64 and answer["latency_ms"] > 0
    assert abs(sum(answer["fractions"].values()) - 1.0) < 1e-4
    raw = client.post(
        "/predict", content=png(image), headers={"content-type": "image/png"}
    ).json()  # a raw image body
    np.testing.assert_array_equal(mask_of(raw), expected)
    page = client.get("/")
    assert page.status_code == 200 and 'id="canvas"' in page.text


def test_api_refuses_bad_uploads_with_one_line(models) -> None:
    client = TestClient(
        create_app(load_predictor(models["seg.onnx"]), max_upload_mb=0.05)
    )
    image = png(
        np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    )  # ~120 kB of noise
    cases = [
        (
            client.post("/predict", files={"image": ("big.png", image, "image/png")}),
            413,
            "over the limit of 0.05 MB",
        ),
        (
            client.post(
                "/predict", content=b"hello", headers={"content-type": "text/plain"}
            ),
            415,
            "content type 'text/plain'",
        ),
        (
            client.post(
                "/predict",
                files={"image": ("notes.txt", b"not an image at all", "text/plain")},
            ),
            400,
            "not a readable image",
        ),
        (
            client.post(
                "/predict",
                files={"image": ("cut.png", png(scenes(1)[0])[:200], "image/png")},
            ),
            400,
            "not a readable image",
        ),
        (
            client.post(
                "/predict", files={"other": ("a.png", png(scenes(1)[0]), "image/png")}
            ),
            400,
            "without an 'image' file",
        ),
        (
            client.post("/predict", content=b"", headers={"content-type": "image/png"}),
            400,
            "empty upload",
        ),
    ]
    for response, status, reason in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert reason in error and "\n" not in error
    assert client.get("/predict").status_code == 405


@pytest.mark.parametrize("kind", ["seg.onnx", "det.pt"])
def test_twenty_concurrent_requests_get_their_own_answers(models, kind: str) -> None:
    import httpx

    images = scenes(20, size=(64, 80)) if kind == "det.pt" else scenes(20, size=64)
    predictor = load_predictor(models[kind])
    expected = [predictor.predict(im) for im in images]
    with serving(create_app(predictor)) as url:

        def ask(i: int) -> dict:
            return httpx.post(
                f"{url}/predict",
                files={"image": (f"{i}.png", png(images[i]), "image/png")},
                timeout=60,
            ).json()

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(ask, range(20)))
    for answer, want in zip(answers, expected):
        if kind == "det.pt":
            assert [d["label"] for d in answer["detections"]] == want["labels"]
            assert np.allclose(
                [d["box"] for d in answer["detections"]], want["boxes"], atol=1e-3
            )
        else:
            np.testing.assert_array_equal(mask_of(answer), want)
    assert len({json.dumps(a, sort_keys=True) for a in answers}) > 1, (
        "the images must give different answers"
    )


NO_TORCH = """
import sys
from starlette.testclient import TestClient
from convision.serve.app import create_app
from convision.serve.predictors import load_predictor
client = TestClient(create_app(load_predictor(sys.argv[1])))
answer = client.post("/predict", files={"image": ("a.png", open(sys.argv[2], "rb").read(), "image/png")})
assert answer.status_code == 200, answer.text
assert "torch" not in sys.modules, "serving an .onnx imported torch"
print(answer.text)
"""


def test_the_onnx_server_runs_without_torch(models, tmp_path) -> None:
    image = scenes(1, size=64)[0]
    Image.fromarray(image).save(tmp_path / "a.png")
    env = {
        "PYTHONPATH": str(Path(convision.__file__).parents[1]),
        "OMP_NUM_THREADS": "1",
    }
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_TORCH,
            str(models["seg.onnx"]),
            str(tmp_path / "a.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(
        mask_of(json.loads(run.stdout)),
        convision.predict(convision.load(models["seg.pt"]), image, device="cpu")[0],
    )


def test_serve_command_refuses_bad_settings(models, tmp_path, capsys) -> None:
    for argv, reason in [
        (["serve"], "give a checkpoint or a .onnx"),
        (["serve", str(models["seg.onnx"]), "--max-upload-mb", "0"], "--max-upload-mb"),
        (["serve", str(tmp_path / "missing.onnx")], "no such file"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert reason in err and len(err.strip().splitlines()) == 1, err


CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def test_the_page_draws_results_in_a_browser(models, tmp_path) -> None:
    """Upload through the page's file input in headless Chromium; the overlay, the numbers and the
    latency must appear, and a pixel of the drawn mask must be the 50 % blend of image and class colour."""
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), (
        "Debian's chromium is missing: run make install (it installs chromium)"
    )
    seg_image = scenes(1, size=64)[0]
    Image.fromarray(seg_image).save(tmp_path / "scene.png")
    det_image = scenes(2, size=(64, 80))[1]
    Image.fromarray(det_image).save(tmp_path / "objects.png")
    seg, det = load_predictor(models["seg.onnx"]), load_predictor(models["det.onnx"])
    mask = seg.predict(seg_image)
    with (
        serving(create_app(seg)) as seg_url,
        serving(create_app(det)) as det_url,
        sync_playwright() as pw,
    ):
        # a new, empty --user-data-dir (Playwright takes it as the persistent context's folder)
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=FLAGS,
            headless=True,
        )
        try:
            page = browser.new_page()
            page.goto(seg_url)
            page.wait_for_function(
                "document.getElementById('model').textContent.startsWith('segment')"
            )
            page.set_input_files("#file", str(tmp_path / "scene.png"))
            page.wait_for_function(
                "document.getElementById('latency').textContent.includes('ms')",
                timeout=30000,
            )
            assert "scene.png: 64x64" in page.text_content("#status")
            listed = page.text_content("#result")
            present = [seg.classes[int(c)] for c in np.unique(mask)]
            assert all(name in listed for name in present) and "%" in listed
            assert int(page.get_attribute("#canvas", "data-drawn")) == len(present)
            y, x = [int(v) for v in np.argwhere(mask == mask.max())[0]]
            pixel = page.evaluate(
                f"Array.from(document.getElementById('canvas').getContext('2d').getImageData({x}, {y}, 1, 1).data)"
            )
            blend = 0.5 * seg_image[y, x] + 0.5 * np.array(seg.colors[int(mask[y, x])])
            assert np.abs(np.array(pixel[:3]) - blend).max() <= 3, (pixel, blend)

            page.goto(det_url)
            page.wait_for_function(
                "document.getElementById('model').textContent.startsWith('detect')"
            )
            page.set_input_files("#file", str(tmp_path / "objects.png"))
            page.wait_for_function(
                "document.getElementById('latency').textContent.includes('ms')",
                timeout=30000,
            )
            found = det.predict(det_image)
            shown = [
                f"{c} {s:.3f}"
                for c, s in zip(found["classes"], found["scores"])
                if s >= 0.3
            ]
            assert shown and all(text in page.text_content("#result") for text in shown)
            assert int(page.get_attribute("#canvas", "data-drawn")) == len(shown)
        finally:
            browser.close()


def test_python_m_convision_serve_binds_localhost_and_answers(models) -> None:
    """The deployment command itself: a child process serving the .onnx on 127.0.0.1."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "PYTHONPATH": str(Path(convision.__file__).parents[1]),
        "OMP_NUM_THREADS": "1",
        "PATH": os.environ.get("PATH", ""),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convision.serve",
            str(models["seg.onnx"]),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        info = httpx.get(f"http://127.0.0.1:{port}/model", timeout=5).json()
        assert info["task"] == "segment" and info["runtime"] == "onnxruntime"
        answer = httpx.post(
            f"http://127.0.0.1:{port}/predict",
            files={"image": ("a.png", png(scenes(1)[0]), "image/png")},
            timeout=30,
        ).json()
        assert answer["size"] == [64, 64]
    finally:
        server.terminate()
        output = server.communicate(timeout=10)[0]
    assert f"on http://127.0.0.1:{port}/" in output and "warning" not in output
