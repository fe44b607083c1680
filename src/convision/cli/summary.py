"""``convision summary MODEL``: per-layer output shape, parameters, multiply-adds, receptive field, stride.

MODEL is a convision model name (``convision.models.MODELS``; ``classifier`` takes ``--backbone``), any
torchvision classification model name (``alexnet``, ``vgg16``, ``resnet50``, ...), or the path of a
convision checkpoint. Models are built with random initialisation (``weights=None``): nothing is
downloaded. See :mod:`convision.nn.receptive_field` for what the columns mean.
"""

from __future__ import annotations

import argparse

from convision.cli import common
from convision.config import deprecated
from convision.errors import ConfigError
from convision.nn.receptive_field import summarize
from convision.tasks.summary import build


def add_parser(tasks: argparse._SubParsersAction) -> None:
    p = tasks.add_parser(
        "summary",
        help="per-layer shapes, parameters, mult-adds, receptive field and stride of a model",
        description="Summarise a model: a convision model name (fcn8s, segnet, unet, classifier --backbone ...), "
        "a torchvision classifier name (alexnet, vgg16, resnet50, ...) or a convision checkpoint (.pt). "
        "Random weights; nothing is downloaded.",
    )
    p.add_argument("model", metavar="MODEL", help="model name or checkpoint path")
    p.add_argument(
        "--input-size",
        default=None,
        help="input side S or HxW (default: 224; a classification checkpoint's own image size)",
    )
    p.add_argument(
        "--num-classes",
        type=common.count(1),
        default=None,
        help="classes (default: the builder's own, e.g. 21 for FCN, 1000 for torchvision classifiers; 10 for classifier)",
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="backbone network (default: the model's own, vgg16 for FCN; classifier / localizer: "
        "needed, alexnet, vgg16, resnet18, ...)",
    )
    p.add_argument(
        "--arch", default=None, help=argparse.SUPPRESS
    )  # deprecated name of --backbone
    p.add_argument(
        "--rows",
        type=common.count(1),
        default=None,
        help="show at most this many rows (the first and last ones; default: all)",
    )
    p.add_argument(
        "--json", default=None, help="also write the summary to this JSON file"
    )


def run(args: argparse.Namespace) -> int:
    _input_size(
        args.input_size, 224
    )  # a bad --input-size fails before any model is built
    if args.arch is not None:
        deprecated("arch", "backbone", "command line")
        args.backbone = args.backbone or args.arch
    model, size = build(
        args.model, num_classes=args.num_classes, backbone=args.backbone
    )
    height, width = _input_size(args.input_size, size)
    try:
        summary = summarize(model, (3, height, width))
    except (
        ValueError,
        RuntimeError,
    ) as e:  # e.g. an input too small for the network's pooling
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"--input-size: {args.model} cannot run on a {height}x{width} input: {first}"
        ) from None
    print(f"{args.model}: {type(model).__name__}")
    print(summary.table(max_rows=args.rows))
    if args.json:
        out = common.write_json(
            args.json, {"model": args.model, **summary.to_dict()}, "--json"
        )
        print(f"summary written to {out}")
    return 0


def _input_size(text: str | None, default: int) -> tuple[int, int]:
    if text is None:
        return default, default
    parts = str(text).lower().split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise ConfigError(
            f"--input-size: expected a side S or HxW of positive integers, got {text!r}"
        )
    return sides[0], sides[-1]
