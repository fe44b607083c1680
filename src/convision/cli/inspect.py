"""``convision inspect MODEL --image x.jpg --out dir/``: feature maps, first-layer filters,
deconvnet / guided-backprop / gradient projections and top patches (:mod:`convision.inspect`)."""

from __future__ import annotations

import argparse

from convision.cli import common
from convision.errors import DataError
from convision.inspect import inspect_model


def add_parser(tasks: argparse._SubParsersAction) -> None:
    p = tasks.add_parser(
        "inspect",
        help="see inside a network: feature maps, filters, deconvnet projections, top patches",
        description="Pictures of what a network computes on one image (Zeiler & Fergus 2014): "
        "first-layer filters, feature maps of layers spread over the network, the deconvnet "
        "projection of a layer's strongest activations next to guided backpropagation and the "
        "gradient, and (--patches) the image patches of a folder that excite a channel most. "
        "MODEL: a torchvision classifier (alexnet, vgg16, resnet18, mobilenet_v2, ...), a "
        "convision model name (as in convision summary) or a convision checkpoint.",
    )
    p.add_argument("model", metavar="MODEL", help="model name or checkpoint path")
    p.add_argument("--image", required=True, help="the image to look at")
    p.add_argument("--out", required=True, help="output folder for the PNGs")
    p.add_argument(
        "--layer",
        default=None,
        help="module name of the layer to project (default: the feature extractor's last convolution)",
    )
    p.add_argument(
        "--channel",
        type=common.count(0),
        default=None,
        help="channel for the projections' first row and --patches (default: the most active)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="torchvision weights, e.g. IMAGENET1K_V1 (offline: mobilenet_v2 only); default random",
    )
    p.add_argument("--backbone", default=None, help="a convision model's backbone")
    p.add_argument(
        "--num-classes",
        type=common.count(1),
        default=None,
        help="a model name's classes",
    )
    p.add_argument(
        "--size", type=common.count(16), default=None, help="input side (default 224)"
    )
    p.add_argument(
        "--top-k",
        type=common.count(1),
        default=16,
        help="feature maps per layer (default 16)",
    )
    p.add_argument(
        "--max-layers",
        type=common.count(1),
        default=8,
        help="layers with map grids (default 8)",
    )
    p.add_argument(
        "--projections",
        type=common.count(1),
        default=4,
        help="channels projected (rows of the projection picture; default 4)",
    )
    p.add_argument(
        "--patches",
        default=None,
        metavar="FOLDER",
        help="images whose patches exciting the channel most are shown (top 9)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not Path(args.image).is_file():
        raise DataError(f"--image: {args.image}: no such file")
    report = inspect_model(
        args.model,
        args.image,
        args.out,
        layer=args.layer,
        channel=args.channel,
        top_k=args.top_k,
        max_layers=args.max_layers,
        projections=args.projections,
        patches=args.patches,
        weights=args.weights,
        backbone=args.backbone,
        num_classes=args.num_classes,
        size=args.size,
    )
    print(
        f"{args.model}: layer {report['layer']}, channel {report['channel']} "
        f"({report['projection']}); {len(report['files'])} picture(s) in {args.out}/"
    )
    for name in report["files"]:
        print(f"  {name}")
    return 0
