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


def test_every_readme_command_line_parses():
    """Each `convision ...` line of the README's shell blocks uses flags the CLI has."""
    import re
    import shlex
    from pathlib import Path

    from convision.cli import build_parser

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    lines = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("convision ")]
    assert len(commands) >= 8
    for line in commands:
        args = [a for a in shlex.split(line)[1:] if a != "..."]  # "..." marks elided settings
        build_parser().parse_args(args)  # raises ConvisionError on an unknown flag or mode
