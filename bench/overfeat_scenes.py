"""OverFeat on the built-in scenes: what multi-scale dense evaluation, the localizer's box
regression and the greedy merge each add, measured as VOC AP@0.5 on whole scenes.

1. Training crops (64 x 64) are cut from 128 x 128 scenes with up to 3 shapes: a shape whose
   box lies inside the crop (and no other shape's pixels) gives a crop of that class and a
   localization sample (its box in the crop, written as ``x,y,w,h``: ``--box-format xywh``);
   crops with no shape pixels, or where every shape has less than ``--partial`` (40 %) of its
   box inside, are ``background`` (0.9, to keep windows that see part of a shape from firing,
   scored lower everywhere: BENCHMARKS.md).
2. A classifier and a localizer, both ImageNet MobileNetV2 fine-tuned at 64 x 64, are trained on
   them with convision's API (the classifier's global pool and linear head are convolutionalized
   into one 2 x 2 convolution; AlexNet from scratch was tried first and had not left the
   majority class, 0.44 validation accuracy, after 3 of 10 epochs).
3. Held-out scenes (192 x 256, up to 3 shapes of any size) are run through
   :func:`convision.tasks.overfeat.overfeat` at one scale (1.0) or four (0.5, 0.7, 1.0, 1.4), with
   or without the localizer (its box head slid over the image, ``dense``, or run on each kept
   window, ``crops``); the windows with p >= 0.5 of each class become detections either as
   ``best window`` (the single most probable window per class, what ``classify heatmap`` reported
   before; with the localizer, the box regressed from that window) or by the greedy merge at match thresholds 0.5 to 2 (scores: summed probabilities).
   Scored with :class:`convision.metrics.detection.DetectionMetric` (VOC AP at IoU 0.5).

    OMP_NUM_THREADS=1 .venv/bin/python bench/overfeat_scenes.py [--out /root/.cache/convision-bench/overfeat]
        [--scenes 450] [--epochs 8] [--partial 0.4] [--test-scenes 25] [--reuse] [--picture docs/images/overfeat.png]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import convision
from convision.data.synthetic import make_scene, synthetic_classes
from convision.metrics.detection import DetectionMetric
from convision.nn.overfeat import merge_boxes
from convision.tasks.overfeat import overfeat

CROP = 64
SHAPES = synthetic_classes(6)[1:]


def write_crops(
    root: Path, scenes: int, partial: float, seed: int = 0
) -> tuple[Path, Path]:
    """The classification folder and the localization CSV (xywh boxes) described in step 1."""
    rng = np.random.default_rng(seed)
    rows = []
    counts = {c: 0 for c in ["background", *SHAPES]}
    for k in range(scenes):
        s = make_scene(k, seed=seed, image_size=128, max_objects=3)
        crops: list[tuple[int, int, str, list[float] | None]] = []
        for n, (box, label) in enumerate(zip(s.boxes, s.labels), start=1):
            x1, y1, x2, y2 = (int(v) for v in box)
            if x2 - x1 > CROP - 4 or y2 - y1 > CROP - 4 or x2 - x1 < 6:
                continue
            for _ in range(4):
                cx = int(rng.integers(max(0, x2 - CROP), min(x1, 128 - CROP) + 1))
                cy = int(rng.integers(max(0, y2 - CROP), min(y1, 128 - CROP) + 1))
                inside = s.instances[cy : cy + CROP, cx : cx + CROP]
                if set(np.unique(inside)) <= {0, n}:
                    rel = [x1 - cx, y1 - cy, x2 - x1, y2 - y1]  # x, y, w, h
                    crops.append((cx, cy, SHAPES[int(label) - 1], rel))
        for _ in range(2):
            cx, cy = (int(v) for v in rng.integers(0, 128 - CROP + 1, size=2))
            inside = s.instances[cy : cy + CROP, cx : cx + CROP]
            ok = True
            for n, box in enumerate(s.boxes, start=1):
                if (inside == n).any():
                    x1, y1, x2, y2 = box
                    ix = max(0, min(x2, cx + CROP) - max(x1, cx))
                    iy = max(0, min(y2, cy + CROP) - max(y1, cy))
                    ok &= ix * iy < partial * (x2 - x1) * (y2 - y1)
            if ok:
                crops.append((cx, cy, "background", None))
        for j, (cx, cy, cls, rel) in enumerate(crops):
            name = f"{cls}/{k:05d}_{j}.png"
            (root / "classify" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(s.image[cy : cy + CROP, cx : cx + CROP]).save(
                root / "classify" / name
            )
            counts[cls] += 1
            if rel is not None:
                rows.append([f"classify/{name}", cls, *rel])
    with open(root / "localize_xywh.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "class", "x", "y", "w", "h"])
        w.writerows(rows)
    print("training crops:", counts, flush=True)
    return root / "classify", root / "localize_xywh.csv"


def train(root: Path, folder: Path, ann: Path, epochs: int) -> tuple[Path, Path]:
    cfg = convision.ClassifyConfig()
    cfg.data.data, cfg.data.image_size, cfg.data.hflip = str(folder), CROP, True
    cfg.model.backbone, cfg.model.weights, cfg.model.strategy = (
        "mobilenet_v2",
        "IMAGENET1K_V1",
        "finetune",
    )
    cfg.train.epochs, cfg.train.batch_size = epochs, 32
    cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay = "adamw", 5e-4, 1e-4
    cfg.train.out, cfg.train.overwrite, cfg.data.workers = str(root / "cls"), True, 0
    loc = convision.LocalizeConfig()
    loc.data.data, loc.data.image_size, loc.data.box_format = str(ann), CROP, "xywh"
    loc.model.backbone, loc.model.weights = "mobilenet_v2", "IMAGENET1K_V1"
    loc.train.epochs, loc.train.batch_size = epochs, 32
    loc.train.optimizer, loc.train.lr = "adamw", 1e-3
    loc.train.out, loc.train.overwrite, loc.data.workers = str(root / "loc"), True, 0
    return (
        _fit(cfg, "classifier (MobileNetV2, ImageNet): val accuracy"),
        _fit(
            loc, "localizer (MobileNetV2, ImageNet): val accuracy (class and IoU > 0.5)"
        ),
    )


def _fit(cfg, what: str) -> Path:
    """Train ``cfg``, print ``what``, the best validation metric and the time; the best checkpoint."""
    t = time.perf_counter()
    run = convision.train(cfg, progress=False)
    print(
        f"{what} {run['best_metric']:.3f}, {time.perf_counter() - t:.0f} s", flush=True
    )
    return Path(run["best"])


SETTINGS = {
    "1 scale": {"scales": [1.0], "localizer": False},
    "4 scales": {"scales": [0.5, 0.7, 1.0, 1.4], "localizer": False},
    "4 scales + localizer, dense": {
        "scales": [0.5, 0.7, 1.0, 1.4],
        "localizer": True,
        "regress": "dense",
    },
    "4 scales + localizer, crops": {
        "scales": [0.5, 0.7, 1.0, 1.4],
        "localizer": True,
        "regress": "crops",
    },
}
THRESHOLDS = (0.5, 1.0, 1.5, 2.0)
PICTURED = "4 scales + localizer, crops"


def _pred(dets: list[tuple[str, list[float], float]], shapes: list[str]) -> dict:
    return {
        "boxes": torch.tensor([d[1] for d in dets], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([shapes.index(d[0]) for d in dets], dtype=torch.long),
        "scores": torch.tensor([d[2] for d in dets], dtype=torch.float32),
    }


def evaluate(
    cls_ckpt: Path, loc_ckpt: Path, scenes: int, picture: str | None
) -> dict[str, dict[str, float]]:
    """VOC AP@0.5 per setting: the best window per class (no merge) and the merge at each
    threshold. One :func:`overfeat` call per scene and setting gives the candidate windows (with
    their regressed boxes); the merges are redone on them with :func:`merge_boxes`."""
    model = convision.load(cls_ckpt)
    loc = convision.load(loc_ckpt)
    shapes = [c for c in model.classes if c != "background"]
    keys = ["best window"] + [f"merge t={t:g}" for t in THRESHOLDS]
    metrics = {name: {k: DetectionMetric(shapes) for k in keys} for name in SETTINGS}
    for k in range(scenes):
        s = make_scene(10_000 + k, seed=1, image_size=(192, 256), max_objects=3)
        target = {
            "boxes": torch.from_numpy(s.boxes),
            "labels": torch.tensor(
                [shapes.index(SHAPES[int(v) - 1]) for v in s.labels]
            ),
        }
        for name, st in SETTINGS.items():
            r = overfeat(
                model,
                s.image,
                scales=st["scales"],
                localizer=loc if st["localizer"] else None,
                regress=st.get("regress", "dense"),
                top_classes=len(shapes),
                min_prob=0.5,
                merge_threshold=1.0,
                device="cpu",
                out_png=picture if (picture and k == 0 and name == PICTURED) else None,
            )
            by_class: dict[str, list[dict]] = {}
            for c in r["candidates"]:
                by_class.setdefault(c["class"], []).append(c)
            top = {
                c: max(cs, key=lambda x: x["probability"]) for c, cs in by_class.items()
            }
            # the most probable window per class; with a localizer, the box regressed from it
            best = [(c, x["box"], x["probability"]) for c, x in top.items()]
            metrics[name]["best window"].update([_pred(best, shapes)], [target])
            for t in THRESHOLDS:
                dets = []
                for c, cs in by_class.items():
                    boxes = torch.tensor([x["box"] for x in cs])
                    probs = torch.tensor([x["probability"] for x in cs])
                    merged, score, _ = merge_boxes(boxes, probs, t)
                    dets += [(c, b.tolist(), float(v)) for b, v in zip(merged, score)]
                metrics[name][f"merge t={t:g}"].update([_pred(dets, shapes)], [target])
    return {
        name: {k: m.compute()["mAP"] for k, m in ms.items()}
        for name, ms in metrics.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="/root/.cache/convision-bench/overfeat")
    ap.add_argument("--scenes", type=int, default=450, help="training scenes")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument(
        "--partial",
        type=float,
        default=0.4,
        help="a crop is background when every shape in it has less than this share of its box inside",
    )
    ap.add_argument("--test-scenes", type=int, default=25)
    ap.add_argument("--picture", default=None, help="the first test scene's picture")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="evaluate the checkpoints already in --out (skip data and training)",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    root = Path(args.out)
    t0 = time.perf_counter()
    if args.reuse:
        cls_ckpt, loc_ckpt = root / "cls" / "best.pt", root / "loc" / "best.pt"
    else:
        folder, ann = write_crops(root, args.scenes, args.partial)
        cls_ckpt, loc_ckpt = train(root, folder, ann, args.epochs)
    res = evaluate(cls_ckpt, loc_ckpt, args.test_scenes, args.picture)
    print(f"\nVOC AP@0.5 over {args.test_scenes} held-out 192x256 scenes (5 shapes):")
    cols = list(next(iter(res.values())))
    print(f"  {'':24s}" + "".join(f"{c:>14s}" for c in cols))
    for name, row in res.items():
        print(f"  {name:24s}" + "".join(f"{row[c]:14.3f}" for c in cols))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
