"""Transfer learning on Fashion-MNIST: MobileNetV2 x {scratch, feature-extract, finetune} x training fractions.

Every cell trains through convision's Python API (``convision.tasks.classify.train``) on a
stratified ``--fractions`` share of the 60k training images (``ClassifyDataConfig.fraction``,
seeded) and is scored once, at the end, on the full 10k test set (``classify.evaluate``):

    scratch          random MobileNetV2, everything trains at one lr (--scratch-lr, SGD)
    feature-extract  ImageNet MobileNetV2 frozen (BN in eval mode), features cached once, head trains
    finetune         ImageNet MobileNetV2, everything trains: backbone --lr, head --lr x --head-lr-mult
                     (default 0 = convision's auto, 10x; the seeds' 100x diverged here at 64 px)
    Options --optimizer, --warmup-epochs, --weight-decay, --scale-min apply to every cell.

Honest details:

* Input size: the 28x28 grey images are repeated to 3 channels, resized to ``--image-size`` x 256/224
  and (test) centre-cropped / (train, not feature-extract) random-resized-cropped + flipped to
  ``--image-size``. The ImageNet weights were trained at 224 px; a smaller input (default 64) is a
  CPU compromise that costs the pretrained strategies accuracy.
* Epochs depend on the fraction (``--epochs 0.01:20,0.1:2,1:1`` by default: 12k, 12k and 60k
  training images seen, i.e. 380, 376 and 1875 steps of 32); one integer sets the same number
  for every fraction.
* No per-epoch validation: the engine would otherwise score the 10k test images after every epoch
  (costly, and ``best.pt`` would be picked on the test set). The script hands ``train()`` an empty
  validation split and evaluates the final (``last.pt``) model once.
* ``train s`` is the wall time of ``train()`` (for feature-extract it includes the one forward pass
  that caches the training features); ``img/s`` is the engine's training throughput, mean over
  epochs (feature-extract: head on cached features, so very high; shown apart: training images /
  (train() wall - epoch time), i.e. the caching pass plus model/data set-up, meaningful at >= 10 %).

    nice -n 15 .venv/bin/python bench/fashion_mnist_transfer.py --threads 1 --image-size 64 \\
        --head-lr-mult 10 --skip finetune@1,scratch@1 --out runs/bench_fmnist
    # finetune on all 60 k images to 0.934 (BENCHMARKS.md; 53 min on 2 CPU threads)
    .venv/bin/python bench/fashion_mnist_transfer.py --fractions 1 --strategies finetune --epochs 6 \\
        --optimizer adamw --lr 2e-4 --warmup-epochs 0.5 --weight-decay 0.05 --threads 2 --out runs/bench_fmnist_adamw6
    # a GPU (untested): the whole table at the weights' own input size
    .venv/bin/python bench/fashion_mnist_transfer.py --device cuda --workers 8 --image-size 224 \\
        --head-lr-mult 10 --out runs/bench_fmnist_gpu
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

import convision.tasks.classify as classify
from convision.tasks.classify import ClassifyConfig

DATA = "/usr/share/datasets/fashion-mnist"
STRATEGY_ORDER = ("scratch", "feature-extract", "finetune")
NUM_TRAIN = 60000


@contextmanager
def no_validation() -> Iterator[None]:
    """Make ``classify.train`` see an empty validation split (so it neither scores nor caches it)."""
    original = classify.build_datasets

    def build(*args: Any, **kwargs: Any):
        train_set, val_set = original(*args, **kwargs)
        return train_set, val_set.select([])

    classify.build_datasets = build
    try:
        yield
    finally:
        classify.build_datasets = original


def parse_epochs(text: str, fractions: list[float]) -> dict[float, int]:
    text = text.strip()
    if ":" not in text:
        return {f: int(text) for f in fractions}
    table = {
        float(k): int(v)
        for k, v in (item.split(":") for item in text.split(",") if item.strip())
    }
    missing = [f for f in fractions if f not in table]
    if missing:
        raise SystemExit(
            f"--epochs: no epoch count for fraction(s) {missing} (give FRACTION:EPOCHS for each)"
        )
    return {f: table[f] for f in fractions}


def fmt_fraction(f: float) -> str:
    return f"{f * 100:g} %"


def run_cell(
    args: argparse.Namespace, fraction: float, strategy: str, epochs: int
) -> dict[str, Any]:
    cfg = ClassifyConfig()
    d, m, t = cfg.data, cfg.model, cfg.train
    d.data, d.fraction, d.image_size, d.workers, d.data_seed = (
        args.data,
        fraction,
        args.image_size,
        args.workers,
        0,
    )
    d.scale_min = args.scale_min
    m.backbone, m.strategy = "mobilenet_v2", strategy
    m.weights = "none" if strategy == "scratch" else "IMAGENET1K_V1"
    t.optimizer, t.epochs, t.batch_size, t.schedule = (
        args.optimizer,
        epochs,
        args.batch_size,
        "cosine",
    )
    t.warmup_epochs, t.weight_decay = args.warmup_epochs, args.weight_decay
    t.lr = args.scratch_lr if strategy == "scratch" else args.lr
    if strategy == "finetune":
        t.head_lr_mult = args.head_lr_mult  # 0 = convision's auto (10)
        t.unfreeze_every = args.unfreeze_every
    t.device, t.seed, t.overwrite = args.device, 0, True
    t.out = str(Path(args.out) / f"{strategy}_{fraction:g}")

    start = time.time()
    with no_validation():
        run = classify.train(cfg, progress=args.progress, validate_data=False)
    train_s = time.time() - start
    hist = run["history"]
    n_train = len(
        classify.build_datasets(cfg, 32, (0, 0, 0), (1, 1, 1), augment=False)[0]
    )
    epoch_s = sum(r["time"] for r in hist)
    start = time.time()
    metrics = classify.evaluate(
        run["last"],
        batch_size=args.eval_batch_size,
        workers=args.workers,
        device=args.device,
        progress=args.progress,
    )
    eval_s = time.time() - start
    steps = epochs * -(-n_train // args.batch_size)
    return {
        "fraction": fraction,
        "strategy": strategy,
        "epochs": epochs,
        "train_images": n_train,
        "steps": steps,
        "accuracy": metrics["accuracy"],
        "top5": metrics.get("top5_accuracy", metrics.get("top5")),
        "train_s": train_s,
        "train_img_s": sum(r["images_per_s"] for r in hist) / len(hist),
        "setup_s": train_s - epoch_s,  # feature-extract: mostly the caching pass
        "cache_img_s": n_train / max(train_s - epoch_s, 1e-9)
        if strategy == "feature-extract"
        else None,
        "final_train_loss": hist[-1]["train_loss"],
        "eval_s": eval_s,
        "eval_img_s": metrics["num_images"] / eval_s,
        "test_images": metrics["num_images"],
        "lr": t.lr,
        "head_lr_mult": t.head_lr_mult,
        "unfreeze_every": t.unfreeze_every,
        "checkpoint": run["last"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| train fraction (images) | strategy | epochs (steps) | test accuracy | train s | train img/s | test eval img/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(
                f"| {fmt_fraction(r['fraction'])} | {r['strategy']} | {r['epochs']} | not run ({r['skipped']}) | | | |"
            )
            continue
        img_s = f"{r['train_img_s']:.0f}"
        if r["cache_img_s"] is not None:
            img_s = f"{r['train_img_s']:.0f} (head on cached features; caching+setup {r['cache_img_s']:.0f})"
        name = r["strategy"]
        if name == "finetune":
            name += f" (head lr x{r.get('head_lr_mult') or 10:g})"
            if r.get("unfreeze_every"):
                name += f", unfreezing a stage every {r['unfreeze_every']} epochs"
        lines.append(
            f"| {fmt_fraction(r['fraction'])} ({r['train_images']}) | {name} | {r['epochs']} ({r['steps']}) "
            f"| **{r['accuracy']:.4f}** | {r['train_s']:.0f} | {img_s} | {r['eval_img_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data",
        default=DATA,
        help="Fashion-MNIST IDX folder (validation = its t10k test set)",
    )
    p.add_argument(
        "--fractions",
        default="0.01,0.1,1",
        help="comma-separated shares of the training set",
    )
    p.add_argument(
        "--strategies",
        default=",".join(STRATEGY_ORDER),
        help="comma-separated: scratch, feature-extract, finetune",
    )
    p.add_argument(
        "--epochs",
        default="0.01:20,0.1:2,1:1",
        help="FRACTION:EPOCHS,... or one integer for all fractions",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=64,
        help="network input side (the ImageNet weights expect 224)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument(
        "--lr",
        type=float,
        default=0.001,
        help="backbone lr of finetune (head: x --head-lr-mult); feature-extract: head lr = 10 x this (convision's auto)",
    )
    p.add_argument(
        "--head-lr-mult",
        type=float,
        default=0.0,
        help="finetune only: head lr / backbone lr (0 = convision's auto, 10; the seeds' 100 diverged here, see BENCHMARKS.md)",
    )
    p.add_argument(
        "--optimizer", default="sgd", help="sgd (momentum 0.9) | adamw, every cell"
    )
    p.add_argument(
        "--warmup-epochs",
        type=float,
        default=0.0,
        help="linear lr warm-up, in epochs, before the cosine decay",
    )
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument(
        "--scale-min",
        type=float,
        default=0.5,
        help="random-resized-crop smallest area share (training augmentation)",
    )
    p.add_argument(
        "--unfreeze-every",
        type=int,
        default=0,
        help="finetune only: gradual unfreezing, one more backbone stage every N epochs (0 = off)",
    )
    p.add_argument(
        "--scratch-lr", type=float, default=0.02, help="SGD lr of scratch (one group)"
    )
    p.add_argument(
        "--skip",
        default="",
        help="cells to skip, STRATEGY@FRACTION comma-separated, e.g. finetune@1,scratch@1",
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="data-loading worker processes (0 on a shared CPU; more on a GPU)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument(
        "--out",
        default="runs/bench_fmnist",
        help="runs, results.json and table.md go here",
    )
    p.add_argument("--progress", action="store_true", help="progress bars")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    fractions = [float(x) for x in args.fractions.split(",") if x.strip()]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for s in strategies:
        if s not in STRATEGY_ORDER:
            raise SystemExit(
                f"--strategies: unknown {s!r} (expected {', '.join(STRATEGY_ORDER)})"
            )
    epochs = parse_epochs(args.epochs, fractions)
    skip = set()
    for item in filter(None, (x.strip() for x in args.skip.split(","))):
        s, _, f = item.partition("@")
        skip.add((s, float(f)))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    niceness = os.nice(0)  # record the command as it was run
    command = (
        (f"nice -n {niceness} " if niceness else "")
        + ".venv/bin/python "
        + " ".join(shlex.quote(a) for a in sys.argv)
    )
    rows: list[dict[str, Any]] = []
    for fraction in fractions:
        for strategy in [s for s in STRATEGY_ORDER if s in strategies]:
            if (strategy, fraction) in skip:
                rows.append(
                    {
                        "fraction": fraction,
                        "strategy": strategy,
                        "epochs": epochs[fraction],
                        "skipped": "--skip",
                    }
                )
                continue
            print(
                f"[{time.strftime('%H:%M:%S')}] {strategy} @ {fmt_fraction(fraction)}, {epochs[fraction]} epochs ...",
                flush=True,
            )
            row = run_cell(args, fraction, strategy, epochs[fraction])
            rows.append(row)
            print(
                f"    accuracy {row['accuracy']:.4f}  train {row['train_s']:.0f} s  eval {row['eval_s']:.0f} s",
                flush=True,
            )
            (out / "results.json").write_text(
                json.dumps(
                    {
                        "command": command,
                        "args": vars(args),
                        "torch": torch.__version__,
                        "rows": rows,
                    },
                    indent=2,
                )
                + "\n"
            )
    text = (
        f"MobileNetV2 on Fashion-MNIST, {args.image_size} px input, batch {args.batch_size}, {args.optimizer} cosine"
        f"{f' after {args.warmup_epochs:g} warm-up epochs' if args.warmup_epochs else ''}, "
        f"{args.threads} thread(s) on {args.device}; test = all {rows[0].get('test_images', 10000) if rows else 10000} "
        f"t10k images, final epoch's model\n\n{table(rows)}\n\n`{command}`\n"
    )
    (out / "results.json").write_text(
        json.dumps(
            {
                "command": command,
                "args": vars(args),
                "torch": torch.__version__,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    (out / "table.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
