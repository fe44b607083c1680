"""``convision classify train|eval|predict|heatmap|export``: image classification by transfer learning."""

from __future__ import annotations

import argparse
from pathlib import Path

from convision.cli import common
from convision.metrics.classification import format_table
from convision.tasks import classify
from convision.tasks.overfeat import overfeat

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
        help="class-probability map over a large image (VGG/AlexNet/MobileNetV2, one forward pass); "
        "with --scales / --localizer / --json: OverFeat detection",
        formatter_class=common.DEFAULTS,
        description="Without the OverFeat options: one pass of the convolutionalized classifier, the "
        "map and the best window. With --scales, --localizer or --json: OverFeat (Sermanet et al. 2014) -- "
        "dense evaluation at every scale, the localizer's box regressor at every window, greedy merging "
        "of the boxes across windows and scales; the picture shows the windows, the merged boxes and "
        "the class map, --json gets the detections.",
    )
    hm.add_argument(
        "image", help="an image at least as large as the classifier's input size"
    )
    hm.add_argument(
        "--checkpoint",
        required=True,
        help="a convision classification checkpoint (vgg11, vgg16, alexnet or mobilenet_v2)",
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
    of = hm.add_argument_group("OverFeat detection")
    of.add_argument(
        "--scales",
        default=None,
        help="input scales evaluated densely, e.g. 1.0,1.4,2.0; unset: the one --scale",
    )
    of.add_argument(
        "--localizer",
        default=None,
        help="a convision localization checkpoint: its box head regresses a box at every window",
    )
    of.add_argument(
        "--regress",
        default="dense",
        help="dense: the localizer's box head slid over the whole image (OverFeat, one pass per scale) | "
        "crops: the localizer on each kept window's crop (as trained; one pass per window)",
    )
    of.add_argument(
        "--top-classes",
        type=common.count(1),
        default=1,
        help="classes kept per scale (the most probable anywhere); --class keeps one",
    )
    of.add_argument(
        "--background",
        default="background",
        help="the classifier's no-object class, never reported ('' if it has none)",
    )
    of.add_argument(
        "--min-prob",
        type=float,
        default=0.5,
        help="windows whose class probability is below this are dropped",
    )
    of.add_argument(
        "--merge-threshold",
        type=float,
        default=1.0,
        help="merge boxes while the best match score (centre distance / side + 1 - IoU) is at most this",
    )
    of.add_argument(
        "--max-detections",
        type=common.count(1),
        default=5,
        help="detections reported, highest summed score first",
    )
    of.add_argument(
        "--box-format",
        default="xyxy",
        help="boxes in --json: xyxy | xywh (the notes' x,y,w,h) | cxcywh",
    )
    of.add_argument("--json", default=None, help="write the detections here")


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
    if args.scales is not None or args.localizer or args.json:
        return _overfeat(args)
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


def _overfeat(args: argparse.Namespace) -> int:
    r = overfeat(
        args.checkpoint,
        args.image,
        scales=args.scales if args.scales is not None else [args.scale],
        localizer=args.localizer,
        class_name=args.class_name,
        top_classes=args.top_classes,
        background=args.background or None,
        min_prob=args.min_prob,
        merge_threshold=args.merge_threshold,
        max_detections=args.max_detections,
        box_format=args.box_format,
        regress=args.regress,
        out_png=args.out,
        device=args.device,
    )
    kept = ", ".join(
        f"{s['scale']:g}: {s['map'][0]}x{s['map'][1]} cells, {s['windows']} kept"
        for s in r["scales"]
    )
    print(f"scales {kept}")
    for d in r["detections"]:
        box = ", ".join(f"{v:.1f}" for v in d["box"])
        print(
            f"{d['class']}: score {d['score']:.2f} from {d['windows']} window(s), "
            f"box {args.box_format} [{box}]"
        )
    if not r["detections"]:
        print(f"no window reached p >= {args.min_prob:g}")
    if args.json:
        common.write_json(args.json, r, "--json")
    print(
        f"picture written to {args.out}"
        + (f", detections to {args.json}" if args.json else "")
    )
    return 0
