"""torchrun helpers, and 2 CPU processes (gloo) against one process on the same global batches."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

HELPERS = Path(__file__).resolve().parent / "helpers"
sys.path.insert(0, str(HELPERS))

from engine_toy import make_cfg, make_trainer  # noqa: E402

from convision.engine import (  # noqa: E402
    DistInfo,
    all_reduce_sum_,
    broadcast_object,
    init_distributed,
    resolve_device,
)
from convision.engine.distributed import CPUSyncBatchNorm, convert_sync_batchnorm  # noqa: E402
from convision.errors import ConfigError  # noqa: E402


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = (
        torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    )
    assert resolve_device("auto") == expected
    for bad in ("gpu", "cuda:x", "tpu:0", ""):
        with pytest.raises(
            ConfigError, match="device: expected auto | cpu | cuda | cuda:N"
        ):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_init_without_torchrun_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(
        rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), is_main=True
    )
    assert not torch.distributed.is_initialized()
    t = torch.ones(3)
    assert torch.equal(all_reduce_sum_(t), torch.ones(3))  # no-op
    assert broadcast_object({"a": 1}) == {"a": 1}
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE: expected an integer"):
        init_distributed("cpu")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(HELPERS / "ddp_script.py"),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    written = sorted(p.name for p in out.glob("rank*.json"))
    assert proc.returncode == 0, (
        f"rank reports written: {written}\n" + proc.stdout[-3000:] + proc.stderr[-5000:]
    )
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return out, reports


def test_two_processes_match_one_process(ddp_run, tmp_path):
    out, reports = ddp_run
    assert [r["world_size"] for r in reports] == [2, 2] and reports[0][
        "backend"
    ] == "gloo"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = make_trainer(
            make_cfg(tmp_path / "single", epochs=2, sync_bn=True), augment=True
        ).fit()
    finally:
        torch.set_num_threads(n)
    a = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    b = torch.load(out / "ddp" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert not any(k.startswith("module.") for k in b["state_dict"])
    for name, tensor in a["state_dict"].items():
        assert torch.allclose(tensor, b["state_dict"][name], atol=1e-5), name
    first = make_trainer(
        make_cfg(tmp_path / "init", epochs=1)
    ).model.state_dict()  # same seed, untrained
    moved = sum((first[k] - b["state_dict"][k]).abs().sum().item() for k in first)
    assert moved > 0.1  # the comparison is not vacuous: training changed the weights
    # same per-epoch train loss (mean over both processes) and validation numbers
    for x, y in zip(single["history"], reports[0]["history"]):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-5)
        assert x["miou"] == pytest.approx(y["miou"], abs=1e-6)

    # only rank 0 writes; both ranks saw the same numbers (timings aside)
    def numbers(history):
        return [
            {k: v for k, v in r.items() if k not in ("time", "images_per_s")}
            for r in history
        ]

    assert numbers(reports[0]["history"]) == numbers(reports[1]["history"])
    assert sorted(p.name for p in (out / "ddp").iterdir()) == [
        "best.pt",
        "curves.png",
        "last.pt",
        "metrics.jsonl",
        "run.json",
    ]


def test_sharded_validation_is_the_full_set(ddp_run):
    _, reports = ddp_run
    for r in reports:
        sharded, full = r["eval_sharded"], r["eval_full"]
        for key in ("pixel_accuracy", "mean_accuracy", "miou", "fwiou"):
            assert sharded[key] == pytest.approx(full[key], abs=1e-12), key
        assert sharded["per_class_iou"] == pytest.approx(full["per_class_iou"])


def test_confusion_matrix_reduce_gives_full_set_numbers(ddp_run):
    _, reports = ddp_run
    assert all(r["reduce_matches_full"] for r in reports)
    assert all(r["sizes_reduce_matches_full"] for r in reports)
    assert [r["local_total"] for r in reports] == [
        5 * 5 * 6,
        5 * 5 * 6,
    ]  # each rank counted only half


def test_torch_sync_batchnorm_refuses_cpu(ddp_run):
    """Why CPUSyncBatchNorm exists: torch 2.14's SyncBatchNorm only runs on GPU-like devices."""
    _, reports = ddp_run
    assert all(
        r["syncbn_cpu"].startswith(
            "ValueError: SyncBatchNorm expected input tensor to be on GPU"
        )
        for r in reports
    )


def test_two_processes_with_sync_batchnorm_match_one_process(ddp_run, tmp_path):
    out, _ = ddp_run
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        make_trainer(
            make_cfg(tmp_path / "single", epochs=2, sync_bn=True), augment=True, bn=True
        ).fit()
    finally:
        torch.set_num_threads(n)
    a = torch.load(tmp_path / "single" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(out / "ddp_bn" / "last.pt", weights_only=True)["state_dict"]
    assert "bn.running_mean" in b and int(b["bn.num_batches_tracked"]) == 6
    for name, tensor in a.items():
        assert torch.allclose(tensor.double(), b[name].double(), atol=1e-5), name


def test_cpu_sync_batchnorm_equals_batchnorm(tmp_path):
    """The synchronised path (run here in a one-process gloo group) computes batch norm exactly:
    outputs, gradients and running statistics."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4, momentum=0.3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    sync = convert_sync_batchnorm(
        nn.Sequential(copy.deepcopy(bn)), torch.device("cpu")
    )[0]
    assert (
        isinstance(sync, CPUSyncBatchNorm)
        and sync.state_dict().keys() == bn.state_dict().keys()
    )
    x = (3 + 2 * torch.randn(6, 4, 5, 5, dtype=torch.float64)).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        for _ in range(2):
            y, y2 = bn(x), sync(x2)
            assert torch.allclose(y, y2, atol=1e-10)
            (y * torch.arange(y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
            (y2 * torch.arange(y2.numel(), dtype=y.dtype).view_as(y2)).sum().backward()
        assert torch.allclose(x.grad, x2.grad, atol=1e-8)
        assert torch.allclose(bn.weight.grad, sync.weight.grad) and torch.allclose(
            bn.bias.grad, sync.bias.grad
        )
        assert torch.allclose(bn.running_mean, sync.running_mean) and torch.allclose(
            bn.running_var, sync.running_var
        )
        assert int(sync.num_batches_tracked) == 2
    finally:
        dist.destroy_process_group()
    bn.eval(), sync.eval()
    assert torch.allclose(bn(x), sync(x))


def test_nan_on_one_rank_stops_every_rank(ddp_run):
    _, reports = ddp_run
    for r in reports:
        assert "loss became NaN or infinite at epoch 2, step 1" in r["nan"]
        assert "(epoch 1) is the last good checkpoint" in r["nan"]
