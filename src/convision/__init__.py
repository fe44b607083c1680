"""convision: classic convolutional-network vision on PyTorch and torchvision.

The public API (``convision.train``, ``load``, ``evaluate``, ``predict``, the task configs, and
``style_transfer``)
lives in :mod:`convision.tasks`; it is imported on first use, so ``import convision`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from convision.errors import CheckpointError, ConfigError, ConvisionError, DataError

__version__ = "0.1.0"

_API = (
    "train",
    "load",
    "evaluate",
    "predict",
    "SegmentConfig",
    "ClassifyConfig",
    "LocalizeConfig",
    "DetectConfig",
    "style_transfer",
)

__all__ = [
    "__version__",
    "ConvisionError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    *_API,
]


def __getattr__(name: str) -> Any:
    if name in _API:
        from convision import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module 'convision' has no attribute {name!r}")
