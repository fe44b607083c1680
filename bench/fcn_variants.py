"""FCN-32s vs FCN-16s vs FCN-8s (and U-Net) on the built-in scenes with the same backbone and
budget (the paper's Table 2 point: more skip fusion gives finer boundaries and higher mIoU), and
what each gets right by object size (DeconvNet's point: a coarse FCN misses small objects and
fragments large ones).

Each variant is trained with the demo's settings (MobileNetV2, ImageNet) from the same seed (U-Net
with its own recipe, :data:`convision.models.segmentation.RECIPES`); the script prints the
metrics side by side, the recall / IoU / pieces by object size (connected components bucketed by
area, :mod:`convision.metrics.object_size`; COCO's 32^2 / 96^2 px by default), with ``--crf``
also for FCN-32s and FCN-8s refined by a dense CRF, the cost of the by-size metric, and writes
two pictures: the variants on the same validation images, and the by-size bars.

    .venv/bin/python bench/fcn_variants.py [--epochs 20] [--out runs/fcn_variants] [--crf]
    .venv/bin/python bench/fcn_variants.py --reuse --crf   # evaluate the checkpoints already in --out
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from convision import load
from convision.config import apply
from convision.metrics.object_size import (
    COCO_THRESHOLDS,
    ObjectSizeMetric,
    parse_thresholds,
)
from convision.metrics.segmentation import ConfusionMatrix
from convision.models.segmentation import recipe
from convision.tasks.segment import (
    demo_config,
    evaluate,
    predict,
    train,
    validation_samples,
)
from convision.viz import colorize, save_grid

LABELS = {"fcn32s": "FCN-32s", "fcn16s": "FCN-16s", "fcn8s": "FCN-8s", "unet": "U-Net"}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=None, help="default: the demo's")
    ap.add_argument("--out", default="runs/fcn_variants")
    ap.add_argument("--backbone", default="mobilenet_v2")
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--models", default="fcn32s,fcn16s,fcn8s,unet")
    ap.add_argument(
        "--reuse", action="store_true", help="load OUT/MODEL/best.pt where it exists"
    )
    ap.add_argument(
        "--crf", action="store_true", help="also FCN-32s / FCN-8s + dense CRF"
    )
    # COCO's 32^2 / 96^2 are for ~640x480 photographs; on the 128x128 scenes 96^2 is 56 % of the
    # image and nothing is "large". 256 / 4096 px split them like the generator's size bands:
    # small = the tiny shapes and slivers left by occlusion, large = a quarter of the image or more
    ap.add_argument(
        "--size-thresholds",
        default="256,4096",
        help=f"object-size buckets in px (COCO: {','.join(map(str, COCO_THRESHOLDS))})",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    thresholds = parse_thresholds(args.size_thresholds)

    results, models, by_size = {}, {}, {}
    for name in args.models.split(","):
        cfg = demo_config(str(Path(args.out, name)), args.epochs)
        cfg.model.model = name
        cfg.model.backbone = args.backbone
        if name == "unet":
            apply(cfg, recipe("unet"), where="recipe")
        best = Path(cfg.train.out, "best.pt")
        t = time.time()
        if not (args.reuse and best.is_file()):
            best = train(cfg, progress=False)["best"]
        seconds = time.time() - t
        models[name] = load(best)
        runs = [(name, None)]
        if args.crf and name in ("fcn32s", "fcn8s"):
            runs.append((f"{name}+crf", True))
        for key, crf in runs:
            m = evaluate(
                models[name],
                progress=False,
                workers=0,
                crf=crf,
                size_thresholds=thresholds,
            )
            results[key] = {
                k: m[k] for k in ("pixel_accuracy", "mean_accuracy", "miou", "fwiou")
            }
            results[key]["train_seconds"] = round(seconds, 1)
            by_size[key] = m["by_size"]
            print(f"{key}: {json.dumps(results[key])}", flush=True)

    print(f"\nbackbone {args.backbone}, epochs {cfg.train.epochs}, same seed and data")
    print(
        f"{'model':10s} {'pixel acc':>9s} {'mean acc':>9s} {'mIoU':>7s} {'fwIoU':>7s} {'train s':>8s}"
    )
    for name, r in results.items():
        print(
            f"{name:10s} {r['pixel_accuracy']:9.4f} {r['mean_accuracy']:9.4f} {r['miou']:7.4f} {r['fwiou']:7.4f} {r['train_seconds']:8.0f}"
        )
    buckets = list(next(iter(by_size.values()))["buckets"])
    print(
        f"\nby object size (thresholds {list(thresholds)} px; recall: >= 50 % of an object's "
        "pixels right; pieces: predicted components per found object)"
    )
    print(f"{'model':10s} " + " ".join(f"{b + ' rec/IoU/pcs':>24s}" for b in buckets))
    for name, s in by_size.items():
        cells = []
        for b in buckets:
            v = s["buckets"][b]
            cells.append(
                f"{_fmt(v['recall'])}/{_fmt(v['iou'])}/{_fmt(v['pieces'], 2)}".rjust(24)
            )
        print(f"{name:10s} " + " ".join(cells))
    objects = {
        b: v["objects"] for b, v in next(iter(by_size.values()))["buckets"].items()
    }
    print(f"objects per bucket: {objects}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for key in results:
        results[key]["by_size"] = by_size[key]
    Path(args.out, "results.json").write_text(json.dumps(results, indent=2))

    any_model = models.get("fcn8s") or next(iter(models.values()))
    samples = validation_samples(
        max(args.images, 100), model=any_model
    )  # the validation split
    _time_metric(models[next(iter(models))], samples, thresholds)

    rows = []
    for image, mask in samples[: args.images]:
        row = [image, colorize(mask, any_model.colors)]
        row += [
            colorize(predict(models[n], image)[0], any_model.colors) for n in models
        ]
        rows.append(row)
    picture = Path(args.out, "fcn_32s_16s_8s.png")
    save_grid(
        rows,
        ["image", "ground truth"] + [LABELS.get(n, n) for n in models],
        picture,
    )
    print(f"picture: {picture}")
    plot = Path(args.out, "by_object_size.png")
    _plot_by_size(by_size, plot)
    print(f"picture: {plot}")


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _time_metric(model, samples, thresholds) -> None:
    """Seconds per image of the confusion matrix and of the by-size metric, on one thread."""
    pairs = [
        (
            torch.from_numpy(predict(model, image)[0]).long(),
            torch.from_numpy(mask).long(),
        )
        for image, mask in samples
    ]
    n = len(model.classes)
    times = {}
    for label, metric in (
        ("confusion matrix", ConfusionMatrix(n)),
        ("by object size", ObjectSizeMetric(n, thresholds, exclude=[0])),
    ):
        t = time.perf_counter()
        for pred, mask in pairs:
            metric.update(pred[None], mask[None])
        times[label] = (time.perf_counter() - t) / len(pairs)
    side = "x".join(map(str, pairs[0][1].shape))
    print(
        f"metric cost per {side} image, one thread: "
        + ", ".join(f"{k} {1000 * v:.2f} ms" for k, v in times.items())
    )


def _plot_by_size(by_size: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(by_size)
    buckets = list(by_size[names[0]]["buckets"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    width = 0.8 / len(names)
    for ax, key, title in (
        (axes[0], "recall", "object recall (>= 50 % of its pixels right)"),
        (axes[1], "iou", "IoU over the objects' pixels"),
    ):
        for i, name in enumerate(names):
            values = [by_size[name]["buckets"][b][key] or 0.0 for b in buckets]
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(buckets))]
            label = LABELS.get(name.removesuffix("+crf"), name) + (
                " + CRF" if name.endswith("+crf") else ""
            )
            ax.bar(xs, values, width, label=label)
        counts = [by_size[names[0]]["buckets"][b]["objects"] for b in buckets]
        ax.set_xticks(
            range(len(buckets)),
            [f"{b}\n({c} objects)" for b, c in zip(buckets, counts)],
        )
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        "Built-in scenes, validation split: what each model gets right by object size"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
