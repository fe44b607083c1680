"""Real-photograph segmentation: convision's models next to segmentation_models_pytorch (smp) at
the same budget (data, epochs, batch), in one run; mIoU on val and test, train images/s, ratios.

Data: CamVid street photographs (``bench/segmentation_data.py`` makes the folder; 367 train /
101 val / 233 test, 11 classes, 96x128 by default).

* convision models are trained the way a user trains them: ``convision.api.train`` with the
  model's default recipe (``convision segment train --data DIR --model NAME --epochs E
  --batch-size B``, nothing else), on ImageNet MobileNetV2 where the architecture takes a backbone.
* smp's ``Unet`` and ``FPN`` use the same MobileNetV2 encoder and weights (torchvision's
  IMAGENET1K_V1, loaded into smp's encoder, which is a torchvision MobileNetV2) and the obvious
  recipe: AdamW 1e-3 (weight decay 1e-4) with a one-cycle schedule, horizontal flips only,
  cross-entropy ignoring 255, a 40-line loop.
* ``--loop plain`` trains the convision models with smp's loop and recipe instead (same data
  pipeline, optimiser, schedule), which separates the architecture from the recipe.

Every model is evaluated after its last epoch (no best-epoch selection) at the images' own size by
the same code (confusion matrix, mIoU over the classes present). Train images/s counts the
training epochs only, data loading included (``--workers`` 0: one process).

    OMP_NUM_THREADS=1 python bench/segmentation_real.py --data ~/.cache/convision-bench/camvid-96x128 \\
        --epochs 10 --batch-size 8 [--only unet,smp_unet] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from convision.data.segmentation import SegmentationFolder
from convision.data.transforms import (
    pad_collate,
    segmentation_eval_transforms,
    segmentation_train_transforms,
)
from convision.metrics.segmentation import ConfusionMatrix

DEFAULT_DATA = Path.home() / ".cache" / "convision-bench" / "camvid-96x128"
CONVISION = ("fcn32s", "fcn16s", "fcn8s", "unet", "dilated", "segnet", "deconvnet")
SMP = ("smp_unet", "smp_fpn")
SLOW = ("segnet", "deconvnet")  # run with --only


class PadTo32(nn.Module):
    """smp's models need sides divisible by 32: zero-pad bottom/right, crop the logits back (what
    convision's models do inside their forward)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return self.net(F.pad(x, (0, -w % 32, 0, -h % 32)))[..., :h, :w]


