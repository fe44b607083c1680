"""The README's Python examples (one per task) run as written; its command lines parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from convision.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_blocks() -> list[str]:
    return re.findall(
        r"<!-- readme-python[^>]*-->\s*```python\n(.*?)```", README.read_text(), re.S
    )


def test_one_python_example_per_task():
    configs = [
        re.search(r"convision\.(\w+Config)\(\)", block)
        for block in readme_python_blocks()
    ]
    assert sorted(m.group(1) for m in configs if m) == [
        "ClassifyConfig",
        "DetectConfig",
        "LocalizeConfig",
        "SegmentConfig",
    ]


@pytest.mark.parametrize("index", range(4))
def test_readme_python_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = readme_python_blocks()[index]
    # the examples after the first predict on `image`, an RGB uint8 array (a photo in real use)
    namespace: dict = {
        "image": np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    }
    exec(compile(code, str(README), "exec"), namespace)
    out = re.search(r'"(runs/readme[^"]*)"', code).group(1)
    assert (tmp_path / out / "best.pt").is_file()
    assert namespace["model"].task in ("segment", "classify", "localize", "detect")
    assert namespace["metrics"]


def test_every_readme_command_line_parses():
    """Each `convision ...` line of the README's shell blocks uses flags the CLI has."""
    text = README.read_text()
    lines = [
        line.split("#")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.splitlines()
    ]
    commands = [line for line in lines if line.startswith("convision ")]
    assert len(commands) >= 8
    for line in commands:
        args = [
            a for a in shlex.split(line)[1:] if a != "..."
        ]  # "..." marks elided settings
        build_parser().parse_args(
            args
        )  # raises ConvisionError on an unknown flag or mode
