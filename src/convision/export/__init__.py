"""Deployment: ONNX export (:mod:`.onnx_export`, PyTorch side), ONNX Runtime inference without
PyTorch (:mod:`.runtime`) and a PyTorch-compatible module over an ONNX file (:mod:`.module`), which
is what :func:`convision.load` returns for a ``.onnx`` path.

Nothing is imported here, so ``convision.export.runtime`` loads without torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_onnx"]


def __getattr__(name: str) -> Any:
    if name == "export_onnx":
        from convision.export.onnx_export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'convision.export' has no attribute {name!r}")
