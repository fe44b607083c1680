"""``convision style CONTENT STYLE --out result.png``: neural style transfer (Gatys et al. 2016).

See :mod:`convision.tasks.style`; the network's layer names are in :mod:`convision.models.style`.
"""

from __future__ import annotations

import argparse

from convision.cli import common
from convision.errors import ConfigError


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer names, got {text!r}"
        )
    return names


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def add_parser(tasks: argparse._SubParsersAction) -> None:
    from convision.models.style import DEFAULT_LAYERS, NETWORKS
    from convision.nn.style_loss import STYLE_LOSSES
    from convision.tasks.style import DEFAULT_STYLE_WEIGHT, INITS, OPTIMIZERS

    text = (
        "Neural style transfer (Gatys et al. 2016): optimise an image so that its features in a "
        "fixed network match CONTENT's and their statistics (Gram matrices, or per-channel mean "
        "and std) match STYLE's."
    )
    p = tasks.add_parser(
        "style",
        help="neural style transfer (Neural Art)",
        description=text,
        formatter_class=common.DEFAULTS,
    )
    p.add_argument("content", metavar="CONTENT", help="the content image")
    p.add_argument("style", metavar="STYLE", help="the style image")
    p.add_argument("--out", default="result.png", help="the result image")
    p.add_argument(
        "--network",
        default="mobilenet_v2",
        choices=NETWORKS,
        help="feature network (vgg19 is the paper's; mobilenet_v2's ImageNet weights work offline)",
    )
    p.add_argument(
        "--weights",
        default="IMAGENET1K_V1",
        help="the network's weights: a torchvision weights name, a local .pth, or none (random)",
    )
    p.add_argument(
        "--style-loss",
        default="gram",
        choices=STYLE_LOSSES,
        help="gram: Gram matrices (Gatys); moments: per-channel mean and std (Huang & Belongie 2017)",
    )
    defaults = "; ".join(
        f"{n}: {','.join(d['content'])} / {','.join(d['style'])}"
        for n, d in DEFAULT_LAYERS.items()
    )
    p.add_argument(
        "--content-layers",
        type=_names,
        default=None,
        help=f"comma-separated layer names (defaults, content / style: {defaults})",
    )
    p.add_argument(
        "--style-layers", type=_names, default=None, help="comma-separated layer names"
    )
    p.add_argument(
        "--style-layer-weights",
        type=_floats,
        default=None,
        help="one weight per style layer (default 1/L each)",
    )
    p.add_argument(
        "--content-weight", type=float, default=1.0, help="weight of the content loss"
    )
    p.add_argument(
        "--style-weight",
        type=float,
        default=None,
        help=f"weight of the style loss (default: gram {DEFAULT_STYLE_WEIGHT['gram']:g}, "
        f"moments {DEFAULT_STYLE_WEIGHT['moments']:g})",
    )
    p.add_argument(
        "--tv-weight", type=float, default=1e-2, help="total-variation weight"
    )
    p.add_argument("--optimizer", default="lbfgs", choices=OPTIMIZERS, help="optimiser")
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="step size (default: L-BFGS 1, Adam 0.02)",
    )
    p.add_argument(
        "--size",
        type=common.count(16),
        default=384,
        help="longer side of the result in pixels",
    )
    p.add_argument(
        "--style-size",
        type=common.count(16),
        default=None,
        help="longer side of the style image (default: --size)",
    )
    p.add_argument(
        "--steps", type=common.count(1), default=200, help="optimisation steps"
    )
    p.add_argument(
        "--init",
        default="content",
        choices=INITS,
        help="start from the content image or from noise",
    )
    p.add_argument(
        "--preserve-color",
        action="store_true",
        help="keep the content's colours (the result's luminance, the content's chrominance)",
    )
    p.add_argument(
        "--save-every",
        type=common.count(0),
        default=0,
        help="also write the image every N steps (<out stem>.stepNNNN.png)",
    )
    p.add_argument(
        "--pool",
        default="avg",
        choices=("avg", "max"),
        help="VGG: replace max pooling by average pooling, as the paper does",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed (noise start, random weights)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from convision.tasks.style import transfer

    if args.style_layer_weights is not None and not args.style_layer_weights:
        raise ConfigError("--style-layer-weights: give one number per style layer")
    result = transfer(
        args.content,
        args.style,
        out=args.out,
        network=args.network,
        weights=args.weights,
        style_loss_kind=args.style_loss,
        content_layers=args.content_layers,
        style_layers=args.style_layers,
        style_layer_weights=args.style_layer_weights,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        optimizer=args.optimizer,
        lr=args.lr,
        size=args.size,
        style_size=args.style_size,
        steps=args.steps,
        init=args.init,
        preserve_color=args.preserve_color,
        save_every=args.save_every,
        seed=args.seed,
        pool=args.pool,
        device=args.device,
        progress=not args.no_progress,
    )
    h, w = result["image"].shape[:2]
    s0, s1 = result["style_loss"]
    c0, c1 = result["content_loss"]
    print(
        f"wrote {result['out']} ({w}x{h}, {args.steps} steps): style loss {s0:.4g} -> {s1:.4g}, "
        f"content loss {c0:.4g} -> {c1:.4g}"
        + (
            f"; {len(result['intermediate'])} intermediate images"
            if result["intermediate"]
            else ""
        )
    )
    return 0
