"""The learner-facing examples run and print the numbers their docstrings promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _block(lines: list[str], title: str, rows: int) -> list[list[float]]:
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    return [
        [float(v) for v in line.split()] for line in lines[start + 1 : start + 1 + rows]
    ]


def test_upsampling_and_conv_matrix_example():
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "upsampling_and_conv_matrix.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "C shape: (4, 16)" in lines
    c = _block(lines, "convolution matrix C", 4)
    assert c[0] == [1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0, 0, 0, 0, 0]
    assert c[3][-4:] == [0, 7, 8, 9]
    assert _block(lines, "C @ x", 2) == [[303, 348], [483, 528]]
    up = _block(lines, "C^T @ z", 4)
    assert up[0] == [1, 4, 7, 6] and up[3] == [21, 52, 59, 36]
    assert "C^T C is 16x16 of rank 4, identity: False" in lines
    assert _block(lines, "nearest unpooling", 4)[2] == [3, 3, 4, 4]
    assert _block(lines, "bed of nails", 4) == [
        [1, 0, 2, 0],
        [0, 0, 0, 0],
        [3, 0, 4, 0],
        [0, 0, 0, 0],
    ]
    assert _block(lines, "switches", 2) == [[1, 7], [12, 10]]
    assert _block(lines, "max unpooling", 4) == [
        [0, 5, 0, 0],
        [0, 0, 0, 7],
        [0, 0, 4, 0],
        [9, 0, 0, 0],
    ]
