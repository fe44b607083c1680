"""Checkpoints: atomic save, weights_only load with one-line errors, partial loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convision.engine import checkpoint as ckpt_mod
from convision.engine import load_checkpoint, load_matching_state, save_checkpoint
from convision.errors import CheckpointError


def _payload(value: float) -> dict:
    return {
        "format": 1,
        "epoch": 3,
        "state_dict": {"w": torch.full((2, 2), value)},
        "classes": ["a", "b"],
    }


def test_round_trip_and_no_temp_file_left(tmp_path):
    path = tmp_path / "sub" / "last.pt"
    save_checkpoint(path, _payload(1.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3 and torch.equal(ckpt["state_dict"]["w"], torch.ones(2, 2))
    # loads with plain torch.load(weights_only=True) too
    assert torch.load(path, weights_only=True)["classes"] == ["a", "b"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload(1.0))
    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the temp file ...
        raise OSError("disk full")  # ... then the write dies

    monkeypatch.setattr(ckpt_mod.torch, "save", crash_half_way)
    with pytest.raises(
        CheckpointError,
        match=r"last.pt: could not write the checkpoint \(disk full\); the previous last.pt is intact",
    ):
        save_checkpoint(path, _payload(2.0))
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last.pt"
    ]  # no temp file left
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2, 2))


def test_interrupt_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload(1.0))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _payload(2.0))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2, 2))


def _one_line(err: pytest.ExceptionInfo, path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "not found" in _one_line(err, path)


def test_truncated_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload(1.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "truncated or corrupt" in _one_line(err, path)


def test_garbage_file(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    _one_line(err, path)


def test_not_a_convision_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(nn.Linear(2, 2).state_dict(), path)  # e.g. a torchvision weights file
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "not a convision checkpoint" in _one_line(err, path)
    # a pickled module needs unsafe unpickling: refused, not executed
    path2 = tmp_path / "model.pt"
    torch.save(nn.Linear(2, 2), path2)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path2)
    assert "not a convision checkpoint" in _one_line(err, path2)


class Small(nn.Module):
    def __init__(self, head: int) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3)
        self.head = nn.Conv2d(4, head, 1)


class Bigger(Small):
    def __init__(self, head: int) -> None:
        super().__init__(head)
        self.extra = nn.Conv2d(4, head, 1)


def test_load_matching_state_loads_name_and_shape_matches():
    torch.manual_seed(0)
    src = Small(head=5)
    dst = Bigger(head=3)
    extra_before = dst.extra.weight.clone()
    head_before = dst.head.weight.clone()
    loaded, skipped = load_matching_state(dst, src.state_dict())
    assert sorted(loaded) == ["body.bias", "body.weight"]
    # the model's entries left at their initial values: head (5 != 3 outputs) and the new layer
    assert sorted(skipped) == ["extra.bias", "extra.weight", "head.bias", "head.weight"]
    assert torch.equal(dst.body.weight, src.body.weight)
    assert torch.equal(dst.head.weight, head_before) and torch.equal(
        dst.extra.weight, extra_before
    )


def test_load_matching_state_accepts_ddp_prefix_and_rejects_no_match():
    src = Small(head=3)
    dst = Bigger(head=3)
    loaded, skipped = load_matching_state(
        dst, {f"module.{k}": v for k, v in src.state_dict().items()}
    )
    assert len(loaded) == 4 and skipped == ["extra.weight", "extra.bias"]
    assert torch.equal(dst.head.weight, src.head.weight)
    with pytest.raises(CheckpointError, match="^runs/a/last.pt: no parameter matches"):
        load_matching_state(
            dst, {"something.else": torch.zeros(1)}, source="runs/a/last.pt"
        )
