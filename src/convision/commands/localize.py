"""``convision localize train|eval|predict``: single-object localization (class + one box).

Same conventions as ``convision classify``: settings are defaults < ``--config`` YAML < flags,
``--help`` shows every default, user errors are one line on stderr with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from convision.config import add_arguments, from_args


def add_parser(tasks: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``localize`` and its modes to the top-level ``tasks`` sub-parsers."""
    from convision.tasks.localize import LocalizeConfig

    fmt = argparse.ArgumentDefaultsHelpFormatter
    loc = tasks.add_parser("localize", help="single-object localization: class + box (OverFeat-style heads on a torchvision network)")
    modes = loc.add_subparsers(dest="mode", metavar="MODE", parser_class=type(loc))
    modes.required = True

    train = modes.add_parser("train", help="train a localizer", formatter_class=argparse.RawDescriptionHelpFormatter,
                             description="Train a localizer (class head + box head). Settings: defaults < --config YAML < flags.\n"
                                         "Loss: cross-entropy + box_weight x box loss (mse | smooth_l1) on normalised (cx, cy, w, h).")
    train.add_argument("--config", help="YAML file of settings (flat keys, same names as the flags)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_arguments(train, LocalizeConfig())

    ev = modes.add_parser("eval", help="evaluate a checkpoint: accuracy (class right and IoU > 0.5), mean IoU, class accuracy", formatter_class=fmt)
    ev.add_argument("--checkpoint", required=True, help="a convision localization checkpoint (best.pt / last.pt)")
    ev.add_argument("--data", default=None, help="'synthetic' or an annotation file (default: what the model was trained on)")
    ev.add_argument("--split", default="val", help="train | val")
    ev.add_argument("--batch-size", type=int, default=32, help="images per batch")
    ev.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ev.add_argument("--json", default=None, help="write the metrics here (default: next to the checkpoint, eval_<split>.json)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")

    pr = modes.add_parser("predict", help="localize images: draw the box, class and score; write predictions.json", formatter_class=fmt)
    pr.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    pr.add_argument("--checkpoint", required=True, help="a convision localization checkpoint")
    pr.add_argument("--out", default="predictions", help="output folder (<stem>.png with the box drawn, predictions.json)")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return loc


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "eval": _eval, "predict": _predict}[args.mode](args)


def _train(args: argparse.Namespace) -> int:
    from convision.tasks.localize import LocalizeConfig, train

    cfg = from_args(args, LocalizeConfig())
    result = train(cfg, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        best = result.get("best_metric")
        shown = f"{best:.4f}" if isinstance(best, float) else "n/a"
        print(f"best accuracy (class and IoU > 0.5) {shown} at epoch {result.get('best_epoch')}: {result['best']}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from convision.errors import ConfigError
    from convision.metrics.localization import format_table
    from convision.tasks.localize import evaluate

    if args.split not in ("train", "val"):
        raise ConfigError(f"--split: expected train or val, got {args.split!r}")
    metrics = evaluate(args.checkpoint, args.data, split=args.split, batch_size=args.batch_size, workers=args.workers,
                       device=args.device, progress=not args.no_progress)
    print(format_table(metrics))
    out = Path(args.json) if args.json else Path(args.checkpoint).with_name(f"eval_{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2))
    print(f"metrics written to {out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from convision.api import _resolve_device
    from convision.tasks.localize import load, predict_to_folder

    model = load(args.checkpoint, device=_resolve_device(args.device))
    results = predict_to_folder(model, args.inputs, args.out, device=args.device)
    for f, p in results.items():
        x1, y1, x2, y2 = p["box"]
        print(f"{f}: {p['class']} {p['score']:.3f} box ({x1:.1f}, {y1:.1f})-({x2:.1f}, {y2:.1f})")
    print(f"{len(results)} image(s) localized; pictures and predictions.json in {args.out}/")
    return 0
