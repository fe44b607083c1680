"""Helpers the tests share: tiny settings per task, a subprocess runner, the one-line error contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SEGMENT_TINY = [
    "--num-train",
    "8",
    "--num-val",
    "4",
    "--scene-size",
    "64",
    "--num-classes",
    "4",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--backbone",
    "resnet18",
    "--weights",
    "none",
    "--workers",
    "0",
    "--no-progress",
]
DETECT_TINY = [
    "--num-train",
    "6",
    "--num-val",
    "4",
    "--scene-size",
    "64",
    "--num-classes",
    "3",
    "--workers",
    "0",
    "--epochs",
    "1",
    "--batch-size",
    "2",
    "--weights",
    "none",
    "--device",
    "cpu",
    "--no-progress",
]


def run_cli(
    args: list[str], cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    """``python -m convision ARGS`` in a fresh process: exit code and output exactly as a user sees them."""
    environ = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "convision", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        timeout=300,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, no traceback, one line on stderr holding every needle."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    """The single line ``main()`` printed on stderr (asserted single)."""
    lines = [
        line for line in capsys.readouterr().err.strip().splitlines() if line.strip()
    ]
    assert len(lines) == 1, lines
    return lines[0]


def train_segment_tiny(
    out: Path, model: str, *flags: str, scene_size: int = 32, **builder: object
) -> Path:
    """``convision segment train --model MODEL`` for one step on 2 scenes (random init). ``builder``
    replaces builder arguments the CLI has no flags for (narrow widths keep the run fast)."""
    import torch

    import convision.tasks.segment
    from convision.cli import main

    args = [
        "segment",
        "train",
        "--model",
        model,
        "--weights",
        "none",
        "--num-train",
        "2",
        "--num-val",
        "1",
        "--scene-size",
        str(scene_size),
        "--num-classes",
        "3",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--no-progress",
        "--out",
        str(out),
        *flags,
    ]
    with pytest.MonkeyPatch.context() as mp:
        chosen = convision.tasks.segment.model_kwargs
        mp.setattr(
            convision.tasks.segment,
            "model_kwargs",
            lambda cfg, n: {**chosen(cfg, n), **builder},
        )
        torch.manual_seed(0)
        assert main(args) == 0
    return out


def onnx_outputs(model: object, example: tuple, feeds: tuple | None = None) -> list:
    """Export ``model`` on ``example`` (torch.onnx, dynamo) and run ONNX Runtime on ``feeds``
    (default: the example); returns the outputs as numpy arrays."""
    import io
    import warnings

    import onnxruntime as ort  # dev extra (with onnx, onnxscript for the exporter)
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, buf, dynamo=True, verbose=False)
    sess = ort.InferenceSession(buf.getvalue())
    inputs = feeds if feeds is not None else example
    return sess.run(
        None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), inputs)}
    )


def assert_onnx_matches(model: object, x: object) -> None:
    """The ONNX Runtime output of ``model`` exported on ``x`` equals PyTorch's (same shape, close values)."""
    import torch

    got = torch.from_numpy(onnx_outputs(model, (x,))[0])
    with torch.no_grad():
        ref = model(x)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * ref.abs().max().item())
