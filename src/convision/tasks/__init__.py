"""The four tasks and the one public API over them.

``train(cfg)`` dispatches on the config's type, ``evaluate`` / ``predict`` on the model's task
(``model.task``, set by :func:`load`), so one set of functions serves every task:

    import convision
    run = convision.train(convision.DetectConfig())
    model = convision.load(run["best"])          # any checkpoint: the right model and task
    convision.evaluate(model)                    # the task's metrics on its validation split
    convision.predict(model, ["a.jpg"])          # the task's predictions

Each ``convision.tasks.<task>`` module also offers its own entry points with task-specific
options (``predict_to_folder``, ``classify.heatmap``, ...); see :mod:`convision.tasks.base` for
what they share. ``style_transfer`` (:mod:`convision.tasks.style`) is neural style transfer: no
training, one optimisation per image.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from convision.errors import ConfigError
from convision.tasks import base
from convision.tasks.base import TASKS, load, task_module
from convision.tasks.classify import ClassifyConfig
from convision.tasks.detect import DetectConfig
from convision.tasks.localize import LocalizeConfig
from convision.tasks.segment import SegmentConfig
from convision.tasks.style import transfer as style_transfer

CONFIGS = {
    SegmentConfig: "segment",
    ClassifyConfig: "classify",
    LocalizeConfig: "localize",
    DetectConfig: "detect",
}

__all__ = [
    "TASKS",
    "ClassifyConfig",
    "DetectConfig",
    "LocalizeConfig",
    "SegmentConfig",
    "evaluate",
    "load",
    "predict",
    "style_transfer",
    "train",
]


def train(cfg: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Train the task that ``cfg`` configures (a :class:`SegmentConfig`, :class:`ClassifyConfig`,
    :class:`LocalizeConfig` or :class:`DetectConfig`; None: segmentation's defaults). Returns
    ``{"best": path, "last": path, "best_metric", "best_epoch", "history"}``."""
    cfg = cfg if cfg is not None else SegmentConfig()
    if type(cfg) not in CONFIGS:
        raise ConfigError(
            f"cfg: expected one of {', '.join(c.__name__ for c in CONFIGS)}, got {type(cfg).__name__}"
        )
    return task_module(CONFIGS[type(cfg)]).train(cfg, **kwargs)


def _loaded(model: nn.Module | str | os.PathLike, device: Any) -> nn.Module:
    if isinstance(model, (str, os.PathLike)):
        return load(model, device=base.device_of(device))
    if getattr(model, "task", None) not in TASKS:
        raise ConfigError(
            "model: pass a checkpoint path or a model returned by convision.load()"
        )
    return model


def evaluate(
    model: nn.Module | str | os.PathLike, data: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """The model's task metrics over a whole split; ``data`` defaults to what it was trained on.
    Keyword arguments go to ``convision.tasks.<task>.evaluate``."""
    net = _loaded(model, kwargs.get("device", "auto"))
    return task_module(net.task).evaluate(net, data, **kwargs)


def predict(
    model: nn.Module | str | os.PathLike, images: Any, **kwargs: Any
) -> list[Any]:
    """The model's predictions for images (paths, a folder, a glob, or uint8 arrays), one per image:
    a class-index mask (segment), top-k ``(class, probability)`` (classify), ``{"class", "score",
    "box"}`` (localize), ``{"boxes", "labels", "classes", "scores"}`` (detect)."""
    net = _loaded(model, kwargs.get("device", "auto"))
    return task_module(net.task).predict(net, images, **kwargs)
