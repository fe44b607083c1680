"""Export a loaded convision model to ONNX with the metadata a runtime needs.

    import convision
    from convision.export import export_onnx
    info = export_onnx(convision.load("runs/segment/best.pt"), "model.onnx", dynamic=True)

Graphs (see :mod:`convision.export.graphs` for the detection ones):

========== ============================================== ==================================== ==========
task       inputs                                         outputs                              exporter
========== ============================================== ==================================== ==========
segment    ``images`` N x 3 x H x W, normalised           ``logits`` N x C x H x W             dynamo
classify   ``images`` N x 3 x S x S, normalised           ``logits`` N x K                     dynamo
localize   ``images`` N x 3 x S x S, normalised           ``logits`` N x K, ``boxes`` N x 4    dynamo
detect     ``image`` 1 x 3 x H x W in [0, 1]              ``boxes`` M x 4, ``labels`` M,       TorchScript
           (+ ``proposals`` P x 4 for Fast R-CNN;         ``scores`` M (NMS in the graph)
           YOLOv1: 1 x 3 x S x S and ``size`` [2] int64)
========== ============================================== ==================================== ==========

``dynamic``: batch and (segmentation) image size are free; otherwise they are those of the example
(batch 1, the training size). Detection graphs take one image of any size either way (YOLOv1: its
square input). The dense models go through torch's default exporter (``torch.export``); the detectors'
post-processing has data-dependent shapes (boxes above a score, NMS), which the TorchScript-based
exporter (``dynamo=False``) records as ``NonZero`` / ``TopK`` / ``NonMaxSuppression`` directly.
R-CNN is refused: it warps every proposal in Python and scores it with linear SVMs.

Every export is checked: the file is run with ONNX Runtime on the example input and compared with
PyTorch (``info["max_abs_diff"]``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

import convision
from convision.errors import ConfigError
from convision.export.graphs import LocalizerGraph, TwoStageGraph, YOLOv1Graph

__all__ = ["export_onnx", "FORMATS", "default_input_size"]

FORMATS = ("onnx",)
DENSE_OPSET, DETECT_OPSET = 18, 17


def default_input_size(model: nn.Module) -> int:
    """The side of the example image: classify / localize / YOLOv1 their input, two-stage detectors
    their ``min_size``, segmentation the training crop (built-in scenes: their size; else 320)."""
    if model.task in ("classify", "localize"):
        return int(model.image_size)
    if model.task == "detect":
        return (
            int(getattr(model, "image_size", 0) or 0)
            if model.spec["name"] == "yolov1"
            else int(model.min_size)
        )
    data = (getattr(model, "train_config", None) or {}).get("data") or {}
    if data.get("crop_size"):
        return int(data["crop_size"])
    if data.get("data", "synthetic") != "synthetic":
        return 320
    return int(
        data.get("scene_size") or data.get("image_size") or 320
    )  # image_size: checkpoints before the rename


def _graph(model: nn.Module, size: int, dynamic: bool) -> dict[str, Any]:
    """The module to export, its example inputs, names, dynamic axes and pre/post-processing notes."""
    task, name = model.task, model.spec["name"]
    # a dynamic batch needs an example of 2: torch.export specialises a dimension of size 1
    batch = 2 if dynamic and task != "detect" else 1
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    if task != "detect":
        mean = torch.tensor(model.normalization["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(model.normalization["std"]).view(1, 3, 1, 1)
        x = (x - mean) / std
        axes = (
            {0: "batch", 2: "height", 3: "width"} if task == "segment" else {0: "batch"}
        )
        pre: dict[str, Any] = {"normalize": True}
        if task == "classify":
            pre |= {
                "resize_shorter": max(size, int(round(size * 256 / 224))),
                "center_crop": size,
            }
        elif task == "localize":
            pre |= {"resize": size}
        outputs = ["logits", "boxes"] if task == "localize" else ["logits"]
        post = {
            "segment": "argmax over dim 1 (classes)",
            "classify": "softmax over dim 1, top-k",
            "localize": "softmax over logits; boxes are normalised x1, y1, x2, y2: multiply by the image's width, height",
        }[task]
        return {
            "module": LocalizerGraph(model) if task == "localize" else model,
            "args": (x,),
            "inputs": ["images"],
            "outputs": outputs,
            "axes": {"images": axes} if dynamic else {},
            "dynamo": True,
            "pre": pre,
            "post": post,
        }
    pre = {
        "min_size": int(model.min_size),
        "max_size": int(model.max_size),
        "scale": "x / 255 (no mean/std: inside the graph)",
    }
    post = "boxes (x1, y1, x2, y2 in the graph input's pixels, NMS done) times original / resized size; labels index classes"
    if name == "yolov1":
        side = int(model.image_size) // 32
        if model.backbone_name != "darknet" and side % model.grid:
            raise ConfigError(
                f"export: this YOLOv1's {model.backbone_name} map is {side}x{side} at {model.image_size} px, which its "
                f"adaptive pooling to {model.grid}x{model.grid} does not divide and ONNX cannot express; "
                f"train at an image size that is a multiple of {32 * model.grid} (e.g. {32 * model.grid})"
            )
        pre |= {"graph": "yolov1", "resize": int(model.image_size)}
        size_t = torch.tensor([size, size], dtype=torch.int64)
        post = "boxes in the pixels of the 'size' input (the image after the min_size resize), NMS done; times original / resized size"
        return {
            "module": YOLOv1Graph(model),
            "args": (x, size_t),
            "inputs": ["image", "size"],
            "outputs": ["boxes", "labels", "scores"],
            "axes": {},
            "dynamo": False,
            "pre": pre,
            "post": post,
        }
    if name == "mask_rcnn":
        raise ConfigError(
            "export: mask_rcnn cannot be exported to ONNX yet: its masks are pasted into the image box "
            "by box with data-dependent sizes; use the checkpoint with convision.load / detect predict"
        )
    if name not in ("faster_rcnn", "fast_rcnn"):
        raise ConfigError(
            f"export: {name} cannot be exported to ONNX: R-CNN warps every proposal and scores it with "
            "linear SVMs outside the network; export a Fast R-CNN or Faster R-CNN instead"
        )
    axes: dict[str, dict[int, str]] = {"image": {2: "height", 3: "width"}}
    args: tuple[Any, ...] = (x,)
    inputs = ["image"]
    if name == "fast_rcnn":
        args = (
            x,
            torch.tensor(
                [[0.0, 0.0, size / 2, size / 2], [size / 4, size / 4, size, size]]
            ),
        )
        inputs.append("proposals")
        axes["proposals"] = {0: "num_proposals"}
        pre |= {
            "proposals": dict(
                model.proposal_settings or {"mode": "fast", "max_proposals": 2000}
            )
        }
    return {
        "module": TwoStageGraph(model),
        "args": args,
        "inputs": inputs,
        "outputs": ["boxes", "labels", "scores"],
        "axes": axes,
        "dynamo": False,
        "pre": pre | {"graph": "two_stage"},
        "post": post,
    }


def _export(g: dict[str, Any], path: Path, opset: int) -> None:
    module = g["module"].eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if g["dynamo"]:
            dim = torch.export.Dim.DYNAMIC
            shapes = tuple(
                {a: dim for a in g["axes"].get(n, {})} or None for n in g["inputs"]
            )
            # torch.export first, then its program to ONNX: torch.onnx.export's own capture of
            # the module fails on U-Net (MobileNetV2) with a dynamic size where this succeeds
            exported = torch.export.export(
                module, g["args"], dynamic_shapes=shapes if g["axes"] else None
            )
            program = torch.onnx.export(
                exported,
                g["args"],
                dynamo=True,
                input_names=g["inputs"],
                output_names=g["outputs"],
                opset_version=opset,
                verbose=False,
            )
            program.save(str(path), external_data=False)
        else:
            torch.onnx.export(
                module,
                g["args"],
                str(path),
                dynamo=False,
                input_names=g["inputs"],
                output_names=g["outputs"],
                dynamic_axes=g["axes"] or None,
                opset_version=opset,
            )


def _input_size(
    model: nn.Module, g: dict[str, Any], size: int, dynamic: bool
) -> list[int] | None:
    """The graph's fixed input side ``[H, W]``, or None where any size is taken."""
    if (dynamic and model.task == "segment") or "image" in g["axes"]:
        return None
    return [size, size]


