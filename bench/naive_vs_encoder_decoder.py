"""What naive semantic segmentation would cost, next to encoder-decoders (lecture notes, seed 003).

Four ways to get one class score per pixel of an ``S x S`` image (21 classes, as PASCAL VOC), at
image sides 128 to 1024:

``sliding window``
    A patch classifier applied around every pixel: torchvision's VGG16 (the network FCN starts
    from) on a 224 x 224 patch centred on the pixel, ``S * S`` forward passes. Multiply-adds are one
    patch's times ``S * S``; the time is measured on a few patches and multiplied (the patches
    are independent, so that is exact up to batching); memory is one patch's forward, and for
    training all ``S * S`` patches of one image in one batch (one patch's figure times ``S * S``).
``full resolution``
    VGG16's 13 convolutions (3 x 3, padding 1) with the pooling layers removed, so every layer
    runs at ``S x S``, then a 1 x 1 score layer. Its receptive field is only 27 pixels.
``FCN-8s``, ``U-Net``
    Encoder-decoders from :mod:`convision.models.segmentation`: FCN-8s on VGG16 (Long et al.
    2015) and the paper's U-Net (Ronneberger et al. 2015, padded, 64 base channels).

What is measured, per network and side:

* **multiply-adds**: :func:`convision.nn.summarize` (one forward pass with hooks, counting
  convolutions and linear layers; batch 1). The pass runs on PyTorch's ``meta`` device (shapes
  only, no arithmetic), so the count is exact at every side, including the ones too large to run.
* **peak activation memory**: every tensor an operator creates is counted from its creation
  until its tensor object is freed (a ``TorchDispatchMode`` with a ``weakref.finalize`` per
  output; views and in-place results allocate nothing); the peak of that sum is reported for a
  forward pass without autograd (inference) and for the forward pass of a training step (with
  autograd and the cross-entropy loss: at its end everything autograd saved for the backward pass
  is alive, which is what dominates a training step's activation memory; the backward pass then
  adds the gradients of one or two activations at a time and the weight gradients, the size of
  the weights, which are not counted). Also on ``meta``, so exact at every side for this
  allocation model (PyTorch's CPU allocator adds its own overhead, not counted).
* **receptive field**: the largest any layer reaches (:func:`convision.nn.summarize`'s theoretical
  receptive field, which can exceed the image; for the sliding window, the patch).
* **time**: the median of ``--repeats`` CPU forward passes (batch 1, no autograd, after one
  warm-up), only where the multiply-adds are at most ``--max-gmacs`` (default 500 G: up to
  a minute each on one loaded thread); larger sizes show ``-``. The sliding window's time is per patch
  times ``S * S``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/naive_vs_encoder_decoder.py \
        [--sizes 128,256,512,1024] [--max-gmacs 500] [--repeats 2] [--plot docs/images/naive_segmentation_cost.png]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from convision.models.segmentation.fcn import fcn8s
from convision.models.segmentation.unet import unet
from convision.nn import summarize

NUM_CLASSES = 21
PATCH = 224


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensors operators create while the mode is on (see the module notes)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for ret, t in zip(func._schema.returns, outs):
            if isinstance(t, torch.Tensor) and ret.alias_info is None:
                n = t.untyped_storage().nbytes()
                self.live += n
                weakref.finalize(t, self._free, n)
                self.peak = max(self.peak, self.live)
        return out


def full_resolution_stack(num_classes: int = NUM_CLASSES) -> nn.Sequential:
    """VGG16's convolutions without its pooling layers, then a 1 x 1 score layer."""
    layers: list[nn.Module] = []
    cin = 3
    for v in torchvision.models.vgg.cfgs["D"]:
        if v == "M":
            continue
        layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
        cin = v
    return nn.Sequential(*layers, nn.Conv2d(cin, num_classes, 1))


def patch_classifier(num_classes: int = NUM_CLASSES) -> nn.Module:
    return torchvision.models.vgg16(weights=None, num_classes=num_classes)


def _logits(out: Any) -> torch.Tensor:
    return out["out"] if isinstance(out, dict) else out


def peak_bytes(model: nn.Module, side: int, train: bool) -> int:
    """Peak activation bytes of one forward pass on ``meta``: without autograd, or (``train``) with
    it and the loss, so that everything saved for the backward pass is alive at the end."""
    model = model.to("meta").train(train)
    x = torch.zeros(1, 3, side, side, device="meta")
    with torch.set_grad_enabled(train), LiveBytes() as live:
        logits = _logits(model(x))
        if train:
            target = torch.zeros(
                logits.shape[0], *logits.shape[2:], dtype=torch.long, device="meta"
            )
            F.cross_entropy(logits, target)
    return live.peak


def mult_adds(model: nn.Module, side: int) -> tuple[int, int]:
    """Multiply-adds and the largest receptive field (pixels) of any layer (:func:`summarize`)."""
    summary = summarize(model.to("meta"), (3, side, side))
    rf = max((row.rf for row in summary if row.rf is not None), default=0)
    return summary.total_mult_adds, int(rf)


