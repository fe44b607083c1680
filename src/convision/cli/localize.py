"""``convision localize train|eval|predict|export``: single-object localization (class + one box)."""

from __future__ import annotations

import argparse
from pathlib import Path

from convision.cli import common
from convision.metrics.localization import format_table
from convision.tasks import localize

HELP = "single-object localization: class + box (OverFeat-style heads on a torchvision network)"


def add_parser(tasks: argparse._SubParsersAction) -> None:
    modes = common.add_modes(tasks, "localize", HELP)
    common.add_train(
        modes,
        localize.LocalizeConfig(),
        "train a localizer",
        "Train a localizer (class head + box head).\n"
        "Loss: cross-entropy + box_weight x box loss (mse | smooth_l1) on normalised (cx, cy, w, h).",
    )
    ev = common.add_eval(
        modes,
        "evaluate a checkpoint: accuracy (class right and IoU > 0.5), mean IoU, class accuracy",
        batch_size=32,
        data_help="'synthetic' or an annotation file",
    )
    ev.add_argument(
        "--box-format",
        default=None,
        help="boxes in --data's annotation file: xyxy | xywh | cxcywh (default: the training setting)",
    )
    ev.add_argument(
        "--json",
        default=None,
        help="write the metrics here (default: next to the checkpoint, eval_<split>.json)",
    )
    common.add_predict(
        modes,
        "localize images: draw the box, class and score; write predictions.json",
        out_help="output folder (<stem>.png with the box drawn, predictions.json)",
    )
    common.add_export(modes, "a localizer")


def run(args: argparse.Namespace) -> int:
    if args.mode == "train":
        return common.train(
            args,
            localize.LocalizeConfig(),
            localize.train,
            "accuracy (class and IoU > 0.5)",
        )
    return {"eval": _eval, "predict": _predict, "export": common.export}[args.mode](
        args
    )


def _eval(args: argparse.Namespace) -> int:
    common.check_split(args.split)
    metrics = localize.evaluate(
        args.checkpoint,
        args.data,
        split=args.split,
        box_format=args.box_format,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        progress=not args.no_progress,
    )
    print(format_table(metrics))
    out = common.write_json(
        args.json or Path(args.checkpoint).with_name(f"eval_{args.split}.json"),
        metrics,
        "--json",
    )
    print(f"metrics written to {out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    results = localize.predict_to_folder(
        args.checkpoint,
        args.inputs,
        args.out,
        device=args.device,
        strict=args.strict,
        progress=not args.no_progress,
    )
    for f, p in results.items():
        x1, y1, x2, y2 = p["box"]
        print(
            f"{f}: {p['class']} {p['score']:.3f} box ({x1:.1f}, {y1:.1f})-({x2:.1f}, {y2:.1f})"
        )
    print(
        f"{len(results)} image(s) localized; pictures and predictions.json in {args.out}/"
    )
    return common.finish_predict(results, args.out)