def _metadata(
    model: nn.Module, g: dict[str, Any], size: int, dynamic: bool
) -> dict[str, Any]:
    return {
        "convision_format": 1,
        "task": model.task,
        "model": model.spec,
        "classes": list(model.classes),
        "colors": [list(c) for c in model.colors],
        "normalization": model.normalization,
        "input_size": _input_size(model, g, size, dynamic),
        "dynamic": bool(dynamic),
        "preprocess": g["pre"],
        "postprocess": g["post"],
        "inputs": g["inputs"],
        "outputs": g["outputs"],
        "config": getattr(model, "train_config", None) or {},
    }


def _write_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    proto.producer_name, proto.producer_version = "convision", convision.__version__
    proto.doc_string = f"convision {model_line(meta)}"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def model_line(meta: dict[str, Any]) -> str:
    return f"{meta['task']} model {meta['model'].get('name')} ({len(meta['classes'])} classes)"


def _check(g: dict[str, Any], path: Path) -> float:
    """ONNX Runtime vs PyTorch on the example input: the largest absolute difference of the outputs
    (detections: of the boxes and scores when both find the same number)."""
    from convision.export.runtime import OnnxModel

    runtime = OnnxModel(path, threads=1)
    with torch.no_grad():
        ref = g["module"](*g["args"])
    ref = [r.numpy() for r in (ref if isinstance(ref, (tuple, list)) else (ref,))]
    got = runtime.run(**{n: a.numpy() for n, a in zip(g["inputs"], g["args"])})
    diffs = [
        float(np.abs(r.astype(np.float64) - o).max()) if r.size else 0.0
        for r, o in zip(ref, got)
        if r.shape == o.shape
    ]
    if len(diffs) != len(ref):
        shapes = ", ".join(
            f"{tuple(r.shape)} vs {tuple(o.shape)}" for r, o in zip(ref, got)
        )
        raise RuntimeError(
            f"export check: ONNX Runtime's outputs differ in shape from PyTorch's ({shapes})"
        )
    return max(diffs, default=0.0)


