"""Single-object localization on the built-in one-shape scenes with a small CPU budget.

Trains the localizer (ImageNet MobileNetV2, finetune, class head + box head, CE + MSE box loss)
on ``--num-train`` scenes and reports, on ``--num-val`` held-out scenes: accuracy (class right
AND IoU > 0.5, the seeds' rule), mean IoU, class accuracy and box accuracy (IoU > 0.5). As a
reference it also scores the trivial "always predict the mean training box" baseline.

    .venv/bin/python bench/localization.py --out runs/bench_localize [--epochs 8 --image-size 128 --threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from convision import load
from convision.data.localization import SyntheticLocalization
from convision.metrics.localization import LocalizationMetric, format_table
from convision.tasks.localize import LocalizeConfig, evaluate, train


def mean_box_baseline(cfg: LocalizeConfig) -> dict:
    d = cfg.data
    tr = SyntheticLocalization(
        "train", d.num_train, d.scene_size, d.num_classes, d.data_seed
    )
    va = SyntheticLocalization(
        "val", d.num_val, d.scene_size, d.num_classes, d.data_seed
    )
    boxes = torch.tensor([tr.annotation(i)[0] for i in range(len(tr))])
    labels = torch.tensor(tr.targets)
    mean_box, major = boxes.mean(0), int(labels.mode().values)
    vb = torch.tensor([va.annotation(i)[0] for i in range(len(va))])
    m = LocalizationMetric(len(tr.classes))
    m.update(
        torch.full((len(va),), major),
        mean_box.expand(len(va), 4),
        torch.tensor(va.targets),
        vb,
    )
    return m.compute()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="runs/bench_localize")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--num-train", type=int, default=400)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--box-weight", type=float, default=5.0)
    p.add_argument(
        "--head-lr-mult",
        type=float,
        default=1.0,
        help="heads' lr / backbone lr (10, AdamW's auto value, blew the box loss up at the start)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    cfg = LocalizeConfig()
    cfg.data.num_train, cfg.data.num_val, cfg.data.image_size, cfg.data.workers = (
        args.num_train,
        args.num_val,
        args.image_size,
        0,
    )
    cfg.model.backbone, cfg.model.weights, cfg.model.strategy = (
        "mobilenet_v2",
        "IMAGENET1K_V1",
        "finetune",
    )
    t = cfg.train
    t.epochs, t.batch_size, t.lr, t.optimizer, t.box_weight = (
        args.epochs,
        args.batch_size,
        args.lr,
        "adamw",
        args.box_weight,
    )
    t.device, t.out, t.overwrite, t.head_lr_mult = (
        args.device,
        args.out,
        True,
        args.head_lr_mult,
    )

    start = time.time()
    run = train(cfg, progress=False)
    seconds = time.time() - start
    metrics = evaluate(load(run["best"]), workers=0, progress=False, device=args.device)
    base = mean_box_baseline(cfg)
    print(
        f"\nlocalizer (mobilenet_v2 ImageNet, finetune, {args.epochs} epochs, {args.num_train} scenes "
        f"{cfg.data.scene_size}px -> {args.image_size}px, {args.threads} CPU threads): {seconds:.0f} s training"
    )
    print(format_table(metrics))
    print("\nbaseline: majority class + mean training box")
    print(format_table(base))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "train_seconds": seconds,
                "metrics": metrics,
                "baseline": base,
                "best_epoch": run.get("best_epoch"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
