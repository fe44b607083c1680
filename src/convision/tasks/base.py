"""What every task shares: training on the engine, loading any checkpoint, reading the inputs of
``predict``, and the predict-to-folder loop.

A task module (``convision.tasks.<name>``) provides its config, data sets, model builder, the
engine's Task object (loss, metric, eval step), and ``train``, ``evaluate``, ``predict``,
``predict_to_folder`` and ``on_load(model, checkpoint)`` (the task's own attributes of a loaded model).
"""

from __future__ import annotations

import glob
import importlib
import inspect
import json
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from convision.config import from_dict
from convision.data.io import read_image
from convision.engine.checkpoint import load_checkpoint
from convision.engine.distributed import (
    DistInfo,
    cleanup,
    init_distributed,
    resolve_device,
)
from convision.engine.trainer import Trainer
from convision.errors import CheckpointError, ConfigError, DataError
from convision.models import MODELS, build_model

TASKS = ("segment", "classify", "localize", "detect")
WHAT = {
    "segment": "a segmentation model",
    "classify": "a classifier",
    "localize": "a localizer",
    "detect": "a detector",
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def task_module(name: str) -> ModuleType:
    """``convision.tasks.<name>`` for one of :data:`TASKS`."""
    if name not in TASKS:
        raise CheckpointError(
            f"task: unknown task {name!r} (known: {', '.join(TASKS)})"
        )
    return importlib.import_module(f"convision.tasks.{name}")


def device_of(device: str | torch.device | None) -> torch.device:
    """``None`` and ``"auto"`` pick CUDA when available."""
    return resolve_device("auto" if device is None else device)


# ---------------------------------------------------------------------------------------------- training


def train_on_engine(
    cfg: Any, prepare: Callable[[DistInfo], dict[str, Any]], *, progress: bool
) -> dict[str, Any]:
    """Run ``prepare(dist)`` (data sets, model, task, meta) and the engine's training loop under
    torchrun or in one process. ``prepare`` returns the Trainer's keyword arguments, optionally with
    ``"trainer"`` (a Trainer subclass) and ``"trainer_kwargs"``. Returns ``{"best", "last", ...fit()}``."""
    dist = init_distributed(cfg.train.device)
    try:
        setup = prepare(dist)
        trainer_cls = setup.pop("trainer", Trainer)
        extra = setup.pop("trainer_kwargs", {})
        trainer = trainer_cls(
            cfg=cfg.train, dist=dist, progress=progress, **setup, **extra
        )
        result = trainer.fit()
    except BaseException:
        cleanup(wait=False)
        raise
    cleanup()
    return run_paths(cfg.train.out, result)


def run_paths(out: str | os.PathLike, result: dict[str, Any]) -> dict[str, Any]:
    out = Path(out)
    return {"best": str(out / "best.pt"), "last": str(out / "last.pt"), **result}


def check_splits(
    train_set: Any,
    val_set: Any,
    where: str,
    *,
    validate: bool,
    progress: bool,
    is_main: bool = True,
) -> None:
    """An empty training split is an error; with ``validate`` every sample of both splits is read once."""
    if len(train_set) == 0:
        raise DataError(f"{where}: the training split holds no images")
    if validate and is_main:
        train_set.validate(progress=progress)
        if val_set is not None and len(val_set):
            val_set.validate(progress=progress)


def checkpoint_meta(
    task: str,
    name: str,
    kwargs: dict[str, Any],
    classes: list[str],
    cfg: Any,
    *,
    mean: Iterable[float],
    std: Iterable[float],
    colors: Iterable[Iterable[int]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """What the engine copies into every checkpoint (plain types only)."""
    return {
        "task": task,
        "model": {"name": name, "kwargs": kwargs},
        "classes": list(classes),
        "colors": [[int(v) for v in c] for c in colors],
        "normalization": {
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
        },
        **extra,
        "config": cfg.to_dict(),
    }


def builder_kwargs(name: str, wanted: dict[str, Any], settings: Any) -> dict[str, Any]:
    """The entries of ``wanted`` that the builder ``MODELS[name]`` takes. A setting of ``settings``
    (a model section) changed from its default that the builder does not take is a ConfigError
    (``--faithful`` on a model without that option), never silently dropped."""
    accepted = inspect.signature(MODELS[name]).parameters
    defaults = type(settings)()
    kwargs = {}
    for key, value in wanted.items():
        if key in accepted:
            kwargs[key] = value
        elif hasattr(defaults, key) and getattr(settings, key) != getattr(
            defaults, key
        ):
            raise ConfigError(f"{key}: model {name} has no such option")
    return kwargs


def weights_name(text: str) -> str | None:
    """``none`` / ``null`` / ``random`` / empty -> None (random initialisation), else the name or file."""
    return None if text.strip().lower() in ("", "none", "null", "random") else text


# ---------------------------------------------------------------------------------------------- loading


def load(
    path: str | os.PathLike,
    device: str | torch.device | None = "cpu",
    *,
    task: str | None = None,
) -> nn.Module:
    """Rebuild the model of any convision checkpoint, in eval mode, reading the file once.

    The module carries what prediction needs: ``.task``, ``.classes``, ``.colors``,
    ``.normalization``, ``.spec`` (architecture name and arguments), ``.train_config`` and the task's
    own attributes (``.image_size`` for classify / localize, ``.min_size`` ... for detect). With
    ``task``, a checkpoint of another task is a one-line CheckpointError.

    A ``.onnx`` file (``convision TASK export``) loads as an :class:`~convision.export.module.OnnxModule`:
    the same attributes and forward contract, run by ONNX Runtime on the CPU (``device`` only moves
    the tensors it returns).
    """
    if str(path).lower().endswith(".onnx"):
        from convision.export.module import OnnxModule

        net = OnnxModule(path)
        if task is not None and net.task != task:
            raise CheckpointError(
                f"{path}: a {net.task} model, not {WHAT.get(task, task)}"
            )
        return net.eval()
    ckpt = load_checkpoint(path)
    for key in ("model", "state_dict", "classes", "normalization"):
        if key not in ckpt:
            raise CheckpointError(
                f"{path}: not a convision model checkpoint (no '{key}')"
            )
    found = str(ckpt.get("task", "segment"))
    if task is not None and found != task:
        raise CheckpointError(
            f"{path}: a {found} checkpoint, not {WHAT.get(task, task)}"
        )
    spec = ckpt["model"]
    kwargs = dict(spec["kwargs"])
    kwargs["weights"] = None  # the checkpoint's own weights replace any pretrained ones
    model = build_model(spec["name"], **kwargs)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: weights do not fit {spec['name']}: {first}"
        ) from None
    model.task = found
    model.classes = list(ckpt["classes"])
    model.colors = [tuple(c) for c in ckpt.get("colors") or []]
    model.normalization = dict(ckpt["normalization"])
    model.spec = {"name": spec["name"], "kwargs": dict(spec["kwargs"])}
    model.train_config = ckpt.get("config", {})
    task_module(found).on_load(model, ckpt)
    return model.to(device_of(device)).eval()


def as_model(
    model: nn.Module | str | os.PathLike, device: torch.device, task: str
) -> nn.Module:
    """A path is loaded (it must hold ``task``); a module must come from :func:`load` for ``task``."""
    if isinstance(model, (str, os.PathLike)):
        return load(model, device=device, task=task)
    found = getattr(model, "task", None)
    if found is None:
        raise ConfigError(
            "model: pass a checkpoint path or a model returned by convision.load()"
        )
    if found != task:
        raise ConfigError(f"model: a {found} model, not {WHAT.get(task, task)}")
    return model.to(device).eval()


def trained_section(model: nn.Module, section: str, cls: type) -> Any:
    """``cls`` (a settings section) filled with the model's training settings of ``section``
    (renamed settings of older checkpoints mapped, unknown ones dropped)."""
    return from_dict(
        cls, (getattr(model, "train_config", None) or {}).get(section) or {}
    )


# ---------------------------------------------------------------------------------------------- inputs


def expand_inputs(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
) -> list[Path]:
    """Image files from paths, folders (their images, sorted) and glob patterns."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: list[Path] = []
    for item in items:
        text = str(item)
        p = Path(text)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(
                    f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})"
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif any(ch in text for ch in "*?["):
            found = sorted(
                Path(q)
                for q in glob.glob(text, recursive=True)
                if Path(q).suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise DataError(f"{text}: pattern matches no images")
            files.extend(found)
        else:
            raise DataError(f"{text}: no such file or folder")
    if not files:
        raise DataError("predict: no input images given")
    return files


def check_image(array: np.ndarray, name: str) -> np.ndarray:
    """A uint8 ``HxW`` or ``HxWx{1,3,4}`` array as ``HxWx3`` RGB (grey repeated, alpha dropped)."""
    a = np.asarray(array)
    if (
        a.dtype != np.uint8
        or a.ndim not in (2, 3)
        or (a.ndim == 3 and a.shape[2] not in (1, 3, 4))
    ):
        raise DataError(
            f"{name}: expected a uint8 image HxW or HxWx3, got {a.dtype} {tuple(a.shape)}"
        )
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def read_inputs(images: Any) -> list[tuple[str, np.ndarray]]:
    """``(name, HxWx3 uint8)`` for images given as paths, a folder, a glob, or uint8 arrays."""
    if isinstance(images, np.ndarray):
        return [("array", check_image(images, "array"))]
    if (
        isinstance(images, (list, tuple))
        and images
        and all(isinstance(i, np.ndarray) for i in images)
    ):
        return [
            (f"array{k}", check_image(a, f"array{k}")) for k, a in enumerate(images)
        ]
    return [(str(p), read_image(p)) for p in expand_inputs(images)]


# ---------------------------------------------------------------------------------------------- predict to a folder


def output_folder(out: str | os.PathLike, setting: str = "out") -> Path:
    """``out`` as a folder, created; a file there (or above it) is a one-line ConfigError."""
    root = Path(out)
    for folder in (root, *root.parents):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{setting}: {folder} is a file, not a folder")
    root.mkdir(parents=True, exist_ok=True)
    return root


def predict_to_folder(
    inputs: Any,
    out: str | os.PathLike | None,
    predict_one: Callable[[np.ndarray, str], tuple[Any, dict[str, Any]]],
    *,
    strict: bool = False,
    progress: bool = True,
    results_json: str | None = "predictions.json",
) -> FolderResults:
    """Run ``predict_one(image, path) -> (result, pictures)`` on every input image. Each picture
    (``{sub_folder: HxWx3 or palette image}``, ``""`` = ``out`` itself) is written as ``<stem>.png``;
    ``out/results_json`` maps each path to its result. ``out`` None writes nothing.

    An image that cannot be read is skipped with a warning (``strict``: the first one stops the
    run) and listed in the returned dict's ``skipped``; the results of the others are written.
    """
    files = expand_inputs(inputs)
    root = output_folder(out) if out is not None else None
    results = FolderResults()
    used: set[str] = set()
    for f in tqdm(
        files,
        desc="predict",
        unit="img",
        disable=not progress or len(files) < 2,
        leave=False,
    ):
        try:
            array = read_image(f)
        except DataError as e:
            if strict:
                raise
            warnings.warn(f"skipped: {e}", stacklevel=2)
            results.skipped.append(str(f))
            continue
        result, pictures = predict_one(array, str(f))
        stem = f.stem if f.stem not in used else f"{f.parent.name}_{f.stem}"
        while stem in used:
            stem += "_"
        used.add(stem)
        if root is not None:
            for sub, picture in pictures.items():
                folder = root / sub if sub else root
                folder.mkdir(parents=True, exist_ok=True)
                image = (
                    picture
                    if isinstance(picture, Image.Image)
                    else Image.fromarray(picture)
                )
                image.save(folder / f"{stem}.png")
        results[str(f)] = result
    if root is not None and results_json:
        (root / results_json).write_text(json.dumps(results, indent=2))
    return results


class FolderResults(dict):
    """``{path: result}`` of :func:`predict_to_folder`; ``skipped`` lists the images that could not be read."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: list[str] = []
