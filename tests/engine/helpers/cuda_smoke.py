"""CUDA checks of the engine (run by hand on a machine with a GPU; CI has none).

usage: PYTHONPATH=src python tests/engine/helpers/cuda_smoke.py OUT
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_toy import Interrupt, ToySegmentation, ToyTask, make_cfg, make_trainer  # noqa: E402

from convision.engine import evaluate, load_checkpoint  # noqa: E402
from convision.engine.distributed import convert_sync_batchnorm  # noqa: E402
from convision.losses import segmentation_cross_entropy  # noqa: E402
from convision.metrics import ConfusionMatrix  # noqa: E402


def main() -> None:
    assert torch.cuda.is_available()
    out = Path(sys.argv[1])
    dev = torch.device("cuda", 0)

    # 1. training on CUDA with AMP, grad clipping, 2 workers (pinned memory)
    cfg = make_cfg(out / "amp", epochs=4, amp=True, grad_clip=1.0, device="cuda")
    trainer = make_trainer(cfg, augment=True, bn=True, workers=2)
    result = trainer.fit()
    h = result["history"]
    ckpt = torch.load(out / "amp" / "last.pt", weights_only=True, map_location="cpu")
    assert ckpt["scaler"] is not None and "scale" in ckpt["scaler"], ckpt["scaler"]
    assert h[-1]["train_loss"] < h[0]["train_loss"], h
    assert next(trainer.model.parameters()).device.type == "cuda"
    print(
        "OK amp training: loss",
        [round(r["train_loss"], 4) for r in h],
        "scale",
        ckpt["scaler"]["scale"],
    )

    # 2. crash + resume on CUDA == uninterrupted
    kw = dict(augment=True, dropout=0.2, bn=True)
    make_trainer(make_cfg(out / "full", epochs=4, amp=True, device="cuda"), **kw).fit()
    try:
        make_trainer(
            make_cfg(out / "crash", epochs=4, amp=True, device="cuda"),
            ToyTask(stop_at=7),
            **kw,
        ).fit()
    except Interrupt:
        pass
    assert load_checkpoint(out / "crash" / "last.pt")["epoch"] == 2
    make_trainer(
        make_cfg(out / "crash", epochs=4, amp=True, device="cuda", resume=True), **kw
    ).fit()
    a = load_checkpoint(out / "full" / "last.pt")["state_dict"]
    b = load_checkpoint(out / "crash" / "last.pt")["state_dict"]
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert diff < 1e-5, diff
    print("OK resume on CUDA equals uninterrupted run, max |diff| =", diff)

    # 3. evaluate on CUDA == on CPU
    val = ToySegmentation(7, seed=2)
    m_gpu = evaluate(
        ToyTask(),
        trainer.model,
        val,
        batch_size=3,
        workers=0,
        device="cuda",
        progress=False,
    )
    m_cpu = evaluate(
        ToyTask(),
        trainer.model,
        val,
        batch_size=3,
        workers=0,
        device="cpu",
        progress=False,
    )
    assert abs(m_gpu["miou"] - m_cpu["miou"]) < 1e-3, (m_gpu, m_cpu)
    print("OK evaluate cuda/cpu miou", m_gpu["miou"], m_cpu["miou"])

    # 4. ConfusionMatrix with CUDA inputs and on a CUDA matrix
    g = torch.Generator().manual_seed(0)
    pred, target = (
        torch.randint(0, 4, (3, 9, 9), generator=g),
        torch.randint(0, 4, (3, 9, 9), generator=g),
    )
    target[:, 0] = 255
    ref = ConfusionMatrix(4)
    ref.update(pred, target)
    for device in ("cpu", "cuda"):
        cm = ConfusionMatrix(4, device=device)
        cm.update(pred.to(dev), target.to(dev))
        assert torch.equal(cm.mat.cpu(), ref.mat)
    print("OK confusion matrix on cuda")

    # 5. loss under autocast with class weights
    logits = torch.randn(2, 4, 16, 16, device=dev, requires_grad=True)
    y = torch.randint(0, 4, (2, 16, 16), device=dev)
    y[0, :3] = 255
    with torch.autocast("cuda", dtype=torch.float16):
        lo = segmentation_cross_entropy(
            nn.functional.conv2d(logits, torch.eye(4, device=dev)[:, :, None, None]),
            y,
            [1.0, 2.0, 0.5, 1.0],
        )
    ref_loss = nn.functional.cross_entropy(
        logits,
        y,
        weight=torch.tensor([1.0, 2.0, 0.5, 1.0], device=dev),
        ignore_index=255,
    )
    assert abs(lo.item() - ref_loss.item()) < 1e-2, (lo.item(), ref_loss.item())
    lo.backward()
    assert torch.isfinite(logits.grad).all()
    print("OK loss under autocast", lo.item(), ref_loss.item())

    # 6. sync_bn on CUDA converts to torch's SyncBatchNorm
    net = convert_sync_batchnorm(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).to(dev), dev
    )
    assert isinstance(net[1], nn.SyncBatchNorm)
    print("OK convert_sync_batchnorm on cuda ->", type(net[1]).__name__)

    # 7. NCCL (one process): reduce_ of a CPU matrix goes through the GPU
    store = tempfile.mktemp()
    dist.init_process_group(
        "nccl", init_method=f"file://{store}", rank=0, world_size=1, device_id=dev
    )
    try:
        cm = ConfusionMatrix(4)
        cm.update(pred, target)
        cm.reduce_()
        assert torch.equal(cm.mat, ref.mat) and cm.mat.device.type == "cpu"
    finally:
        dist.destroy_process_group()
    print("OK nccl reduce_ (world 1)")
    print("ALL OK")


if __name__ == "__main__":
    main()
