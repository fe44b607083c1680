"""Fixtures shared by several test modules."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fcn_files(tmp_path_factory) -> tuple[Path, Path]:
    """A random-weight FCN-8s checkpoint (built-in scenes, 64 px) and its ONNX export by the CLI."""
    from convision.cli import main
    from deploy_helpers import segment_checkpoint

    ckpt = segment_checkpoint(tmp_path_factory.mktemp("fcn") / "best.pt")
    assert main(["segment", "export", "--checkpoint", str(ckpt)]) == 0
    return ckpt, ckpt.with_suffix(".onnx")


@pytest.fixture(scope="session")
def detector_files(tmp_path_factory) -> tuple[Path, Path]:
    """A random-weight Faster R-CNN checkpoint and its ONNX export."""
    import convision
    from convision.export import export_onnx
    from deploy_helpers import detect_checkpoint

    ckpt = detect_checkpoint(tmp_path_factory.mktemp("detector") / "best.pt", "faster_rcnn")
    export_onnx(convision.load(ckpt), ckpt.with_suffix(".onnx"))
    return ckpt, ckpt.with_suffix(".onnx")
