"""Detection evaluation speed: pycocotools vs faster_coco_eval (COCO bbox), and convision's VOC AP.

Random VOC-like detections (jittered true boxes plus noise boxes, random scores) are scored by
:func:`convision.metrics.detection.coco_evaluate` with both backends; the script checks that the
12 COCO numbers agree to 1e-6 and prints the wall times, then times :class:`DetectionMetric`
(VOC AP at IoU 0.5) on the same data.

    .venv/bin/python bench/coco_eval_speed.py [--images 1000] [--classes 20] [--dets 50]
"""

from __future__ import annotations

import argparse
import time

import torch

from convision.metrics.detection import COCO_STAT_NAMES, DetectionMetric, coco_evaluate


def random_set(
    images: int, classes: int, dets: int, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(images):
        n = int(torch.randint(1, 8, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 400
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 200 + 4], 1)
        labels = torch.randint(0, classes, (n,), generator=g)
        targets.append(
            {
                "boxes": boxes,
                "labels": labels,
                "difficult": torch.rand(n, generator=g) < 0.1,
                "orig_size": torch.tensor([640, 640]),
            }
        )
        m = max(dets - n, 0)
        xy = torch.rand(m, 2, generator=g) * 400
        noise = torch.cat([xy, xy + torch.rand(m, 2, generator=g) * 200 + 4], 1)
        preds.append(
            {
                "boxes": torch.cat([boxes + torch.randn(n, 4, generator=g) * 8, noise]),
                "labels": torch.cat(
                    [labels, torch.randint(0, classes, (m,), generator=g)]
                ),
                "scores": torch.rand(n + m, generator=g),
            }
        )
    return preds, targets


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--dets", type=int, default=50, help="detections per image")
    args = ap.parse_args()
    classes = [f"c{i}" for i in range(args.classes)]
    preds, targets = random_set(args.images, args.classes, args.dets)
    print(
        f"{args.images} images, {args.classes} classes, {sum(len(p['scores']) for p in preds)} detections, "
        f"{sum(len(t['labels']) for t in targets)} boxes"
    )

    results, times = {}, {}
    for backend in ("pycocotools", "faster_coco_eval"):
        t = time.perf_counter()
        results[backend] = coco_evaluate(preds, targets, classes, backend=backend)
        times[backend] = time.perf_counter() - t
        print(
            f"{backend:<17} {times[backend]:7.2f} s   mAP {results[backend]['mAP']:.4f}  AP50 {results[backend]['AP50']:.4f}"
        )
    diff = max(
        abs(
            (results["pycocotools"][k] or 0.0) - (results["faster_coco_eval"][k] or 0.0)
        )
        for k in COCO_STAT_NAMES
    )
    print(
        f"largest difference over the 12 stats: {diff:.2e}; speed-up {times['pycocotools'] / times['faster_coco_eval']:.1f}x"
    )

    t = time.perf_counter()
    metric = DetectionMetric(classes)
    metric.update(preds, targets)
    voc = metric.compute()
    print(
        f"{'VOC AP (convision)':<17} {time.perf_counter() - t:7.2f} s   mAP {voc['mAP']:.4f}  mAP_07 {voc['mAP_07']:.4f}"
    )


if __name__ == "__main__":
    main()
