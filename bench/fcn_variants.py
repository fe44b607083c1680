"""FCN-32s vs FCN-16s vs FCN-8s on the built-in scenes with the same backbone and budget
(the paper's Table 2 point: more skip fusion gives finer boundaries and higher mIoU).

Each variant is trained with the demo's settings (MobileNetV2, ImageNet) from the same seed;
the script prints the metrics side by side and writes a picture of the three on the same
validation images.

    .venv/bin/python bench/fcn_variants.py [--epochs 12] [--out runs/fcn_variants]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from convision import load
from convision.tasks.segment import (
    demo_config,
    evaluate,
    predict,
    train,
    validation_samples,
)
from convision.viz import colorize, save_grid


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=None, help="default: the demo's")
    ap.add_argument("--out", default="runs/fcn_variants")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--images", type=int, default=5)
    args = ap.parse_args()

    results, models = {}, {}
    for name in ("fcn32s", "fcn16s", "fcn8s"):
        cfg = demo_config(str(Path(args.out, name)), args.epochs)
        cfg.model.model = name
        cfg.model.backbone = args.backbone
        t = time.time()
        run = train(cfg, progress=False)
        seconds = time.time() - t
        models[name] = load(run["best"])
        m = evaluate(models[name], progress=False)
        results[name] = {
            k: m[k] for k in ("pixel_accuracy", "mean_accuracy", "miou", "fwiou")
        }
        results[name]["train_seconds"] = round(seconds, 1)
        print(f"{name}: {json.dumps(results[name])}", flush=True)

    print(f"\nbackbone {args.backbone}, epochs {cfg.train.epochs}, same seed and data")
    print(
        f"{'model':8s} {'pixel acc':>9s} {'mean acc':>9s} {'mIoU':>7s} {'fwIoU':>7s} {'train s':>8s}"
    )
    for name, r in results.items():
        print(
            f"{name:8s} {r['pixel_accuracy']:9.4f} {r['mean_accuracy']:9.4f} {r['miou']:7.4f} {r['fwiou']:7.4f} {r['train_seconds']:8.0f}"
        )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "results.json").write_text(json.dumps(results, indent=2))

    any_model = models["fcn8s"]
    rows = []
    for image, mask in validation_samples(args.images, model=any_model):
        row = [image, colorize(mask, any_model.colors)]
        row += [
            colorize(predict(models[n], image)[0], any_model.colors) for n in models
        ]
        rows.append(row)
    picture = Path(args.out, "fcn_32s_16s_8s.png")
    save_grid(rows, ["image", "ground truth", "FCN-32s", "FCN-16s", "FCN-8s"], picture)
    print(f"picture: {picture}")


if __name__ == "__main__":
    main()
