"""``convision summary MODEL``: per-layer output shape, parameters, multiply-adds, receptive field, stride.

MODEL is a convision model name (``convision.models.MODELS``; ``classifier`` takes ``--arch``), any
torchvision classification model name (``alexnet``, ``vgg16``, ``resnet50``, ...), or the path of a
convision checkpoint. Models are built with random initialisation (``weights=None``): nothing is
downloaded. See :mod:`convision.nn.receptive_field` for what the columns mean.
"""
from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

from torch import nn


def add_parser(tasks: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``summary`` to the top-level ``tasks`` sub-parsers."""
    p = tasks.add_parser(
        "summary", help="per-layer shapes, parameters, mult-adds, receptive field and stride of a model",
        description="Summarise a model: a convision model name (fcn8s, segnet, unet, classifier --arch ...), "
                    "a torchvision classifier name (alexnet, vgg16, resnet50, ...) or a convision checkpoint (.pt). "
                    "Random weights; nothing is downloaded.",
    )
    p.add_argument("model", metavar="MODEL", help="model name or checkpoint path")
    p.add_argument("--input-size", default=None,
                   help="input side S or HxW (default: 224; a classification checkpoint's own image size)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes (default: the builder's own, e.g. 21 for FCN, 1000 for torchvision classifiers; 10 for classifier)")
    p.add_argument("--backbone", default=None, help="backbone of a segmentation model (default: the model's own; vgg16 for FCN)")
    p.add_argument("--arch", default=None, help="architecture of 'classifier' / 'localizer' (alexnet, vgg16, resnet18, ...)")
    p.add_argument("--rows", type=int, default=None, help="show at most this many rows (the first and last ones; default: all)")
    p.add_argument("--json", default=None, help="also write the summary to this JSON file")
    return p


def run(args: argparse.Namespace) -> int:
    from convision.nn.receptive_field import summarize

    _input_size(args.input_size, 224)  # a bad --input-size fails before any model is built
    model, size = build(args.model, num_classes=args.num_classes, backbone=args.backbone, arch=args.arch)
    height, width = _input_size(args.input_size, size)
    try:
        summary = summarize(model, (3, height, width))
    except (ValueError, RuntimeError) as e:  # e.g. an input too small for the network's pooling
        from convision.errors import ConfigError

        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"--input-size: {args.model} cannot run on a {height}x{width} input: {first}") from None
    print(f"{args.model}: {type(model).__name__}")
    print(summary.table(max_rows=args.rows))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"model": args.model, **summary.to_dict()}, indent=2))
        print(f"summary written to {out}")
    return 0


def _input_size(text: str | None, default: int) -> tuple[int, int]:
    from convision.errors import ConfigError

    if text is None:
        return default, default
    parts = str(text).lower().split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise ConfigError(f"--input-size: expected a side S or HxW of positive integers, got {text!r}")
    return sides[0], sides[-1]


def torchvision_classifiers() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build(name: str, *, num_classes: int | None = None, backbone: str | None = None, arch: str | None = None) -> tuple[nn.Module, int]:
    """``(model, default input side)`` for a convision model name, a torchvision classifier name or a
    checkpoint path; random weights. Raises ``ConfigError`` (one line) for anything else."""
    from convision.errors import ConfigError
    from convision.models import MODELS, build_model

    path = Path(name)
    if path.suffix in (".pt", ".pth", ".ckpt") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{name}: no such checkpoint")
        import convision

        model = convision.load(path)
        size = int((((getattr(model, "train_config", None) or {}).get("data") or {}).get("image_size")) or 224)
        return model, size
    if name in MODELS:
        params = inspect.signature(MODELS[name]).parameters
        kwargs: dict = {"weights": None}
        if "arch" in params:  # classifier, localizer: a torchvision network with a new head
            if arch is None and params["arch"].default is inspect.Parameter.empty:
                from convision.models.classification import ARCHS

                raise ConfigError(f"--arch: {name!r} needs an architecture (known: {', '.join(ARCHS)})")
            if arch is not None:
                kwargs["arch"] = arch
            if "strategy" in params:
                kwargs["strategy"] = "scratch"  # random weights
        elif arch is not None:
            raise ConfigError(f"--arch: model {name} has no arch option (use --backbone)")
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        elif "num_classes" in params and params["num_classes"].default is inspect.Parameter.empty:
            kwargs["num_classes"] = 10
        if backbone is not None:
            if "backbone" not in params:
                raise ConfigError(f"--backbone: model {name} has no backbone option")
            kwargs["backbone"] = backbone
        return build_model(name, **kwargs), 224
    known = torchvision_classifiers()
    if name in known:
        import torchvision

        kwargs = {"num_classes": num_classes} if num_classes is not None else {}
        return torchvision.models.get_model(name, weights=None, **kwargs), 224
    raise ConfigError(
        f"summary: unknown model {name!r} (accepted: convision models {', '.join(MODELS)} (classifier takes --arch); "
        f"torchvision classifiers {', '.join(known)}; or a convision checkpoint .pt)"
    )
