"""convision: classic convolutional-network vision on PyTorch and torchvision."""
from __future__ import annotations

__version__ = "0.1.0"

from convision.errors import CheckpointError, ConfigError, ConvisionError, DataError  # noqa: E402

__all__ = ["__version__", "ConvisionError", "DataError", "ConfigError", "CheckpointError", "load"]


def load(path, device="cpu"):
    """Rebuild a ready-to-use model from a convision checkpoint (see :func:`convision.api.load`)."""
    from convision.api import load as _load

    return _load(path, device=device)
