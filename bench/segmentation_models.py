"""Every segmentation model on the built-in scenes with the same budget: mIoU, boundary F,
parameters, multiply-adds, CPU latency, and one picture of all of them on the same images.

Training uses the demo's settings (20 epochs, 400 scenes of 128x128, AdamW 1e-3, poly) for each
model; backbones with ImageNet weights available offline (MobileNetV2) use them, VGG-based
models (SegNet, DeconvNet, dilated) start from random weights because VGG16 weights cannot be
downloaded on the development machine: their rows say so.

    # quality: train each model, evaluate it (mIoU, boundary F), draw all of them (a GPU helps)
    .venv/bin/python bench/segmentation_models.py train --out runs/seg_models [--device cuda]
    # cost: parameters, multiply-adds and CPU latency (weights do not matter: random init)
    .venv/bin/python bench/segmentation_models.py cost [--size 320]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from convision import load
from convision.tasks.segment import (
    demo_config,
    evaluate,
    predict,
    train,
    validation_samples,
)
from convision.viz import colorize, save_grid

# label -> (model, backbone, weights); backbone "" = the architecture's own encoder
MODELS: dict[str, tuple[str, str, str]] = {
    "FCN-32s (MobileNetV2)": ("fcn32s", "mobilenet_v2", "IMAGENET1K_V1"),
    "FCN-16s (MobileNetV2)": ("fcn16s", "mobilenet_v2", "IMAGENET1K_V1"),
    "FCN-8s (MobileNetV2)": ("fcn8s", "mobilenet_v2", "IMAGENET1K_V1"),
    "U-Net (MobileNetV2)": ("unet", "mobilenet_v2", "IMAGENET1K_V1"),
    "SegNet (VGG16-BN, random init)": ("segnet", "", "none"),
    "DeconvNet (VGG16-BN, random init)": ("deconvnet", "", "none"),
    "Dilated + context (VGG16, random init)": ("dilated", "", "none"),
}


def slug(label: str) -> str:
    return (
        label.split(" (")[0]
        .lower()
        .replace("-", "")
        .replace(" + ", "_")
        .replace(" ", "_")
    )


def cmd_train(args: argparse.Namespace) -> None:
    results, models = [], {}
    for label, (model, backbone, weights) in MODELS.items():
        if args.only and slug(label) not in args.only:
            continue
        out = Path(args.out, slug(label))
        cfg = demo_config(str(out), args.epochs)
        cfg.model.model, cfg.model.weights = model, weights
        if backbone:
            cfg.model.backbone = backbone
        cfg.train.device = args.device
        cfg.data.workers = args.workers
        t = time.time()
        run = train(cfg, progress=False)
        seconds = time.time() - t
        net = load(run["best"], device=args.device)
        m = evaluate(net, device=args.device, progress=False, workers=args.workers)
        row = {
            "model": label,
            "miou": m["miou"],
            "boundary_f": m.get("boundary_f"),
            "pixel_accuracy": m["pixel_accuracy"],
            "best_epoch": run["best_epoch"],
            "train_seconds": round(seconds, 1),
            "device": str(next(net.parameters()).device),
        }
        results.append(row)
        models[label] = net.cpu()
        print(json.dumps(row), flush=True)
        if args.delete_checkpoints:
            for name in ("best.pt", "last.pt"):
                (out / name).unlink(missing_ok=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "quality.json").write_text(json.dumps(results, indent=2))
    print(f"{'model':40s} {'mIoU':>6s} {'bound.F':>7s} {'train s':>8s}")
    for r in results:
        bf = "-" if r["boundary_f"] is None else f"{r['boundary_f']:.3f}"
        print(f"{r['model']:40s} {r['miou']:6.3f} {bf:>7s} {r['train_seconds']:8.0f}")
    if models:
        first = next(iter(models.values()))
        grid = []
        for image, mask in validation_samples(args.images, model=first):
            grid.append(
                [image, colorize(mask, first.colors)]
                + [
                    colorize(predict(m, image, device="cpu")[0], first.colors)
                    for m in models.values()
                ]
            )
        titles = ["image", "ground truth"] + [label.split(" (")[0] for label in models]
        save_grid(grid, titles, Path(args.out, "all_models.png"))
        print(f"picture: {Path(args.out, 'all_models.png')}")


@torch.no_grad()
def cpu_latency_ms(model: torch.nn.Module, size: int, repeats: int = 5) -> float:
    x = torch.randn(1, 3, size, size)
    model(x)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        model(x)
        best = min(best, time.perf_counter() - t)
    return best * 1000


def multiply_adds(model: torch.nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 2  # torch counts a multiply-add as two FLOPs


def cmd_cost(args: argparse.Namespace) -> None:
    from convision.models import build_model

    print(
        f"parameters, multiply-adds and CPU latency at {args.size}x{args.size}, batch 1, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, 6 classes"
    )
    print(f"{'model':40s} {'params M':>9s} {'GMACs':>7s} {'CPU ms':>8s}")
    rows = []
    for label, (name, backbone, _) in MODELS.items():
        kwargs = {"num_classes": 6, "weights": None}
        if backbone:
            kwargs["backbone"] = backbone
        model = build_model(name, **kwargs).eval()
        row = {
            "model": label,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gmacs": multiply_adds(model, args.size) / 1e9,
            "latency_ms": cpu_latency_ms(model, args.size),
        }
        rows.append(row)
        print(
            f"{label:40s} {row['params_m']:9.1f} {row['gmacs']:7.1f} {row['latency_ms']:8.0f}",
            flush=True,
        )
        del model
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "cost.json").write_text(json.dumps(rows, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("phase", choices=["train", "cost"])
    ap.add_argument("--out", default="runs/seg_models")
    ap.add_argument("--epochs", type=int, default=None, help="default: the demo's")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--only",
        nargs="*",
        help="train only these: fcn32s fcn16s fcn8s unet segnet deconvnet dilated_context",
    )
    ap.add_argument(
        "--delete-checkpoints",
        action="store_true",
        help="remove each model's checkpoints once evaluated",
    )
    ap.add_argument(
        "--size", type=int, default=320, help="latency / multiply-adds input size"
    )
    ap.add_argument("--images", type=int, default=4)
    args = ap.parse_args()
    cmd_train(args) if args.phase == "train" else cmd_cost(args)


if __name__ == "__main__":
    main()
