"""What the by-object-size metric costs in ``convision segment eval``, next to the confusion matrix
and the boundary F-score it runs with: per-image time on one CPU thread for VOC-sized masks.

Ground truth: built-in scenes at 375x500 (VOC's typical size), 6 classes; prediction: the ground
truth blurred into blobs (every 8th pixel, nearest upsampling: an FCN-8s-like output) with 5 % of
the pixels set to random classes, so both maps hold many components.

    OMP_NUM_THREADS=1 .venv/bin/python bench/object_size_cost.py [--images 50]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from convision.data.segmentation import SyntheticSegmentation
from convision.metrics.boundary import BoundaryF
from convision.metrics.object_size import ObjectSizeMetric
from convision.metrics.segmentation import ConfusionMatrix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = SyntheticSegmentation(
        split="val", num_images=args.images, image_size=(375, 500), num_classes=6
    )
    g = torch.Generator().manual_seed(0)
    pairs = []
    for i in range(args.images):
        mask = data[i][1].long()
        coarse = mask[None, None, ::8, ::8].float()
        pred = F.interpolate(coarse, size=mask.shape, mode="nearest")[0, 0].long()
        noise = torch.rand(mask.shape, generator=g) < 0.05
        pred[noise] = torch.randint(0, 6, (int(noise.sum()),), generator=g)
        pairs.append((pred[None], mask[None]))
    metrics = {
        "confusion matrix": ConfusionMatrix(6),
        "boundary F": BoundaryF(6),
        "by object size": ObjectSizeMetric(6, exclude=[0]),
    }
    times = {}
    for name, metric in metrics.items():
        t = time.perf_counter()
        for pred, mask in pairs:
            metric.update(pred, mask)
        times[name] = (time.perf_counter() - t) / len(pairs)
    buckets = metrics["by object size"].compute()["buckets"]
    print(
        f"{args.images} images of 375x500, one thread; objects {[b['objects'] for b in buckets.values()]}"
    )
    for name, seconds in times.items():
        print(f"{name:18s} {1000 * seconds:7.2f} ms / image")


if __name__ == "__main__":
    main()
