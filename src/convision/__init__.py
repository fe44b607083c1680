"""convision: classic convolutional-network vision on PyTorch and torchvision."""
from __future__ import annotations

__version__ = "0.1.0"

from convision.errors import CheckpointError, ConfigError, ConvisionError, DataError  # noqa: E402

__all__ = ["__version__", "ConvisionError", "DataError", "ConfigError", "CheckpointError", "load"]


def load(path, device="cpu"):
    """Rebuild a ready-to-use model from a convision checkpoint (see :func:`convision.api.load`)."""
    from convision.api import load as _load

    return _load(path, device=device)

from convision.config import SegmentConfig  # noqa: E402


def train(cfg=None, **kwargs):
    """Train a segmentation model (see :func:`convision.api.train`)."""
    from convision.api import train as _train

    return _train(cfg, **kwargs)


def evaluate(model, data=None, **kwargs):
    """Evaluate a model on a whole split (see :func:`convision.api.evaluate`)."""
    from convision.api import evaluate as _evaluate

    return _evaluate(model, data, **kwargs)


def predict(model, images, **kwargs):
    """Class-index masks for images (see :func:`convision.api.predict`)."""
    from convision.api import predict as _predict

    return _predict(model, images, **kwargs)


__all__ += ["SegmentConfig", "train", "evaluate", "predict"]
