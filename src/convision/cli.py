"""Command line: ``convision segment|classify|localize|detect ...``, ``convision summary``, ``convision demo``.

Exit codes: 0 success, 2 bad input or usage (one line on stderr), 1 internal error,
130 interrupted. ``--debug`` (anywhere on the line) shows tracebacks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

from convision import __version__
from convision.config import SegmentConfig, add_arguments, from_args
from convision.errors import ConvisionError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, usage on request only
        raise ConvisionError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(prog="convision", description="Classic CNN vision: train, evaluate and run segmentation models.")
    parser.add_argument("--version", action="version", version=f"convision {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", parser_class=_Parser)
    tasks.required = True

    seg = tasks.add_parser("segment", help="semantic segmentation (FCN-32s/16s/8s)")
    modes = seg.add_subparsers(dest="mode", metavar="MODE", parser_class=_Parser)
    modes.required = True

    train = modes.add_parser("train", help="train a model", formatter_class=argparse.RawDescriptionHelpFormatter,
                             description="Train a segmentation model. Settings: defaults < --config YAML < flags.")
    train.add_argument("--config", help="YAML file of settings (flat keys, same names as the flags)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_arguments(train, SegmentConfig())

    ev = modes.add_parser("eval", help="evaluate a checkpoint on a whole split", formatter_class=fmt)
    ev.add_argument("--checkpoint", required=True, help="a convision checkpoint (best.pt / last.pt)")
    ev.add_argument("--data", default=None, help="'synthetic' or a data set folder (default: what the model was trained on)")
    ev.add_argument("--format", default="auto", help="folder layout: auto | folder | voc")
    ev.add_argument("--split", default="val", help="train | val")
    ev.add_argument("--batch-size", type=int, default=4, help="images per batch (padded to the largest)")
    ev.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ev.add_argument("--json", default=None, help="write the metrics here (default: next to the checkpoint)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_crf_arguments(ev)

    pr = modes.add_parser("predict", help="segment images and write masks, colour masks and overlays", formatter_class=fmt)
    pr.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    pr.add_argument("--checkpoint", required=True, help="a convision checkpoint")
    pr.add_argument("--out", default="predictions", help="output folder (masks/, color/, overlay/)")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    pr.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    _add_crf_arguments(pr)

    from convision.commands.classify import add_parser as add_classify

    add_classify(tasks)
    from convision.commands.summary import add_parser as add_summary

    add_summary(tasks)

    from convision.commands.localize import add_parser as add_localize

    add_localize(tasks)

    from convision.commands.detect import add_parser as add_detect

    add_detect(tasks)

    demo = tasks.add_parser("demo", help="train FCN-8s on the built-in scenes, evaluate, write pictures", formatter_class=fmt)
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--epochs", type=int, default=None, help="override the demo's epoch count")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        args = build_parser().parse_args(argv)
        if args.task == "segment":
            return {"train": cmd_train, "eval": cmd_eval, "predict": cmd_predict}[args.mode](args)
        if args.task == "classify":
            from convision.commands.classify import run as run_classify

            return run_classify(args)
        if args.task == "summary":
            from convision.commands.summary import run as run_summary

            return run_summary(args)
        if args.task == "localize":
            from convision.commands.localize import run as run_localize

            return run_localize(args)
        if args.task == "detect":
            from convision.commands.detect import run as run_detect

            return run_detect(args)
        if args.task == "demo":
            from convision.demo import run_demo

            return run_demo(out=args.out, epochs=args.epochs, progress=not args.no_progress)
        return 2
    except ConvisionError as e:
        if debug:
            traceback.print_exc()
        print(f"convision: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convision: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in convision, or an error a DataLoader worker wrapped
        wrapped = _wrapped_convision_error(e)
        if wrapped is not None:
            if debug:
                traceback.print_exc()
            print(f"convision: error: {wrapped}", file=sys.stderr)
            return 2
        if debug:
            traceback.print_exc()
        print(f"convision: internal error: {type(e).__name__}: {_one_line(e)} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _wrapped_convision_error(e: BaseException) -> str | None:
    """DataLoader workers re-raise errors with the worker's traceback in the message."""
    text = str(e)
    for line in reversed(text.strip().splitlines()):
        for name in ("DataError", "ConfigError", "CheckpointError", "ConvisionError"):
            marker = f"convision.errors.{name}: "
            if line.startswith(marker):
                return line[len(marker):]
    return None


def cmd_train(args: argparse.Namespace) -> int:
    from convision.api import train

    cfg = from_args(args)
    result = train(cfg, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best {result.get('best_metric', float('nan')):.4f} mIoU at epoch {result.get('best_epoch')}: {result['best']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from convision.api import evaluate
    from convision.metrics.segmentation import format_table

    metrics = evaluate(args.checkpoint, args.data, split=args.split, batch_size=args.batch_size, workers=args.workers,
                       device=args.device, progress=not args.no_progress, fmt=args.format, crf=_crf_from_args(args))
    print(format_table(metrics, metrics["classes"]))
    out = Path(args.json) if args.json else Path(args.checkpoint).with_name(f"eval_{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2))
    print(f"metrics written to {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from convision.api import load, predict_to_folder

    crf = _crf_from_args(args)
    model = load(args.checkpoint, device=_device(args.device))
    written = predict_to_folder(model, args.inputs, args.out, alpha=args.alpha, device=args.device, crf=crf)
    print(f"{written} image(s) segmented; masks, colour masks and overlays in {args.out}/")
    return 0


def _add_crf_arguments(parser: argparse.ArgumentParser) -> None:
    """``--crf`` and one flag per dense-CRF setting (segment eval / predict)."""
    from convision.nn.crf import CRF_DEFAULTS

    group = parser.add_argument_group("dense CRF (Krähenbühl & Koltun 2011; needs pip install 'convision[crf]')")
    group.add_argument("--crf", action="store_true",
                       help="refine each image's softmax with a fully connected CRF (eval: one image at a time)")
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
        group.add_argument(f"--crf-{key.replace('_', '-')}", type=kind, default=argparse.SUPPRESS,
                           metavar="N" if kind is int else "X", help=f"{meaning[key]} (default {default:g})")


def _crf_from_args(args: argparse.Namespace) -> dict | None:
    from convision.nn.crf import CRF_DEFAULTS

    given = {key: getattr(args, f"crf_{key}") for key in CRF_DEFAULTS if hasattr(args, f"crf_{key}")}
    if not args.crf:
        if given:
            from convision.errors import ConfigError

            raise ConfigError(f"--crf-{next(iter(given)).replace('_', '-')}: needs --crf")
        return None
    return given


def _device(text: str):
    from convision.api import _resolve_device

    return _resolve_device(text)


if __name__ == "__main__":
    raise SystemExit(main())
