"""Helpers the tests share: tiny settings per task, a subprocess runner, the one-line error contract."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SEGMENT_TINY = ["--num-train", "8", "--num-val", "4", "--scene-size", "64", "--num-classes", "4", "--epochs", "1",
                "--batch-size", "4", "--backbone", "resnet18", "--weights", "none", "--workers", "0", "--no-progress"]
DETECT_TINY = ["--num-train", "6", "--num-val", "4", "--scene-size", "64", "--num-classes", "3", "--workers", "0",
               "--epochs", "1", "--batch-size", "2", "--weights", "none", "--device", "cpu", "--no-progress"]


def run_cli(args: list[str], cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """``python -m convision ARGS`` in a fresh process: exit code and output exactly as a user sees them."""
    environ = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "convision", *args], capture_output=True, text=True, cwd=cwd,
                          env=environ, timeout=300)


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
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]
