"""Run an exported convision model with ONNX Runtime, without PyTorch.

This module imports only numpy, Pillow and onnxruntime (a test runs it in a process where
``torch`` is never imported), so a served ``.onnx`` needs neither PyTorch nor torchvision::

    from convision.export.runtime import OnnxModel
    model = OnnxModel("model.onnx")
    model.task, model.classes            # from the file's metadata
    model.predict(rgb_uint8_array)       # as convision.predict: a mask, top-k, a box, or detections

What the runtime does around the graph (the metadata's ``preprocess`` / ``postprocess`` say the
same; the PyTorch task code is the reference, :mod:`convision.tasks`):

* segment: ``(x / 255 - mean) / std`` at the image's own size (a graph exported without
  ``--dynamic`` has a fixed size: the image is resized to it, bilinear, and the logits back), then
  the arg-max over classes;
* classify: the shorter side resized to ``round(S * 256 / 224)``, centre crop ``S x S``, normalised;
  softmax, top-k;
* localize: resized to ``S x S``, normalised; softmax; the normalised box times the image size;
* detect (Faster / Fast R-CNN): the shorter side resized to ``min_size`` (the longer at most
  ``max_size``), ``x / 255``; the graph decodes the boxes and runs NMS; the runtime scales the boxes
  back to the original pixels. Fast R-CNN also takes selective-search proposals (computed here with
  :func:`convision.models.detection.proposals.selective_search`, which does import torch, or passed in);
* detect (YOLOv1): as above, then resized to the model's ``S x S`` and the original size passed to
  the graph, which returns boxes in those pixels.

Resizing uses Pillow's antialiased bilinear filter; PyTorch's pipeline uses torchvision's
antialiased bilinear resize on tensors, which can differ by about one grey level, so predictions
agree with PyTorch's up to that (the PyTorch-side adapter, :mod:`convision.export.module`, feeds
the graph torchvision's own tensors and matches PyTorch to float precision).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OnnxModel", "METADATA_KEYS", "resize_rgb", "shortest_side_size"]

#: Metadata props written by :func:`convision.export.onnx_export.export_onnx` (JSON values).
METADATA_KEYS = (
    "convision_format",
    "task",
    "model",
    "classes",
    "colors",
    "normalization",
    "input_size",
    "dynamic",
    "preprocess",
    "postprocess",
    "inputs",
    "outputs",
    "config",
    "quantization",
)


def _error(message: str) -> Exception:
    """A one-line user error (:mod:`convision.errors` imports nothing, so this stays torch-free)."""
    from convision.errors import CheckpointError

    return CheckpointError(message)


def shortest_side_size(
    height: int, width: int, min_size: int, max_size: int
) -> tuple[int, int]:
    """``(height, width)`` after torchvision's ``RandomShortestSize([min_size], max_size)``."""
    r = min_size / min(height, width)
    r = min(r, max_size / max(height, width))
    return int(height * r), int(width * r)


def resize_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An ``H x W x 3`` uint8 image resized with Pillow's antialiased bilinear filter."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _check_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if (
        a.dtype != np.uint8
        or a.ndim not in (2, 3)
        or (a.ndim == 3 and a.shape[2] not in (1, 3, 4))
    ):
        raise ValueError(
            f"expected a uint8 image H x W or H x W x 3, got {a.dtype} {tuple(a.shape)}"
        )
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