def export_onnx(
    model: nn.Module,
    out: str | os.PathLike,
    *,
    dynamic: bool = False,
    opset: int | None = None,
    image_size: int | None = None,
    quantize: str | None = None,
    calibration: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write ``model`` (from :func:`convision.load`) to ``out`` as ONNX with convision's metadata props.
    Returns ``{"path", "task", "model", "inputs", "outputs", "input_size", "dynamic", "opset", "bytes",
    "max_abs_diff"}`` (int8: also ``"agreement"``, the share of equal arg-max outputs on the check input).

    ``quantize="int8"`` (segmentation): ONNX Runtime's static quantization (QDQ
    format; weights int8 per channel, activations uint8 with ranges from ``calibration``, a list of
    ``1 x 3 x H x W`` float32 inputs as the graph takes them: normalised training images)."""
    if getattr(model, "task", None) is None or not hasattr(model, "spec"):
        raise ConfigError("export: pass a model returned by convision.load()")
    if getattr(model, "runtime", None) is not None:
        raise ConfigError("export: this model is already an ONNX file")
    size = int(image_size) if image_size else default_input_size(model)
    if size < 16:
        raise ConfigError(f"--image-size: expected at least 16 px, got {size}")
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"--out: {path} is a folder; give a file name (model.onnx)")
    if quantize not in (None, "int8"):
        raise ConfigError(f"--quantize: expected int8, got {quantize!r}")
    if quantize and model.task != "segment":
        raise ConfigError(
            f"--quantize: int8 is offered for segmentation models, not {model.task}"
        )
    if quantize and not calibration:
        raise ConfigError(
            "--quantize int8: needs calibration images (--calibration N > 0)"
        )
    g = _graph(model.cpu().eval(), size, dynamic)
    opset = int(opset) if opset else (DENSE_OPSET if g["dynamo"] else DETECT_OPSET)
    if not 11 <= opset <= 23:
        raise ConfigError(f"--opset: expected 11..23, got {opset}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _export(g, path, opset)
    except ConfigError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"export: {model.spec['name']} could not be exported at {size}x{size}, opset {opset}: {first}"
        ) from None
    meta = _metadata(model, g, size, dynamic)
    extra: dict[str, Any] = {}
    if quantize:
        meta["quantization"] = {
            "type": "int8 static (QDQ)",
            "weights": "int8 per channel",
            "activations": "uint8",
            "calibration_images": len(calibration),
        }
        _quantize(path, calibration)
    _write_metadata(path, meta)
    if quantize:
        extra["agreement"] = _agreement(g, path)
    return {
        "path": str(path),
        "task": model.task,
        "model": model.spec["name"],
        "inputs": g["inputs"],
        "outputs": g["outputs"],
        "input_size": meta["input_size"],
        "dynamic": bool(dynamic),
        "opset": opset,
        "bytes": path.stat().st_size,
        "max_abs_diff": _check(g, path),
        **extra,
    }


def _quantize(path: Path, calibration: Sequence[np.ndarray]) -> None:
    """Replace the float graph at ``path`` by its int8 static quantization (ONNX Runtime's tools)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.items = iter(
                [{name: np.ascontiguousarray(x, dtype=np.float32)} for x in calibration]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    prepared = path.with_name(path.stem + ".prepared.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(path),
                Reader(name),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
    finally:
        prepared.unlink(missing_ok=True)


def _agreement(g: dict[str, Any], path: Path) -> float:
    """Share of equal arg-max outputs (pixels or images) of PyTorch and the quantized graph on the check input."""
    from convision.export.runtime import OnnxModel

    with torch.no_grad():
        ref = g["module"](*g["args"])
    got = OnnxModel(path, threads=1).run(
        **{n: a.numpy() for n, a in zip(g["inputs"], g["args"])}
    )[0]
    return float((ref.argmax(1).numpy() == got.argmax(1)).mean())
