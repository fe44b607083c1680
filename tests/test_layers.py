"""The package's import rules (docs/architecture.md): no module imports from a layer above its own
(data -> models -> engine -> tasks -> cli), and no module imports another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import convision

SRC = Path(__file__).resolve().parents[1] / "src" / "convision"

# lower number = lower layer; a module may import its own layer and those below
LAYERS = {
    "errors": 0,
    "config": 0,
    "viz": 0,
    "data": 1,
    "nn": 2,
    "losses": 2,
    "models": 2,
    "engine": 3,
    "metrics": 3,
    "export": 3,  # ONNX export (models) and ONNX Runtime (no torch); tasks load .onnx files through it
    "tasks": 4,
    "inspect": 4,  # looks into any model convision.load or summary builds (tasks)
    "api": 4,
    "cli": 5,
    "__main__": 5,
    "serve": 5,
}
PRIVATE_ALLOWED: set[tuple[str, str]] = set()


def layer(module: str) -> int:
    parts = module.split(".")
    assert parts[0] == "convision"
    if len(parts) == 1 or parts[1] in (
        "__version__",
        "ConvisionError",
        "DataError",
        "ConfigError",
        "CheckpointError",
    ):
        return 0  # the package root without its API
    if parts[1] in convision.__all__ and parts[1] not in LAYERS:
        return LAYERS["tasks"]  # convision.train, load, ... come from tasks/
    return LAYERS[parts[1]]


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every ``convision`` import in ``path``, function-local ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "convision"
        ):
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name, [])
                for a in node.names
                if a.name.split(".")[0] == "convision"
            ]
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.as_posix() == "__init__.py":
            continue  # the root re-exports the public API lazily
        out.append((rel.as_posix(), path))
    return out


def test_every_module_has_a_layer():
    for rel, _ in modules():
        assert rel.split("/")[0].removesuffix(".py") in LAYERS, rel


def test_no_import_points_up_the_layers():
    wrong = []
    for rel, path in modules():
        own = LAYERS[rel.split("/")[0].removesuffix(".py")]
        for line, module, names in imports(path):
            targets = (
                [f"{module}.{n}" for n in names] if module == "convision" else [module]
            )
            wrong += [f"{rel}:{line} imports {t}" for t in targets if layer(t) > own]
    assert not wrong, "\n".join(wrong)


def test_no_private_names_cross_modules():
    wrong = []
    for rel, path in modules():
        for line, module, names in imports(path):
            wrong += [
                f"{rel}:{line} imports {module}.{n}"
                for n in names
                if n.startswith("_")
                and not n.startswith("__")
                and (rel, n) not in PRIVATE_ALLOWED
            ]
    assert not wrong, "\n".join(wrong)


def test_models_never_import_data():
    """Models take tensors; selective search is a model component (models/detection/proposals.py)."""
    wrong = [
        f"{rel}:{line} imports {module}"
        for rel, path in modules()
        if rel.startswith("models/")
        for line, module, _ in imports(path)
        if module.startswith("convision.data") and module != "convision.data.images"
    ]
    assert not wrong, "\n".join(wrong)
