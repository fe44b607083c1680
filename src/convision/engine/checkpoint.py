"""Checkpoints: atomic save, ``weights_only`` load, partial loading for staged training.

A convision checkpoint is one ``torch.save`` file holding a dict of plain types and tensors with a
``"format"`` key (see docs/architecture.md), so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from convision.errors import CheckpointError

FORMAT = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: ``path.tmp`` in the same folder, fsync, ``os.replace``.

    A reader (or a crash at any moment) sees either the previous file or the complete new one. A
    failed write (disk full, ...) is a one-line CheckpointError naming the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, (OSError, RuntimeError)):
            kept = (
                f"the previous {path.name} is intact"
                if path.exists()
                else f"no {path.name} was written"
            )
            raise CheckpointError(
                f"{path}: could not write the checkpoint ({_first_line(e)}); {kept}"
            ) from None
        raise
    _fsync_dir(path.parent)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); silently skipped where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a convision checkpoint with ``weights_only=True``; any problem is a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            raise CheckpointError(
                f"{path}: not a convision checkpoint (it holds Python objects that cannot be loaded safely)"
            ) from None
        raise CheckpointError(
            f"{path}: cannot be read (truncated or corrupt file)"
        ) from None
    except Exception:  # noqa: BLE001 - torch raises many kinds for damaged files
        raise CheckpointError(
            f"{path}: cannot be read (truncated or corrupt file)"
        ) from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise CheckpointError(f"{path}: not a convision checkpoint (no 'format' key)")
    if ckpt["format"] != FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {ckpt['format']!r} is not supported (expected {FORMAT})"
        )
    return ckpt


def _strip_module(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DistributedDataParallel ``module.`` prefix if every key has it."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_matching_state(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
) -> tuple[list[str], list[str]]:
    """Copy the tensors of ``state_dict`` whose name and shape match ``model``'s into it.

    Returns ``(loaded, skipped)``: the model's state-dict names that were loaded, and the model's
    names that were not (absent from ``state_dict`` or of another shape there), which keep their
    current values: for FCN-32s -> FCN-16s, the new ``pool4`` score layer and upsampling.
    Entries of ``state_dict`` the model lacks are ignored. ``source`` (e.g. the file name) starts
    the error message when nothing matches.
    """
    state_dict = _strip_module(state_dict)
    own = model.state_dict()
    matched = {
        k: v
        for k, v in state_dict.items()
        if k in own and tuple(own[k].shape) == tuple(v.shape)
    }
    if not matched:
        raise CheckpointError(
            f"{source}: no parameter matches the model by name and shape"
        )
    model.load_state_dict(matched, strict=False)
    loaded = list(matched)
    skipped = [k for k in own if k not in matched]
    return loaded, skipped
