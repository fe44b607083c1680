"""``convision segment train|eval|predict|export``: semantic segmentation (FCN, SegNet, DeconvNet, U-Net, dilated)."""

from __future__ import annotations

import argparse
from pathlib import Path

from convision.cli import common
from convision.errors import ConfigError
from convision.metrics.object_size import (
    COCO_THRESHOLDS,
    format_size_table,
    parse_thresholds,
)
from convision.metrics.segmentation import format_table
from convision.models.segmentation import describe_recipes, recipe
from convision.nn.crf import CRF_DEFAULTS
from convision.tasks import segment

HELP = "semantic segmentation: FCN-32s/16s/8s, SegNet, DeconvNet, U-Net, dilated convolutions"


def add_parser(tasks: argparse._SubParsersAction) -> None:
    modes = common.add_modes(tasks, "segment", HELP)
    common.add_train(
        modes,
        segment.SegmentConfig(),
        "train a model",
        "Train a segmentation model. Each architecture starts from its own recipe (measured on real\n"
        "photographs, BENCHMARKS.md), which replaces the generic defaults shown per flag below:\n"
        + describe_recipes(),
        order="defaults < the model's recipe < --config YAML < flags",
    )
    ev = common.add_eval(
        modes,
        "evaluate a checkpoint on a whole split: pixel accuracy, mIoU, boundary F",
        batch_size=4,
        data_help="'synthetic' or a data set folder",
    )
    ev.add_argument(
        "--format", default="auto", help="folder layout: auto | folder | voc"
    )
    ev.add_argument(
        "--json",
        default=None,
        help="write the metrics here (default: next to the checkpoint, eval_<split>.json)",
    )
    ev.add_argument(
        "--size-thresholds",
        default=",".join(map(str, COCO_THRESHOLDS)),
        metavar="A1,A2",
        help="object-size buckets: areas in pixels splitting small / medium / large "
        "(COCO's 32^2,96^2); 'none' skips the by-size table",
    )
    _add_crf_arguments(ev)
    pr = common.add_predict(
        modes,
        "segment images and write masks, colour masks and overlays",
        out_help="output folder (masks/, color/, overlay/, predictions.json)",
    )
    common.add_export(modes, "a segmentation model")
    pr.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    _add_crf_arguments(pr)


def run(args: argparse.Namespace) -> int:
    if args.mode == "train":
        return common.train(
            args, segment.SegmentConfig(), segment.train, "mIoU", recipe=recipe
        )
    if args.mode == "eval":
        return _eval(args)
    if args.mode == "export":
        return common.export(args)
    return _predict(args)


def _eval(args: argparse.Namespace) -> int:
    common.check_split(args.split)
    crf = _crf_from_args(args)
    thresholds = _size_thresholds(args.size_thresholds)
    metrics = segment.evaluate(
        args.checkpoint,
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        progress=not args.no_progress,
        fmt=args.format,
        crf=crf,
        size_thresholds=thresholds,
    )
    print(format_table(metrics, metrics["classes"]))
    if "by_size" in metrics:
        print()
        print(format_size_table(metrics["by_size"]))
    out = common.write_json(
        args.json or Path(args.checkpoint).with_name(f"eval_{args.split}.json"),
        metrics,
        "--json",
    )
    print(f"metrics written to {out}")
    return 0


def _size_thresholds(text: str) -> tuple[int, ...] | None:
    if text.strip().lower() == "none":
        return None
    try:
        return parse_thresholds(text)
    except ValueError as e:
        raise ConfigError(f"--size-thresholds: {e}") from None


def _predict(args: argparse.Namespace) -> int:
    crf = _crf_from_args(args)
    results = segment.predict_to_folder(
        args.checkpoint,
        args.inputs,
        args.out,
        alpha=args.alpha,
        device=args.device,
        crf=crf,
        strict=args.strict,
        progress=not args.no_progress,
    )
    print(
        f"{len(results)} image(s) segmented; masks, colour masks and overlays in {args.out}/"
    )
    return common.finish_predict(results, args.out)


def _add_crf_arguments(parser: argparse.ArgumentParser) -> None:
    """``--crf`` and one flag per dense-CRF setting (segment eval / predict)."""
    group = parser.add_argument_group(
        "dense CRF (Krähenbühl & Koltun 2011; needs pip install 'convision[crf]')"
    )
    group.add_argument(
        "--crf",
        action="store_true",
        help="refine each image's softmax with a fully connected CRF (eval: one image at a time)",
    )
    meaning = {
        "iterations": "mean-field iterations",
        "sxy_gaussian": "smoothness kernel: spatial std (px)",
        "compat_gaussian": "smoothness kernel: weight",
        "sxy_bilateral": "appearance kernel: spatial std (px)",
        "srgb_bilateral": "appearance kernel: colour std (0..255)",
        "compat_bilateral": "appearance kernel: weight",
    }
    for key, default in CRF_DEFAULTS.items():
        kind = int if key == "iterations" else float
        # default SUPPRESS: a flag given without --crf is reported instead of silently unused
        group.add_argument(
            f"--crf-{key.replace('_', '-')}",
            type=kind,
            default=argparse.SUPPRESS,
            metavar="N" if kind is int else "X",
            help=f"{meaning[key]} (default {default:g})",
        )


def _crf_from_args(args: argparse.Namespace) -> dict | None:
    given = {
        key: getattr(args, f"crf_{key}")
        for key in CRF_DEFAULTS
        if hasattr(args, f"crf_{key}")
    }
    if not args.crf:
        if given:
            raise ConfigError(
                f"--crf-{next(iter(given)).replace('_', '-')}: needs --crf"
            )
        return None
    return given
