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

from convision.data.detection import SyntheticDetection
from convision.tasks.detect import DetectConfig, evaluate, load, predict, train

RECIPES: dict[str, dict] = {
    # model settings and the training budget of each detector (the same scenes and backbone for all)
    "faster_rcnn": {"model": {"model": "faster_rcnn"}, "train": {}},
    "fast_rcnn": {"model": {"model": "fast_rcnn"}, "train": {}},
    "yolov1": {"model": {"model": "yolov1", "image_size": 224}, "train": {"optimizer": "adamw", "lr": 1e-3}},
    "rcnn": {"model": {"model": "rcnn", "warp_size": 96}, "train": {}},
}


def configure(name: str, args: argparse.Namespace) -> DetectConfig:
    cfg = DetectConfig()
    d, m, t = cfg.data, cfg.model, cfg.train
    d.num_train, d.num_val, d.scene_size, d.num_classes, d.workers = args.num_train, args.num_val, args.scene_size, 6, args.workers
    m.backbone, m.weights = "mobilenet_v2", "IMAGENET1K_V1"
    t.epochs, t.batch_size, t.lr, t.device, t.overwrite = args.epochs, args.batch_size, args.lr, args.device, True
    t.out = str(Path(args.out) / name)
    for section, values in RECIPES[name].items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    m.proposal_cache = str(Path(args.out) / "proposals")
    return cfg


def seconds_per_image(checkpoint: str, images: list[np.ndarray], device: str) -> float:
    net = load(checkpoint, device=device)
    predict(net, images[0], device=device)  # warm-up
    times = []
    for im in images:
        t0 = time.perf_counter()
        predict(net, im, device=device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_detect")
    p.add_argument("--models", default="faster_rcnn,fast_rcnn,yolov1,rcnn")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--num-train", type=int, default=400)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--scene-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--timed-images", type=int, default=10, help="validation images timed one by one")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-train", action="store_true", help="reuse the checkpoints already in --out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {list(RECIPES)}")
    val = SyntheticDetection(args.timed_images, image_size=args.scene_size, num_classes=6, split="val")
    images = [val.raw(i)[0] for i in range(len(val))]
    rows = []
    for name in names:
        cfg = configure(name, args)
        t0 = time.time()
        if not args.no_train:
            train(cfg, progress=False)
        train_s = time.time() - t0
        ckpt = str(Path(cfg.train.out) / "best.pt")
        metrics = evaluate(ckpt, split="val", batch_size=args.batch_size, workers=args.workers, device=args.device,
                           progress=False, pr_curves=Path(cfg.train.out) / "pr_val.png")
        spi = seconds_per_image(ckpt, images, args.device)
        row = {"model": name, "mAP": metrics["mAP"], "mAP_07": metrics["mAP_07"], "coco_mAP": metrics["coco"]["mAP"],
               "AP50_coco": metrics["coco"]["AP50"], "train_s": train_s, "s_per_image": spi}
        rows.append(row)
        print(json.dumps(row), flush=True)
    slowest = max(r["s_per_image"] for r in rows)
    print(f"\nbuilt-in scenes ({args.num_train} train / {args.num_val} val, {args.scene_size} px, 5 classes), "
          f"ImageNet MobileNetV2, {args.epochs} epochs, {args.threads} CPU threads, device {args.device}")
    print("| model | VOC mAP@0.5 (area) | mAP@0.5 (11-pt) | COCO mAP@[.5:.95] | train / fit s | s per image | speed-up vs slowest |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['mAP']:.3f} | {r['mAP_07']:.3f} | {r['coco_mAP']:.3f} | {r['train_s']:.0f} | "
              f"{r['s_per_image']:.3f} | {slowest / r['s_per_image']:.1f}x |")
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
