"""``convision classify train|eval|predict|heatmap``.

Same conventions as ``convision segment``: settings are defaults < ``--config`` YAML < flags,
``--help`` shows every default, user errors are one line on stderr with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from convision.config import add_arguments, from_args


def add_parser(tasks: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``classify`` and its modes to the top-level ``tasks`` sub-parsers."""
    from convision.tasks.classify import ClassifyConfig

    fmt = argparse.ArgumentDefaultsHelpFormatter
    cls = tasks.add_parser("classify", help="image classification by transfer learning (8 torchvision networks)")
    modes = cls.add_subparsers(dest="mode", metavar="MODE", parser_class=type(cls))
    modes.required = True

    train = modes.add_parser("train", help="train a classifier", formatter_class=argparse.RawDescriptionHelpFormatter,
                             description="Train a classifier. Settings: defaults < --config YAML < flags.\n"
                                         "Strategies: feature-extract (frozen backbone, cached features), finetune "
                                         "(head lr = head_lr_mult x lr), scratch (random weights).")
    train.add_argument("--config", help="YAML file of settings (flat keys, same names as the flags)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_arguments(train, ClassifyConfig())

    ev = modes.add_parser("eval", help="evaluate a checkpoint: accuracy, top-5, per-class P/R/F1, pictures", formatter_class=fmt)
    ev.add_argument("--checkpoint", required=True, help="a convision classification checkpoint (best.pt / last.pt)")
    ev.add_argument("--data", default=None, help="data set (default: what the model was trained on)")
    ev.add_argument("--split", default="val", help="train | val")
    ev.add_argument("--batch-size", type=int, default=32, help="images per batch")
    ev.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ev.add_argument("--out", default=None, help="folder for metrics JSON, confusion_matrix.png, misclassified.png (default: next to the checkpoint, eval_<split>/)")
    ev.add_argument("--max-examples", type=int, default=24, help="misclassified examples in the grid")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")

    pr = modes.add_parser("predict", help="classify images: top-k classes with probabilities", formatter_class=fmt)
    pr.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    pr.add_argument("--checkpoint", required=True, help="a convision classification checkpoint")
    pr.add_argument("--topk", type=int, default=5, help="classes shown per image")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    pr.add_argument("--json", default=None, help="also write the predictions to this JSON file")

    hm = modes.add_parser("heatmap", help="class-probability map over a large image (VGG/AlexNet, one forward pass)", formatter_class=fmt)
    hm.add_argument("image", help="an image at least as large as the classifier's input size")
    hm.add_argument("--checkpoint", required=True, help="a convision classification checkpoint (vgg11, vgg16 or alexnet)")
    hm.add_argument("--class", dest="class_name", default=None, help="class to map (default: the most probable anywhere)")
    hm.add_argument("--scale", type=float, default=1.0, help="resize the image by this factor first")
    hm.add_argument("--out", default="heatmap.png", help="PNG to write")
    hm.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return cls


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "eval": _eval, "predict": _predict, "heatmap": _heatmap}[args.mode](args)


def _train(args: argparse.Namespace) -> int:
    from convision.tasks.classify import ClassifyConfig, train

    cfg = from_args(args, ClassifyConfig())
    result = train(cfg, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        best = result.get("best_metric")
        shown = f"{best:.4f}" if isinstance(best, float) else "n/a"
        print(f"best accuracy {shown} at epoch {result.get('best_epoch')}: {result['best']}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from convision.errors import ConfigError
    from convision.metrics.classification import format_table
    from convision.tasks.classify import evaluate

    if args.split not in ("train", "val"):
        raise ConfigError(f"--split: expected train or val, got {args.split!r}")
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name(f"eval_{args.split}")
    metrics = evaluate(args.checkpoint, args.data, split=args.split, batch_size=args.batch_size, workers=args.workers,
                       device=args.device, progress=not args.no_progress, out_dir=out, max_examples=args.max_examples)
    print(format_table(metrics, metrics["classes"]))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"metrics, confusion_matrix.png and misclassified.png written to {out}/")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from convision.api import _resolve_device, expand_inputs
    from convision.tasks.classify import load, predict

    model = load(args.checkpoint, device=_resolve_device(args.device))
    files = expand_inputs(args.inputs)
    results = predict(model, [str(f) for f in files], topk=args.topk, device=args.device)
    for f, top in zip(files, results):
        print(f"{f}: " + ", ".join(f"{c} {p:.3f}" for c, p in top))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({str(f): top for f, top in zip(files, results)}, indent=2))
    return 0


def _heatmap(args: argparse.Namespace) -> int:
    from convision.tasks.classify import heatmap

    r = heatmap(args.checkpoint, args.image, class_name=args.class_name, out_png=args.out, device=args.device, scale=args.scale)
    x1, y1, x2, y2 = (round(v) for v in r["box"])
    print(f"{r['class']}: best window ({x1}, {y1})-({x2}, {y2}) p={r['probability']:.3f}; "
          f"map {r['map'].shape[0]}x{r['map'].shape[1]} cells; written to {args.out}")
    return 0