class OnnxModel:
    """An exported convision model in an ONNX Runtime session; ``predict`` runs one image end to end.

    ``threads``: ONNX Runtime's intra-op threads (default: ``OMP_NUM_THREADS`` if set, else
    ONNX Runtime's own choice). One instance may be used from several threads at once (ONNX
    Runtime's ``run`` is thread-safe; nothing here keeps per-call state).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        p = Path(path)
        if not p.is_file():
            raise _error(f"{p}: no such file")
        opts = ort.SessionOptions()
        n = (
            threads
            if threads is not None
            else int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        )
        if n:
            opts.intra_op_num_threads = int(n)
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(p), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except (
            Exception
        ) as e:  # onnxruntime raises its own exception types for unreadable files
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise _error(f"{p}: not a readable ONNX model ({first})") from None
        raw = self.session.get_modelmeta().custom_metadata_map
        if "task" not in raw or "classes" not in raw:
            raise _error(
                f"{p}: an ONNX model without convision's metadata (export it with 'convision TASK export')"
            )
        self.path = p
        self.meta: dict[str, Any] = {
            k: json.loads(v) for k, v in raw.items() if k in METADATA_KEYS
        }
        self.task: str = self.meta["task"]
        self.classes: list[str] = list(self.meta["classes"])
        self.colors: list[tuple[int, ...]] = [
            tuple(c) for c in self.meta.get("colors") or []
        ]
        self.normalization: dict[str, list[float]] = dict(
            self.meta.get("normalization") or {}
        )
        self.spec: dict[str, Any] = dict(self.meta.get("model") or {})
        self.input_size: list[int] | None = self.meta.get("input_size")
        self.preprocess: dict[str, Any] = dict(self.meta.get("preprocess") or {})
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    # ------------------------------------------------------------------------------------ graph

    def run(self, **inputs: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for named inputs (see ``self.input_names``)."""
        return self.session.run(None, inputs)

    def describe(self) -> dict[str, Any]:
        """Task, classes, colours, input size and the model's architecture (plain JSON values)."""
        return {
            "task": self.task,
            "classes": self.classes,
            "colors": [list(c) for c in self.colors],
            "input_size": self.input_size,
            "model": self.spec.get("name"),
            "runtime": "onnxruntime",
            "file": self.path.name,
        }

    def _normalized(self, image: np.ndarray) -> np.ndarray:
        """``(x / 255 - mean) / std`` as ``1 x 3 x H x W`` float32 (one multiply-add per value, planes first)."""
        mean = np.asarray(self.normalization["mean"], dtype=np.float32)
        std = np.asarray(self.normalization["std"], dtype=np.float32)
        scale, shift = (
            (1.0 / (255.0 * std))[:, None, None],
            (-mean / std)[:, None, None],
        )
        planes = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)
        return (planes * scale + shift)[None]

    # ------------------------------------------------------------------------------------ tasks

    def predict(
        self, image: np.ndarray, *, topk: int = 5, proposals: np.ndarray | None = None
    ) -> Any:
        """One RGB uint8 image (``H x W x 3``) -> the task's prediction, as :func:`convision.predict`:
        a class-index mask (``uint8 H x W``), top-k ``[(class, probability)]``, ``{"class", "score",
        "box"}`` or ``{"boxes", "labels", "classes", "scores"}`` (original pixels)."""
        image = _check_image(image)
        if self.task == "segment":
            return self.segment_mask(image)
        if self.task == "classify":
            return self.classify(image, topk=topk)
        if self.task == "localize":
            return self.localize(image)
        if self.task == "detect":
            return self.detect(image, proposals=proposals)
        raise _error(f"{self.path}: unknown task {self.task!r}")

    def _resized_input(self, image: np.ndarray) -> bool:
        fixed = self.input_size if not self.meta.get("dynamic") else None
        return bool(fixed) and tuple(fixed) != tuple(image.shape[:2])

    def segment_mask(self, image: np.ndarray) -> np.ndarray:
        """The class-index mask (``uint8 H x W``): the arg-max of the logits, which is the softmax's
        (the softmax is computed only when a fixed-size graph's output must be resized)."""
        if self._resized_input(image):
            return self.segment_probabilities(image).argmax(0).astype(np.uint8)
        return (
            self.run(**{self.input_names[0]: self._normalized(image)})[0][0]
            .argmax(0)
            .astype(np.uint8)
        )

    def segment_probabilities(self, image: np.ndarray) -> np.ndarray:
        """Softmax ``C x H x W`` at the image's own size."""
        h, w = image.shape[:2]
        resize = self._resized_input(image)
        x = resize_rgb(image, *self.input_size) if resize else image
        logits = self.run(**{self.input_names[0]: self._normalized(x)})[0][0]
        probs = _softmax(logits, 0)
        if resize:
            from PIL import Image

            probs = np.stack(
                [
                    np.asarray(Image.fromarray(c).resize((w, h), Image.BILINEAR))
                    for c in probs
                ]
            )
        return probs

    def classify(self, image: np.ndarray, *, topk: int = 5) -> list[tuple[str, float]]:
        size = int(self.preprocess["center_crop"])
        h, w = image.shape[:2]
        short = int(self.preprocess["resize_shorter"])
        nh, nw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        resized = resize_rgb(image, nh, nw)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        crop = resized[top : top + size, left : left + size]
        probs = _softmax(
            self.run(**{self.input_names[0]: self._normalized(crop)})[0][0], 0
        )
        k = max(1, min(int(topk), len(self.classes)))
        order = np.argsort(-probs, kind="stable")[:k]
        return [(self.classes[int(i)], float(probs[i])) for i in order]

    def localize(self, image: np.ndarray) -> dict[str, Any]:
        s = int(self.preprocess["resize"])
        h, w = image.shape[:2]
        logits, boxes = self.run(
            **{self.input_names[0]: self._normalized(resize_rgb(image, s, s))}
        )[:2]
        probs = _softmax(logits[0], 0)
        c = int(probs.argmax())
        box = boxes[0].astype(np.float64) * np.array([w, h, w, h])
        return {
            "class": self.classes[c],
            "score": float(probs[c]),
            "box": [float(v) for v in box],
        }

    def detect(
        self, image: np.ndarray, *, proposals: np.ndarray | None = None
    ) -> dict[str, Any]:
        h, w = image.shape[:2]
        nh, nw = shortest_side_size(
            h, w, int(self.preprocess["min_size"]), int(self.preprocess["max_size"])
        )
        resized = resize_rgb(image, nh, nw)
        kind = self.preprocess.get("graph", "two_stage")
        if kind == "yolov1":
            s = int(self.preprocess["resize"])
            x = resize_rgb(resized, s, s)
            feeds = {
                "image": np.ascontiguousarray(
                    x.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
                ),
                "size": np.array([nh, nw], dtype=np.int64),
            }
        else:
            feeds = {
                "image": np.ascontiguousarray(
                    resized.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
                )
            }
            if "proposals" in self.input_names:
                if proposals is None:
                    from convision.models.detection.proposals import (
                        selective_search,  # imports torch (see the docstring)
                    )

                    proposals = selective_search(
                        image, **self.preprocess.get("proposals", {})
                    )
                scale = np.array([nw / w, nh / h, nw / w, nh / h], dtype=np.float32)
                feeds["proposals"] = (
                    np.asarray(proposals, dtype=np.float32).reshape(-1, 4) * scale
                )
                if not len(
                    feeds["proposals"]
                ):  # nothing to classify (the graph's reshapes need a row)
                    return {"boxes": [], "labels": [], "classes": [], "scores": []}
        boxes, labels, scores = self.run(**feeds)[:3]
        boxes = boxes.astype(np.float64) * np.array([w / nw, h / nh, w / nw, h / nh])
        return {
            "boxes": [[float(v) for v in b] for b in boxes],
            "labels": [int(c) for c in labels],
            "classes": [self.classes[int(c)] for c in labels],
            "scores": [float(v) for v in scores],
        }
