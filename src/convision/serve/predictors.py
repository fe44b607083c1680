"""What the web service runs: a convision checkpoint (PyTorch) or an exported ``.onnx`` (ONNX
Runtime, without importing torch), behind one small interface, and its results as JSON.

A predictor has ``task``, ``classes``, ``colors``, ``describe()`` (plain JSON values) and
``predict(image)`` for one RGB uint8 ``H x W x 3`` array, returning what :func:`convision.predict`
returns for that task.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from typing import Any, Protocol

import numpy as np

__all__ = ["Predictor", "TorchPredictor", "load_predictor", "to_json", "mask_png"]


class Predictor(Protocol):
    task: str
    classes: list[str]
    colors: list[tuple[int, ...]]

    def describe(self) -> dict[str, Any]: ...

    def predict(self, image: np.ndarray) -> Any: ...


class TorchPredictor:
    """A checkpoint loaded with :func:`convision.load`, predicting on the CPU (or ``device``).

    Calls are serialised with a lock: a PyTorch module is not guaranteed to be safe to call from
    several threads at once (the localizer keeps its feature map on a forward hook, for one)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu") -> None:
        import convision

        self.model = convision.load(path, device=device)
        self.device = device
        self.task = self.model.task
        self.classes = list(self.model.classes)
        self.colors = list(self.model.colors)
        self.path = str(path)
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        size = getattr(self.model, "image_size", None) or None
        if self.task == "detect" and self.model.spec["name"] != "yolov1":
            size = None
        return {
            "task": self.task,
            "classes": self.classes,
            "colors": [list(c) for c in self.colors],
            "input_size": [size, size] if size else None,
            "model": self.model.spec["name"],
            "runtime": "pytorch",
            "file": os.path.basename(self.path),
        }

    def predict(self, image: np.ndarray) -> Any:
        import convision

        with self._lock:
            return convision.predict(self.model, image, device=self.device)[0]


def load_predictor(
    path: str | os.PathLike, *, threads: int | None = None, device: str = "cpu"
) -> Predictor:
    """An ONNX Runtime predictor for a ``.onnx`` file (torch is not imported), else a PyTorch one."""
    if str(path).lower().endswith(".onnx"):
        from convision.export.runtime import OnnxModel

        return OnnxModel(path, threads=threads)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    return TorchPredictor(path, device=device)


def mask_png(mask: np.ndarray, colors: list[tuple[int, ...]]) -> str:
    """A class-index mask as a base64 palette PNG: pixel values are class indices (as VOC masks),
    the palette holds the class colours, so a browser shows it in colour; index 0 (background) is
    transparent, so drawn over the image it leaves the background clear (:func:`convision.viz.overlay`)."""
    from PIL import Image

    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    palette = [v for c in colors for v in list(c)[:3]]
    image.putpalette(palette + [0] * (768 - len(palette)))
    buf = io.BytesIO()
    image.save(buf, format="PNG", transparency=0)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _colors(predictor: Predictor) -> list[tuple[int, ...]]:
    """The predictor's class colours, or Pascal VOC's colour map when it has none."""
    from convision.viz import voc_palette

    return list(predictor.colors) or voc_palette(max(len(predictor.classes), 1))


def to_json(predictor: Predictor, result: Any) -> dict[str, Any]:
    """The prediction as JSON values: ``{"task", ...}`` with ``mask_png`` (base64 palette PNG of class
    indices) and per-class pixel ``fractions`` (segment), ``top`` (classify), ``class`` / ``score`` /
    ``box`` (localize) or ``detections`` (detect; boxes x1, y1, x2, y2 in pixels)."""
    task = predictor.task
    if task == "segment":
        counts = np.bincount(result.reshape(-1), minlength=len(predictor.classes))
        total = max(int(result.size), 1)
        fractions = {
            predictor.classes[i]: round(int(n) / total, 6)
            for i, n in enumerate(counts[: len(predictor.classes)])
            if n
        }
        return {
            "task": task,
            "size": list(result.shape),
            "fractions": fractions,
            "mask_png": mask_png(result, _colors(predictor)),
        }
    if task == "classify":
        return {
            "task": task,
            "top": [{"class": c, "probability": float(p)} for c, p in result],
        }
    if task == "localize":
        return {
            "task": task,
            "class": result["class"],
            "score": float(result["score"]),
            "box": [float(v) for v in result["box"]],
        }
    dets = [
        {"box": [float(v) for v in b], "label": int(k), "class": c, "score": float(s)}
        for b, k, c, s in zip(
            result["boxes"], result["labels"], result["classes"], result["scores"]
        )
    ]
    return {"task": task, "detections": dets}
