"""``convision classify train|eval|predict|heatmap|export``: image classification by transfer learning."""

from __future__ import annotations

import argparse
from pathlib import Path

from convision.cli import common
from convision.metrics.classification import format_table
from convision.tasks import classify

HELP = "image classification by transfer learning (8 torchvision networks)"


def add_parser(tasks: argparse._SubParsersAction) -> None:
    modes = common.add_modes(tasks, "classify", HELP)
    common.add_train(
        modes,
        classify.ClassifyConfig(),
        "train a classifier",
        "Train a classifier. Strategies: feature-extract (frozen backbone, cached features), finetune\n"
        "(head lr = head_lr_mult x lr), scratch (random weights).",
    )
    ev = common.add_eval(
        modes,
        "evaluate a checkpoint: accuracy, top-5, per-class P/R/F1, pictures",
        batch_size=32,
        data_help="data set",
    )
    ev.add_argument(
        "--out",
        default=None,
        help="folder for metrics.json, confusion_matrix.png, misclassified.png (default: next to the checkpoint, eval_<split>/)",
    )
    ev.add_argument(
        "--max-examples",
        type=common.count(0),
        default=24,
        help="misclassified examples in the grid",
    )
    pr = common.add_predict(
        modes, "classify images: top-k classes with probabilities", out_help=None
    )
    pr.add_argument(
        "--topk", type=common.count(1), default=5, help="classes shown per image"
    )
    pr.add_argument(
        "--json", default=None, help="also write the predictions to this JSON file"
    )
    common.add_export(modes, "a classifier")
    hm = modes.add_parser(
        "heatmap",
        help="class-probability map over a large image (VGG/AlexNet, one forward pass)",
        formatter_class=common.DEFAULTS,
    )
    hm.add_argument(
        "image", help="an image at least as large as the classifier's input size"
    )
    hm.add_argument(
        "--checkpoint",
        required=True,
        help="a convision classification checkpoint (vgg11, vgg16 or alexnet)",
    )
    hm.add_argument(
        "--class",
        dest="class_name",
        default=None,
        help="class to map (default: the most probable anywhere)",
    )
    hm.add_argument(
        "--scale", type=float, default=1.0, help="resize the image by this factor first"
    )
    hm.add_argument("--out", default="heatmap.png", help="PNG to write")
    hm.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def run(args: argparse.Namespace) -> int:
    if args.mode == "train":
        return common.train(args, classify.ClassifyConfig(), classify.train, "accuracy")
    return {
        "eval": _eval,
        "predict": _predict,
        "heatmap": _heatmap,
        "export": common.export,
    }[args.mode](args)


def _eval(args: argparse.Namespace) -> int:
    common.check_split(args.split)
    out = (
        Path(args.out)
        if args.out
        else Path(args.checkpoint).with_name(f"eval_{args.split}")
    )
    metrics = classify.evaluate(
        args.checkpoint,
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        progress=not args.no_progress,
        out_dir=out,
        max_examples=args.max_examples,
    )
    print(format_table(metrics, metrics["classes"]))
    common.write_json(out / "metrics.json", metrics, "--out")
    print(f"metrics, confusion_matrix.png and misclassified.png written to {out}/")
    return 0


def _predict(args: argparse.Namespace) -> int:
    results = classify.predict_to_folder(
        args.checkpoint,
        args.inputs,
        None,
        topk=args.topk,
        device=args.device,
        strict=args.strict,
        progress=not args.no_progress,
    )
    for f, top in results.items():
        print(f"{f}: " + ", ".join(f"{c} {p:.3f}" for c, p in top))
    if args.json:
        common.write_json(args.json, dict(results), "--json")
    return common.finish_predict(results, None)


def _heatmap(args: argparse.Namespace) -> int:
    r = classify.heatmap(
        args.checkpoint,
        args.image,
        class_name=args.class_name,
        out_png=args.out,
        device=args.device,
        scale=args.scale,
    )
    x1, y1, x2, y2 = (round(v) for v in r["box"])
    print(
        f"{r['class']}: best window ({x1}, {y1})-({x2}, {y2}) p={r['probability']:.3f}; "
        f"map {r['map'].shape[0]}x{r['map'].shape[1]} cells; written to {args.out}"
    )
    return 0