def smp_model(name: str, num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp
    import torchvision

    cls = {"smp_unet": smp.Unet, "smp_fpn": smp.FPN}[name]
    net = cls(encoder_name="mobilenet_v2", encoder_weights=None, classes=num_classes)
    state = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").state_dict()
    net.encoder.load_state_dict(
        state
    )  # strict; smp's encoder drops the classifier keys itself
    return PadTo32(net)


def convision_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    from convision.models import build_model

    if name in ("segnet", "deconvnet"):
        return build_model(name, num_classes=num_classes, **kwargs)
    return build_model(
        name,
        num_classes=num_classes,
        backbone="mobilenet_v2",
        weights="IMAGENET1K_V1",
        **kwargs,
    )


def plain_loop(
    model: nn.Module, data: Path, epochs: int, batch_size: int, workers: int, seed: int
) -> float:
    """smp-style training: AdamW 1e-3 / wd 1e-4, one-cycle, flips only. Returns train images/s."""
    torch.manual_seed(seed)
    train_set = SegmentationFolder(data, "train")
    h, w = train_set[0][0].shape[-2:]
    train_set.transforms = segmentation_train_transforms(
        crop_size=(h, w), scale_range=(1.0, 1.0), hflip=True, color_jitter=0.0
    )
    loader = DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        collate_fn=pad_collate,
        generator=torch.Generator().manual_seed(seed),
    )
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-4
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=1e-3, total_steps=epochs * len(loader)
    )
    seen, spent = 0, 0.0
    for epoch in range(epochs):
        model.train()
        t0, total = time.time(), 0.0
        for images, masks in loader:
            loss = F.cross_entropy(model(images), masks, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            seen += images.shape[0]
        spent += time.time() - t0
        print(
            f"    epoch {epoch + 1}/{epochs} loss {total / len(loader):.4f} ({time.time() - t0:.0f}s)",
            flush=True,
        )
    return seen / spent


def convision_train(
    name: str,
    data: Path,
    epochs: int,
    batch_size: int,
    workers: int,
    seed: int,
    out: Path,
    overrides: dict[str, Any],
) -> tuple[nn.Module, float]:
    """``convision segment train`` with the model's defaults; returns (last-epoch model, train images/s)."""
    from convision.api import load, train
    from convision.config import apply
    from convision.models.segmentation import recipe
    from convision.tasks.segment import SegmentConfig

    cfg = apply(
        SegmentConfig(), recipe(name), where=f"recipe of {name}"
    )  # what the CLI starts from
    values = {
        "data": str(data),
        "model": name,
        "epochs": epochs,
        "batch_size": batch_size,
        "workers": workers,
        "seed": seed,
        "device": "cpu",
        "out": str(out / name),
        "overwrite": True,
        **overrides,
    }
    if name in ("segnet", "deconvnet"):
        values.setdefault(
            "weights", "none"
        )  # VGG16-BN only; its weights are not available offline here
    apply(cfg, values, where="bench")
    run = train(cfg, progress=False)
    hist = run["history"]
    ips = len(hist) / sum(
        1.0 / r["images_per_s"] for r in hist
    )  # same images every epoch: harmonic mean
    for r in hist:
        print(
            f"    epoch {r['epoch']} loss {r['train_loss']:.4f} val mIoU {r.get('miou', float('nan')):.3f}",
            flush=True,
        )
    return load(run["last"]), ips


@torch.no_grad()
def miou(model: nn.Module, data: Path, split: str, num_classes: int) -> float:
    model.eval()
    ds = SegmentationFolder(data, "val")
    if split != "val":
        stems = [
            line.strip()
            for line in (data / f"{split}.txt").read_text().splitlines()
            if line.strip()
        ]
        ds.images = [ds.root / "images" / f"{s}.png" for s in stems]
        ds.masks = [ds.root / "masks" / f"{s}.png" for s in stems]
    ds.transforms = segmentation_eval_transforms()
    cm = ConfusionMatrix(num_classes, ignore_index=255)
    for images, masks in DataLoader(ds, batch_size=16, collate_fn=pad_collate):
        cm.update(model(images).argmax(1), masks)
    return float(cm.compute()["miou"])


def step_speed(
    names: list[str], data: Path, batch_size: int, num_classes: int, rounds: int
) -> dict[str, float]:
    """Train images/s of the models alone (forward, backward, AdamW step on one batch of the data),
    the models taking turns ``rounds`` times so that a shared CPU slows all of them alike; the
    fastest round of each counts."""
    ds = SegmentationFolder(data, "train", transforms=segmentation_eval_transforms())
    images, masks = pad_collate([ds[i] for i in range(batch_size)])
    models = {}
    for name in names:
        torch.manual_seed(0)
        models[name] = (
            smp_model(name, num_classes)
            if name in SMP
            else convision_model(name, num_classes)
        )
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-4) for n, m in models.items()}
    best = {n: math.inf for n in names}
    for _ in range(rounds):
        for name, model in models.items():
            model.train()
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(images), masks, ignore_index=255)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {n: batch_size / t for n, t in best.items()}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of {','.join(CONVISION + SMP)} "
        f"(default: all but {','.join(SLOW)}: VGG16-BN, ~100x FCN-8s's work)",
    )
    p.add_argument(
        "--loop",
        choices=("convision", "plain"),
        default="convision",
        help="convision: convision's trainer and default recipe; plain: smp's loop and recipe for every model",
    )
    p.add_argument(
        "--set",
        default="{}",
        help="JSON: extra convision settings (convision loop) or model kwargs (plain loop)",
    )
    p.add_argument(
        "--speed",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only time the models' training steps, taking turns ROUNDS times (no training run)",
    )
    p.add_argument("--out", default="runs/segmentation_real")
    p.add_argument(
        "--json", default=None, help="append the results (one JSON line) here"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data).expanduser()
    if not (data / "images").is_dir():
        raise SystemExit(f"{data}: not found; run bench/segmentation_data.py first")
    num_classes = SegmentationFolder(data, "train").num_classes
    names = [
        n
        for n in (*CONVISION, *SMP)
        if (n in args.only.split(",") if args.only else n not in SLOW)
    ]
    extra = json.loads(args.set)
    if args.speed:
        speed = step_speed(names, data, args.batch_size, num_classes, args.speed)
        ref = speed.get("smp_unet")
        for name, ips in speed.items():
            print(
                f"{name:<12} {ips:6.1f} train img/s (model step)"
                + (f"  {ips / ref:.2f}x smp Unet" if ref else "")
            )
        return
    results: dict[str, dict[str, float]] = {}
    for name in names:
        print(f"== {name}", flush=True)
        t0 = time.time()
        if name in SMP or args.loop == "plain":
            torch.manual_seed(args.seed)
            model = (
                smp_model(name, num_classes)
                if name in SMP
                else convision_model(name, num_classes, **extra)
            )
            ips = plain_loop(
                model, data, args.epochs, args.batch_size, args.workers, args.seed
            )
        else:
            model, ips = convision_train(
                name,
                data,
                args.epochs,
                args.batch_size,
                args.workers,
                args.seed,
                Path(args.out),
                extra,
            )
        results[name] = {
            "val_miou": miou(model, data, "val", num_classes),
            "test_miou": miou(model, data, "test", num_classes),
            "train_img_s": ips,
            "minutes": (time.time() - t0) / 60,
        }
        r = results[name]
        print(
            f"   {name}: val mIoU {r['val_miou']:.3f}  test mIoU {r['test_miou']:.3f}  train {ips:.1f} img/s",
            flush=True,
        )
    ref = results.get("smp_unet")
    print(
        f"\n{'model':<12} {'val mIoU':>9} {'test mIoU':>10} {'train img/s':>12}"
        + ("  vs smp Unet: val  test  speed" if ref else "")
    )
    for name, r in results.items():
        line = f"{name:<12} {r['val_miou']:>9.3f} {r['test_miou']:>10.3f} {r['train_img_s']:>12.1f}"
        if ref:
            line += f"  {r['val_miou'] / ref['val_miou']:>18.2f} {r['test_miou'] / ref['test_miou']:>5.2f} {r['train_img_s'] / ref['train_img_s']:>6.2f}"
        print(line)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"args": vars(args), "results": results}) + "\n")


if __name__ == "__main__":
    main()
