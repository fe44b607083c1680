"""Segmentation metric speed: convision's ConfusionMatrix vs torchmetrics' MulticlassJaccardIndex.

Both get the same prediction/target tensors batch by batch; the script checks that they give
the same mean IoU and prints the time ratio (torchmetrics time / convision time).

    .venv/bin/python bench/metrics_speed.py [--classes 21] [--batches 50] [--size 512]
"""

from __future__ import annotations

import argparse
import time

import torch
from torchmetrics.classification import MulticlassJaccardIndex

from convision.metrics.segmentation import ConfusionMatrix


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    shape = (args.batch_size, args.size, args.size)
    batches = []
    for _ in range(args.batches):
        target = torch.randint(0, args.classes, shape, generator=g)
        noise = torch.randint(0, args.classes, shape, generator=g)
        keep = torch.rand(shape, generator=g) < 0.7
        pred = torch.where(keep, target, noise)
        target[torch.rand(shape, generator=g) < 0.05] = 255
        batches.append((pred, target))

    def run_convision() -> float:
        cm = ConfusionMatrix(args.classes, ignore_index=255)
        for pred, target in batches:
            cm.update(pred, target)
        return float(cm.compute()["miou"])

    def run_torchmetrics() -> float:
        jac = MulticlassJaccardIndex(
            num_classes=args.classes, average="macro", ignore_index=255
        )
        for pred, target in batches:
            jac.update(pred, target)
        return float(jac.compute())

    times: dict[str, float] = {}
    values: dict[str, float] = {}
    for name, fn in (("convision", run_convision), ("torchmetrics", run_torchmetrics)):
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            values[name] = fn()
            best = min(best, time.perf_counter() - t)
        times[name] = best
    pixels = args.batches * args.batch_size * args.size * args.size
    print(
        f"{args.batches} batches of {args.batch_size}x{args.size}x{args.size}, {args.classes} classes "
        f"({pixels / 1e6:.0f} Mpixels), torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for name in times:
        print(
            f"  {name:13s} mIoU {values[name]:.6f}  {times[name]:.3f} s  ({pixels / times[name] / 1e6:.0f} Mpixel/s)"
        )
    same = abs(values["convision"] - values["torchmetrics"]) < 1e-5
    print(
        f"  same value: {same}; speed ratio torchmetrics/convision = {times['torchmetrics'] / times['convision']:.2f}x"
    )
    if not same:
        raise SystemExit("values differ")


if __name__ == "__main__":
    main()
