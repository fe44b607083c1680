"""The models ``convision summary`` describes: a convision model name, a torchvision classifier
name, or a checkpoint; random weights, nothing downloaded (see :mod:`convision.nn.receptive_field`)."""
from __future__ import annotations

import inspect
from pathlib import Path

import torchvision
from torch import nn

from convision.errors import ConfigError
from convision.models import MODELS, build_model
from convision.models.classification import ARCHS
from convision.tasks.base import load


def torchvision_classifiers() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def build(name: str, *, num_classes: int | None = None, backbone: str | None = None, arch: str | None = None) -> tuple[nn.Module, int]:
    """``(model, default input side)`` for a convision model name, a torchvision classifier name or a
    checkpoint path; random weights. Raises ``ConfigError`` (one line) for anything else."""
    path = Path(name)
    if path.suffix in (".pt", ".pth", ".ckpt") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{name}: no such checkpoint")
        model = load(path)
        data = (model.train_config or {}).get("data") or {}
        return model, int(data.get("image_size") or 224)
    if name in MODELS:
        return _build_convision(name, num_classes=num_classes, backbone=backbone, arch=arch), 224
    known = torchvision_classifiers()
    if name in known:
        kwargs = {"num_classes": num_classes} if num_classes is not None else {}
        return torchvision.models.get_model(name, weights=None, **kwargs), 224
    raise ConfigError(
        f"summary: unknown model {name!r} (accepted: convision models {', '.join(MODELS)} (classifier takes --arch); "
        f"torchvision classifiers {', '.join(known)}; or a convision checkpoint .pt)"
    )


def _build_convision(name: str, *, num_classes: int | None, backbone: str | None, arch: str | None) -> nn.Module:
    params = inspect.signature(MODELS[name]).parameters
    kwargs: dict = {"weights": None}
    if "arch" in params:  # classifier, localizer: a torchvision network with a new head
        if arch is None and params["arch"].default is inspect.Parameter.empty:
            raise ConfigError(f"--arch: {name!r} needs an architecture (known: {', '.join(ARCHS)})")
        if arch is not None:
            kwargs["arch"] = arch
        if "strategy" in params:
            kwargs["strategy"] = "scratch"  # random weights
    elif arch is not None:
        raise ConfigError(f"--arch: model {name} has no arch option (use --backbone)")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    elif "num_classes" in params and params["num_classes"].default is inspect.Parameter.empty:
        kwargs["num_classes"] = 10
    if backbone is not None:
        if "backbone" not in params:
            raise ConfigError(f"--backbone: model {name} has no backbone option")
        kwargs["backbone"] = backbone
    return build_model(name, **kwargs)
