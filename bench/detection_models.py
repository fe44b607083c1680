"""R-CNN, Fast R-CNN, Faster R-CNN and YOLOv1 on the built-in scenes: accuracy and seconds per image.

Each detector is trained (R-CNN: fitted) on the same scenes with the same ImageNet MobileNetV2,
then evaluated on the validation scenes (VOC mAP@0.5 area / 11-point, COCO mAP@[.5:.95]) and timed
image by image through ``convision.tasks.detect.predict`` — the whole pipeline a user runs,
selective search included for R-CNN and Fast R-CNN — in one run, so the ratios compare like with
like on this machine.

    .venv/bin/python bench/detection_models.py --out runs/bench_detect [--models faster_rcnn,yolov1] [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from convision import load
from convision.data.detection import SyntheticDetection
from convision.tasks.detect import DetectConfig, evaluate, predict, train

RECIPES: dict[str, dict] = {
    # each detector's settings and training budget on the same scenes and backbone; the CPU budget
    # is why the RoI head is narrower (512) and samples 64 RoIs per image instead of the paper's 1024 / 128
    "faster_rcnn": {
        "data": {"min_size": 256, "max_size": 512},
        "model": {
            "model": "faster_rcnn",
            "pooling": "roi_align",
            "roi_batch_size": 64,
            "head_dim": 512,
        },
        "train": {"epochs": 16, "batch_size": 4, "optimizer": "sgd", "lr": 0.01},
    },
    "fast_rcnn": {
        "data": {"min_size": 256, "max_size": 512},
        "model": {
            "model": "fast_rcnn",
            "pooling": "roi_align",
            "roi_batch_size": 64,
            "head_dim": 512,
        },
        "train": {"epochs": 8, "batch_size": 4, "optimizer": "sgd", "lr": 0.01},
    },
    "yolov1": {
        "model": {"model": "yolov1", "image_size": 224},
        "train": {
            "epochs": 20,
            "batch_size": 8,
            "optimizer": "adamw",
            "lr": 2e-4,
            "weight_decay": 5e-4,
        },
    },
    # R-CNN extracts CNN features for every proposal of every image: fewer images, 64-px warps
    "rcnn": {
        "data": {"num_train": 100},
        "model": {"model": "rcnn", "warp_size": 64, "max_proposals": 300},
        "train": {},
    },
}


def configure(name: str, args: argparse.Namespace) -> DetectConfig:
    cfg = DetectConfig()
    d, m, t = cfg.data, cfg.model, cfg.train
    d.num_train, d.num_val, d.scene_size, d.num_classes, d.workers = (
        args.num_train,
        args.num_val,
        args.scene_size,
        6,
        args.workers,
    )
    m.backbone, m.weights = "mobilenet_v2", "IMAGENET1K_V1"
    t.device, t.overwrite, t.out = args.device, True, str(Path(args.out) / name)
    for section, values in RECIPES[name].items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    if args.epochs:
        t.epochs = args.epochs
    m.proposal_cache = str(Path(args.out) / "proposals")
    return cfg


def seconds_per_image(
    checkpoint: str, images: list[np.ndarray], device: str, size: int | None = None
) -> float:
    """Median seconds of ``predict`` per image (proposals included). With ``size``, every model runs at
    that input size: the shorter side for the R-CNN family, YOLO's square input; R-CNN warps each
    proposal to 224 px (the CNN's ImageNet input, as the paper's 227)."""
    net = load(checkpoint, device=device)
    if size:
        net.min_size = size
        if hasattr(net, "image_size"):
            net.image_size = size
        if hasattr(net, "warp_size"):
            net.warp_size, net.context_padding = 224, 16
    predict(net, images[0], device=device)  # warm-up
    times = []
    for im in images:
        t0 = time.perf_counter()
        predict(net, im, device=device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="runs/bench_detect")
    p.add_argument("--models", default="faster_rcnn,fast_rcnn,yolov1,rcnn")
    p.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="override every recipe's epochs (0: the recipe's)",
    )
    p.add_argument("--num-train", type=int, default=400)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--scene-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4, help="evaluation batch")
    p.add_argument(
        "--timed-images", type=int, default=5, help="validation images timed one by one"
    )
    p.add_argument(
        "--timing-size",
        type=int,
        default=224,
        help="the common input size of the speed comparison",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--no-train", action="store_true", help="reuse the checkpoints already in --out"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {list(RECIPES)}")
    val = SyntheticDetection(
        args.timed_images, image_size=args.scene_size, num_classes=6, split="val"
    )
    images = [val.raw(i)[0] for i in range(len(val))]
    rows = []
    for name in names:
        cfg = configure(name, args)
        t0 = time.time()
        if not args.no_train:
            train(cfg, progress=False)
        train_s = time.time() - t0
        ckpt = str(
            Path(cfg.train.out) / "last.pt"
        )  # the last epoch, not the one picked on this validation set
        metrics = evaluate(
            ckpt,
            split="val",
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            progress=False,
            pr_curves=Path(cfg.train.out) / "pr_val.png",
        )
        row = {
            "model": name,
            "mAP": metrics["mAP"],
            "mAP_07": metrics["mAP_07"],
            "coco_mAP": metrics["coco"]["mAP"],
            "train_s": None if args.no_train else train_s,
            "epochs": "fit" if name == "rcnn" else cfg.train.epochs,
            "train_images": cfg.data.num_train,
            "s_per_image_own": seconds_per_image(ckpt, images, args.device),
            "s_per_image_same": seconds_per_image(
                ckpt, images, args.device, args.timing_size
            ),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    slowest = max(r["s_per_image_same"] for r in rows)
    print(
        f"\nbuilt-in scenes ({args.num_val} validation images, {args.scene_size} px, 5 classes), ImageNet MobileNetV2, "
        f"{torch.get_num_threads()} CPU thread(s), device {args.device}; recipes in bench/detection_models.py"
    )
    print(
        f"| model | VOC mAP@0.5 (area) | mAP@0.5 (11-pt) | COCO mAP@[.5:.95] | training | s/image (own settings) "
        f"| s/image at {args.timing_size} px | speed-up vs slowest |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['mAP']:.3f} | {r['mAP_07']:.3f} | {r['coco_mAP']:.3f} | {r['epochs']} x {r['train_images']} | "
            f"{r['s_per_image_own']:.3f} | {r['s_per_image_same']:.3f} | {slowest / r['s_per_image_same']:.1f}x |"
        )
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
