"""Run under ``torchrun --nproc_per_node 2`` (gloo, CPU). usage: ddp_script.py OUT

1. trains the toy problem (global batch 4, random augmentation) into OUT/ddp, and with batch
   norm (sync_bn, CPU) into OUT/ddp_bn;
2. checks that the validation metric of the sharded, all-reduced evaluation equals a plain
   single-process pass over the whole validation set;
3. checks ConfusionMatrix.reduce_() and ObjectSizeMetric.reduce_() on random data split over the
   processes;
4. checks that torch's SyncBatchNorm refuses CPU tensors in this torch version;
5. trains with a loss that becomes NaN on rank 1 only: every rank must raise TrainingDiverged.
Each rank writes OUT/rank<r>.json with what it saw.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_toy import NUM_CLASSES, ToySegmentation, ToyTask, make_cfg, make_trainer  # noqa: E402

from convision.engine import cleanup, evaluate, init_distributed  # noqa: E402
from convision.errors import TrainingDiverged  # noqa: E402
from convision.metrics import ConfusionMatrix  # noqa: E402
from convision.metrics.object_size import ObjectSizeMetric  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    info = init_distributed("cpu")
    report: dict = {
        "rank": info.rank,
        "world_size": info.world_size,
        "backend": torch.distributed.get_backend(),
    }
    messages: list[str] = []

    # 1. training
    cfg = make_cfg(out / "ddp", epochs=2, sync_bn=True)
    trainer = make_trainer(cfg, augment=True, dist=info, log=messages.append)
    result = trainer.fit()
    report["history"] = result["history"]
    report["messages"] = messages

    # 1b. the same with batch norm: synchronised over both processes on CPU
    make_trainer(
        make_cfg(out / "ddp_bn", epochs=2, sync_bn=True),
        augment=True,
        bn=True,
        dist=info,
    ).fit()

    # 2. sharded + reduced evaluation == one pass over the whole set (odd size: 7 samples)
    val = ToySegmentation(7, seed=2)
    sharded = evaluate(
        ToyTask(),
        trainer.model,
        val,
        batch_size=2,
        workers=0,
        device="cpu",
        progress=False,
    )
    full = ConfusionMatrix(NUM_CLASSES)
    with torch.no_grad():
        for i in range(len(val)):
            x, y = val[i]
            full.update(trainer.model(x[None]).argmax(1), y[None])
    report["eval_sharded"] = sharded
    report["eval_full"] = full.compute()

    # 3. reduce_ on random data: each rank counts its half
    g = torch.Generator().manual_seed(5)
    pred = torch.randint(0, 4, (10, 6, 6), generator=g)
    target = torch.randint(0, 4, (10, 6, 6), generator=g)
    target[:, 0] = 255
    mine = ConfusionMatrix(4)
    mine.update(
        pred[info.rank :: info.world_size], target[info.rank :: info.world_size]
    )
    report["local_total"] = int(mine.mat.sum())
    mine.reduce_()
    everything = ConfusionMatrix(4)
    everything.update(pred, target)
    report["reduce_matches_full"] = bool(torch.equal(mine.mat, everything.mat))
    sizes = ObjectSizeMetric(4, thresholds=(3, 6), exclude=[0])
    sizes.update(
        pred[info.rank :: info.world_size], target[info.rank :: info.world_size]
    )
    sizes.reduce_()
    all_sizes = ObjectSizeMetric(4, thresholds=(3, 6), exclude=[0])
    all_sizes.update(pred, target)
    report["sizes_reduce_matches_full"] = bool(
        torch.equal(sizes.counts, all_sizes.counts) and sizes.counts.sum() > 0
    )

    # 4. SyncBatchNorm on CPU
    bn = nn.SyncBatchNorm(3)
    try:
        bn(torch.rand(2, 3, 4, 4))
        report["syncbn_cpu"] = "works"
    except ValueError as e:
        report["syncbn_cpu"] = f"ValueError: {e}"

    # 5. NaN on rank 1 only, at epoch 2 step 1 (3 steps/epoch with 2 samples per process)
    try:
        make_trainer(
            make_cfg(out / "nan", epochs=3), ToyTask(nan_at=4, nan_rank=1), dist=info
        ).fit()
        report["nan"] = "no error"
    except TrainingDiverged as e:
        report["nan"] = str(e)

    (out / f"rank{info.rank}.json").write_text(json.dumps(report))
    cleanup()


if __name__ == "__main__":
    main()
