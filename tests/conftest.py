"""Fixtures shared across the test packages: tiny training runs through the command line and random-weight
checkpoints with their ONNX exports, each made once per session (helpers.py holds the shared settings and
assertions, deploy_helpers.py the random-weight checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest

from convision.cli import main
from tests.helpers import DETECT_TINY, SEGMENT_TINY


@pytest.fixture(scope="session")
def segment_run(tmp_path_factory) -> Path:
    """A 1-epoch FCN-8s (ResNet-18, random init) on 8 built-in scenes: ``best.pt``, ``last.pt``, ..."""
    out = tmp_path_factory.mktemp("segment") / "run"
    assert main(["segment", "train", *SEGMENT_TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def detect_run(tmp_path_factory) -> Path:
    """A 1-epoch Faster R-CNN (MobileNetV2, random init) on 6 built-in scenes."""
    out = tmp_path_factory.mktemp("detect") / "run"
    assert (
        main(
            [
                "detect",
                "train",
                *DETECT_TINY,
                "--model",
                "faster_rcnn",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="session")
def fcn_files(tmp_path_factory) -> tuple[Path, Path]:
    """A random-weight FCN-8s checkpoint (built-in scenes, 64 px) and its ONNX export by the CLI."""
    from tests.deploy_helpers import segment_checkpoint

    ckpt = segment_checkpoint(tmp_path_factory.mktemp("fcn") / "best.pt")
    assert main(["segment", "export", "--checkpoint", str(ckpt)]) == 0
    return ckpt, ckpt.with_suffix(".onnx")


@pytest.fixture(scope="session")
def detector_files(tmp_path_factory) -> tuple[Path, Path]:
    """A random-weight Faster R-CNN checkpoint and its ONNX export."""
    import convision
    from convision.export import export_onnx
    from tests.deploy_helpers import detect_checkpoint

    ckpt = detect_checkpoint(
        tmp_path_factory.mktemp("detector") / "best.pt", "faster_rcnn"
    )
    export_onnx(convision.load(ckpt), ckpt.with_suffix(".onnx"))
    return ckpt, ckpt.with_suffix(".onnx")
