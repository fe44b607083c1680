"""``convision serve``: a small web service over one model (Starlette on uvicorn).

Endpoints:

* ``POST /predict``: one image, either a ``multipart/form-data`` upload (field ``image``, as the page
  and ``curl -F image=@photo.jpg`` send it) or the raw bytes with an ``image/*`` content type.
  Answers the task's JSON (:func:`convision.serve.predictors.to_json`) plus ``width``, ``height`` and
  ``latency_ms`` (decoding and inference on the server);
* ``GET /health``: ``{"status": "ok"}``;
* ``GET /model``: task, classes, colours, input size, architecture, runtime;
* ``GET /``: a single page: choose or drop an image, see the result drawn over it and the latency.

Safe by default: the CLI binds to 127.0.0.1; bodies larger than ``max_upload_mb`` are refused with
413 before they are read whole (by the declared length, then by counting while reading); anything
that is not a decodable image (wrong content type, corrupt or truncated file, more than
``max_pixels`` pixels) gets a 4xx and a one-line ``{"error": ...}``. Uploads are decoded in memory
(a multipart part larger than 1 MB is spooled by Starlette to an anonymous temporary file, never under
the client's file name). Requests run in a thread pool; each has its own image and result, and a
PyTorch model is called under a lock (:class:`~convision.serve.predictors.TorchPredictor`).

Without PyTorch (an exported ``.onnx``): ``python -m convision.serve model.onnx`` imports only
Starlette, uvicorn, numpy, Pillow and onnxruntime.
"""

from __future__ import annotations

import argparse
import io
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from convision.serve.predictors import Predictor, load_predictor, to_json

__all__ = ["create_app", "add_arguments", "run", "decode_image", "UploadRejected"]

PAGE = Path(__file__).with_name("page.html")
MAX_PIXELS = 50_000_000


class UploadRejected(Exception):
    """A request the service refuses: ``status`` and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Bytes of an image file -> ``H x W x 3`` RGB uint8 (decoded in memory)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise UploadRejected(400, "empty upload: send an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > max_pixels:
                    raise UploadRejected(
                        413,
                        f"image is {im.width}x{im.height}: more than {max_pixels} pixels",
                    )
                rgb = np.asarray(im.convert("RGB"))
    except UploadRejected:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UploadRejected(400, f"not a readable image ({first})") from None
    return np.ascontiguousarray(rgb)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it is known to exceed ``limit`` bytes."""
    over = f"over the limit of {limit / 2**20:.3g} MB (--max-upload-mb)"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadRejected(413, f"upload of {int(declared) / 2**20:.3g} MB is {over}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadRejected(413, f"upload is {over}")
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_bytes(request: Request, limit: int) -> bytes:
    """The uploaded image's bytes: the ``image`` part of a multipart form, or an ``image/*`` body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in (
        "multipart/form-data",
        "application/octet-stream",
    ) and not kind.startswith("image/"):
        raise UploadRejected(
            415,
            f"content type {kind or 'none'!r}: send multipart/form-data with an 'image' file, or an image/* body",
        )
    body = await _body(request, limit)
    if kind != "multipart/form-data":
        return body

    async def replay() -> dict[
        str, Any
    ]:  # the size-checked body, handed to Starlette's form parser
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(
            max_files=1, max_fields=4, max_part_size=limit
        ) as form:
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise UploadRejected(
                    400, "multipart upload without an 'image' file field"
                )
            return await upload.read()
    except UploadRejected:
        raise
    except Exception as e:  # python-multipart / Starlette parse errors
        raise UploadRejected(
            400,
            f"malformed multipart upload ({type(e).__name__}: {str(e).strip()[:100]})",
        ) from None


def create_app(
    predictor: Predictor, *, max_upload_mb: float = 10.0, max_pixels: int = MAX_PIXELS
) -> Starlette:
    """The Starlette application serving ``predictor`` (see the module docstring)."""
    limit = round(max_upload_mb * 2**20)
    page = PAGE.read_text(encoding="utf-8")
    info = predictor.describe()

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def model(request: Request) -> Response:
        return JSONResponse({**info, "max_upload_mb": max_upload_mb})

    def infer(data: bytes) -> dict[str, Any]:
        start = time.perf_counter()
        image = decode_image(data, max_pixels)
        result = to_json(predictor, predictor.predict(image))
        return {
            **result,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "latency_ms": round((time.perf_counter() - start) * 1000.0, 2),
        }

    async def predict(request: Request) -> Response:
        try:
            data = await _image_bytes(request, limit)
            return JSONResponse(await run_in_threadpool(infer, data))
        except UploadRejected as e:
            return JSONResponse({"error": e.reason}, status_code=e.status)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Route("/model", model),
            Route("/predict", predict, methods=["POST"]),
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``convision serve`` and ``python -m convision.serve``."""
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="a convision checkpoint (.pt) or an exported .onnx",
    )
    parser.add_argument("--checkpoint", default=None, help="the same, as an option")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (0.0.0.0: every interface; default: this machine only)",
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument(
        "--max-upload-mb", type=float, default=10.0, help="largest accepted upload"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="inference threads (default: OMP_NUM_THREADS or the runtime's choice)",
    )


def run(args: argparse.Namespace) -> int:
    """Load the model and serve it until interrupted."""
    import uvicorn

    from convision.errors import ConfigError

    path = args.checkpoint or args.model
    if not path:
        raise ConfigError(
            "serve: give a checkpoint or a .onnx file (convision serve --checkpoint best.pt)"
        )
    if args.checkpoint and args.model and args.checkpoint != args.model:
        raise ConfigError("serve: give the model once (positional or --checkpoint)")
    if not 0 < args.max_upload_mb <= 1024:
        raise ConfigError(
            f"--max-upload-mb: expected a size in (0, 1024], got {args.max_upload_mb}"
        )
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port: expected 0..65535, got {args.port}")
    predictor = load_predictor(path, threads=args.threads)
    app = create_app(predictor, max_upload_mb=args.max_upload_mb)
    d = predictor.describe()
    print(
        f"serving {d['task']} model {d['model']} ({len(d['classes'])} classes, {d['runtime']}) on http://{args.host}:{args.port}/",
        flush=True,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: bound to {args.host}: other machines can send images to this service",
            flush=True,
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