@torch.no_grad()
def seconds(model: nn.Module, side: int, repeats: int) -> float:
    """Median CPU forward time (batch 1, one warm-up)."""
    model = model.to("cpu").eval()
    x = torch.randn(1, 3, side, side)
    model(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(sizes: list[int], max_gmacs: float, repeats: int) -> list[dict[str, Any]]:
    builders: dict[str, Callable[[], nn.Module]] = {
        "full resolution": full_resolution_stack,
        "FCN-8s": lambda: fcn8s(num_classes=NUM_CLASSES),
        "U-Net": lambda: unet(num_classes=NUM_CLASSES),
    }
    rows: list[dict[str, Any]] = []
    # sliding window: one patch, measured once, then S*S of them
    patch = patch_classifier()
    p_macs, _ = mult_adds(patch, PATCH)
    p_rf = PATCH  # VGG16 sees no further than the patch it is given
    p_fwd = peak_bytes(patch, PATCH, train=False)
    p_train = peak_bytes(patch, PATCH, train=True)
    p_time = seconds(patch_classifier(), PATCH, repeats)
    print(
        f"sliding window: one {PATCH}x{PATCH} VGG16 patch = {p_macs / 1e9:.2f} G mult-adds, "
        f"{p_time:.2f} s, forward peak {p_fwd / 2**20:.0f} MiB",
        flush=True,
    )
    del patch
    for s in sizes:
        n = s * s
        rows.append(
            {
                "method": "sliding window",
                "side": s,
                "mult_adds": p_macs * n,
                "receptive_field": p_rf,
                "forward_bytes": p_fwd,
                "train_bytes": p_train * n,
                "seconds": p_time * n,
                "timed": f"{repeats} passes of one patch x {n} pixels",
            }
        )
    for name, build in builders.items():
        for s in sizes:
            model = build()
            macs, rf = mult_adds(model, s)
            row = {
                "method": name,
                "side": s,
                "mult_adds": macs,
                "receptive_field": rf,
                "forward_bytes": peak_bytes(model, s, train=False),
                "train_bytes": peak_bytes(model, s, train=True),
                "seconds": None,
                "timed": None,
            }
            if macs <= max_gmacs * 1e9:
                row["seconds"] = seconds(build(), s, repeats)
                row["timed"] = f"median of {repeats} forward passes"
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _line(r: dict[str, Any]) -> str:
    t = "-" if r["seconds"] is None else f"{r['seconds']:.3g} s"
    return (
        f"{r['method']:16s} {r['side']:5d}  rf {r['receptive_field']:4d}  {r['mult_adds'] / 1e9:12.1f} G  "
        f"fwd {r['forward_bytes'] / 2**20:10.0f} MiB  train {r['train_bytes'] / 2**20:12.0f} MiB  {t}"
    )


def table(rows: list[dict[str, Any]]) -> str:
    head = "| method | side | receptive field | mult-adds | forward peak | training peak | CPU time, 1 thread |"
    out = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = "-" if r["seconds"] is None else _human_s(r["seconds"])
        out.append(
            f"| {r['method']} | {r['side']} | {r['receptive_field']} px | {r['mult_adds'] / 1e9:,.1f} G | "
            f"{_human_b(r['forward_bytes'])} | {_human_b(r['train_bytes'])} | {t} |"
        )
    return "\n".join(out)


def _human_b(n: float) -> str:
    for unit, k in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= k:
            return f"{n / k:.3g} {unit}"
    return f"{n / 2**10:.3g} KiB"


def _human_s(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.3g} days"
    if s >= 3600:
        return f"{s / 3600:.3g} h"
    if s >= 60:
        return f"{s / 60:.3g} min"
    return f"{s:.3g} s"


def plot(rows: list[dict[str, Any]], out_png: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = (
        ("mult_adds", 1e9, "multiply-adds (G)"),
        ("train_bytes", 2**30, "training peak activations (GiB)"),
        ("seconds", 1.0, "CPU forward time, 1 thread (s)"),
    )
    for ax, (key, unit, label) in zip(axes, panels):
        for m in methods:
            pts = [
                (r["side"], r[key] / unit)
                for r in rows
                if r["method"] == m and r[key] is not None
            ]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=m)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("image side (pixels)")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        "Per-pixel classification of an S x S image, 21 classes (time: measured; sliding window: per patch x S²)",
        fontsize=10,
    )
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="128,256,512,1024", help="image sides")
    ap.add_argument(
        "--max-gmacs",
        type=float,
        default=500.0,
        help="time a network only up to this many G mult-adds",
    )
    ap.add_argument("--repeats", type=int, default=2, help="timed passes (median)")
    ap.add_argument("--plot", default=None, help="write the cost plot here (PNG)")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    torch.manual_seed(0)
    print(f"CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    t0 = time.perf_counter()
    rows = run(sizes, args.max_gmacs, args.repeats)
    print()
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)
        print(f"\nplot written to {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
