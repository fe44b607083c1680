"""Load test of ``convision serve``: requests per second and latency percentiles of ``POST /predict``
for FCN-8s (MobileNetV2) on 320x320 images, served from its exported ``.onnx`` (ONNX Runtime) and
from the PyTorch checkpoint, in the same run.

The server runs in a child process (``python -m convision.serve``, uvicorn) on 127.0.0.1; the client
sends ``--requests`` PNG uploads from ``--concurrency`` threads (httpx) and times each request end to
end (upload, decode, inference, mask PNG, JSON). Client and server share the machine's cores.

    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_load.py [--requests 200] [--concurrency 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from convision.data.images import IMAGENET_MEAN, IMAGENET_STD
from convision.engine.checkpoint import FORMAT, save_checkpoint
from convision.export import export_onnx
from convision.models import build_model
from convision.tasks import load
from convision.tasks.base import checkpoint_meta
from convision.tasks.segment import SegmentConfig


def checkpoint(path: Path, size: int) -> Path:
    """FCN-8s on ImageNet MobileNetV2 (21 classes, untrained head) as a convision checkpoint."""
    kwargs = {"num_classes": 21, "backbone": "mobilenet_v2", "weights": "IMAGENET1K_V1"}
    model = build_model("fcn8s", **kwargs)
    cfg = SegmentConfig()
    cfg.data.scene_size = size
    meta = checkpoint_meta(
        "segment",
        "fcn8s",
        kwargs,
        [f"class{i}" for i in range(21)],
        cfg,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    save_checkpoint(
        path, {**meta, "format": FORMAT, "state_dict": model.state_dict(), "epoch": 1}
    )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_test(
    model: Path, images: list[bytes], requests: int, concurrency: int, threads: int
) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convision.serve",
            str(model),
            "--port",
            str(port),
            "--threads",
            str(threads),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(timeout=60) as client:

            def ask(i: int) -> float:
                t = time.perf_counter()
                r = client.post(
                    f"{url}/predict",
                    files={"image": ("x.png", images[i % len(images)], "image/png")},
                )
                r.raise_for_status()
                return (time.perf_counter() - t) * 1000

            for i in range(5):  # warm-up
                ask(i)
            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                latencies = sorted(pool.map(ask, range(requests)))
            wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(10)
    return {
        "rps": requests / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[int(0.95 * (len(latencies) - 1))],
        "max": latencies[-1],
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument(
        "--threads", type=int, default=1, help="inference threads of the server"
    )
    p.add_argument("--size", type=int, default=320)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    ckpt = checkpoint(tmp / "fcn8s.pt", args.size)
    export_onnx(load(ckpt), tmp / "fcn8s.onnx")
    rng = np.random.default_rng(0)
    images = []
    for _ in range(8):
        buf = io.BytesIO()
        Image.fromarray(
            rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        ).save(buf, format="PNG")
        images.append(buf.getvalue())
    print(
        f"FCN-8s MobileNetV2 {args.size}x{args.size}, {args.requests} requests from {args.concurrency} client threads, "
        f"server inference threads {args.threads}, torch {torch.__version__}"
    )
    print(f"{'runtime':<12} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for name, model in (("onnxruntime", tmp / "fcn8s.onnx"), ("pytorch", ckpt)):
        r = load_test(model, images, args.requests, args.concurrency, args.threads)
        print(
            f"{name:<12} {r['rps']:>7.1f} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['max']:>8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
