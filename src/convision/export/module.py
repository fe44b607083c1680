"""An exported model behind the PyTorch models' interface, so that every task's ``evaluate``,
``predict`` and ``predict_to_folder`` run an ``.onnx`` file unchanged: :func:`convision.load` returns
an :class:`OnnxModule` for a ``.onnx`` path.

The module gets exactly the tensors the PyTorch model would get (the task's own transforms), runs
them through ONNX Runtime and returns the model's output structure, so ONNX and PyTorch predictions
differ only by the graph's float arithmetic. Detection graphs take one image at a time (a batch is
run image by image); a graph exported without ``--dynamic`` runs one image at a time too, and a
segmentation graph of fixed size gets the batch resized to its size and the logits resized back
(bilinear), which PyTorch would not do.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convision.export.runtime import OnnxModel

__all__ = ["OnnxModule", "is_onnx"]


def is_onnx(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".onnx")


class OnnxModule(nn.Module):
    """``forward`` as the exported model's (segment / classify: logits; localize: ``{"logits", "boxes"}``;
    detect: a list of ``{"boxes", "labels", "scores"}``), computed by ONNX Runtime on the CPU.
    Attributes as :func:`convision.load` sets them, read from the file's metadata."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        self.runtime = OnnxModel(path, threads=threads)
        meta = self.runtime.meta
        self.task = self.runtime.task
        self.classes = list(self.runtime.classes)
        self.colors = list(self.runtime.colors)
        self.normalization = dict(self.runtime.normalization)
        self.spec = dict(self.runtime.spec)
        self.train_config = dict(meta.get("config") or {})
        pre = self.runtime.preprocess
        if self.task in ("classify", "localize"):
            self.image_size = int(pre.get("center_crop") or pre.get("resize"))
        if self.task == "detect":
            self.min_size, self.max_size = int(pre["min_size"]), int(pre["max_size"])
            self.proposal_settings = dict(pre.get("proposals") or {})
            self.image_size = int(pre.get("resize", 0))
        self.fixed_size = None if meta.get("dynamic") else meta.get("input_size")

    def extra_repr(self) -> str:
        return f"{self.runtime.path.name}: {self.task} {self.spec.get('name')} on onnxruntime"

    def _run(self, *arrays: Tensor) -> list[Tensor]:
        feeds = {
            n: a.detach().cpu().contiguous().numpy()
            for n, a in zip(self.runtime.input_names, arrays)
        }
        return [torch.from_numpy(o) for o in self.runtime.run(**feeds)]

    def _dense(self, images: Tensor) -> list[Tensor]:
        """Run a dense graph on a batch: whole if the batch axis is free, else image by image."""
        if self.runtime.meta.get("dynamic"):
            return self._run(images)
        parts = [self._run(images[i : i + 1]) for i in range(images.shape[0])]
        return [torch.cat(p) for p in zip(*parts)]

    def forward(
        self,
        images: Any,
        targets: Any = None,
        proposals: Sequence[Tensor] | None = None,
    ) -> Any:
        if targets is not None:
            raise RuntimeError("an ONNX model cannot be trained")
        if self.task == "segment":
            h, w = images.shape[-2:]
            x = images.float()
            if self.fixed_size and tuple(self.fixed_size) != (h, w):
                x = F.interpolate(
                    x, size=tuple(self.fixed_size), mode="bilinear", align_corners=False
                )
                return F.interpolate(
                    self._dense(x)[0], size=(h, w), mode="bilinear", align_corners=False
                )
            return self._dense(x)[0]
        if self.task == "classify":
            return self._dense(images.float())[0]
        if self.task == "localize":
            logits, boxes = self._dense(images.float())[:2]
            return {"logits": logits, "boxes": boxes}
        return [
            self._detect(im, None if proposals is None else proposals[i])
            for i, im in enumerate(images)
        ]

    def _detect(self, image: Tensor, proposals: Tensor | None) -> dict[str, Tensor]:
        x = image.float()[None]
        if (
            "size" in self.runtime.input_names
        ):  # YOLOv1: the model's own square resize, then the graph
            h, w = x.shape[-2:]
            s = self.image_size
            if (h, w) != (s, s):
                x = F.interpolate(
                    x,
                    size=(s, s),
                    mode="bilinear",
                    align_corners=False,
                    antialias=h > s or w > s,
                )
            boxes, labels, scores = self._run(
                x, torch.tensor([h, w], dtype=torch.int64)
            )
        elif "proposals" in self.runtime.input_names:
            if proposals is None:
                raise ValueError(
                    "proposals: this Fast R-CNN graph needs one P x 4 box tensor per image"
                )
            proposals = proposals.float().reshape(-1, 4)
            if not len(
                proposals
            ):  # nothing to classify (the graph's reshapes need a row)
                return {
                    "boxes": x.new_zeros((0, 4)),
                    "labels": torch.zeros(0, dtype=torch.int64),
                    "scores": x.new_zeros(0),
                }
            boxes, labels, scores = self._run(x, proposals)
        else:
            boxes, labels, scores = self._run(x)
        return {"boxes": boxes, "labels": labels, "scores": scores}
