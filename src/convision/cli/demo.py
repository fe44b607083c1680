"""``convision demo`` (``make demo``): FCN-8s on ImageNet MobileNetV2, trained on the built-in
synthetic scenes, evaluated on their validation split, with pictures of its predictions."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from convision.cli import common
from convision.metrics.segmentation import format_table
from convision.tasks import segment


def add_parser(tasks: argparse._SubParsersAction) -> None:
    demo = tasks.add_parser(
        "demo",
        help="train FCN-8s on the built-in scenes, evaluate, write pictures",
        formatter_class=common.DEFAULTS,
    )
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument(
        "--epochs",
        type=common.count(1),
        default=None,
        help="override the demo's epoch count",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    out, progress = args.out, not args.no_progress
    cfg = segment.demo_config(out, args.epochs)
    print(
        f"convision demo: FCN-8s (MobileNetV2, ImageNet) on {cfg.data.num_train} built-in scenes, "
        f"{cfg.train.epochs} epochs -> {out}/"
    )
    start = time.time()
    result = segment.train(cfg, progress=progress)
    train_s = time.time() - start
    model = segment.load(result["best"])
    metrics = segment.evaluate(model, progress=progress)
    print(format_table(metrics, metrics["classes"]))
    metrics["train_seconds"] = round(train_s, 1)
    Path(out, "eval_val.json").write_text(json.dumps(metrics, indent=2))
    picture = Path(out, "predictions.png")
    segment.save_prediction_grid(model, picture, count=6, seed=cfg.data.data_seed)
    print(
        f"trained in {train_s / 60:.1f} min; mIoU {metrics['miou']:.3f}; pictures: {picture}, {Path(out, 'curves.png')}"
    )
    return 0
