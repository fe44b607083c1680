"""The README's Python example runs as written."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_block() -> str:
    text = README.read_text()
    match = re.search(r"<!-- readme-python[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its tested Python example"
    return match.group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = readme_python_block()
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "runs" / "readme" / "best.pt").is_file()
    assert 0.0 <= namespace["metrics"]["miou"] <= 1.0
