"""What the task commands share: the argument groups of train / eval / predict, and the output."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable

from convision.config import add_arguments, from_args
from convision.errors import ConfigError, DataError

DEFAULTS = argparse.ArgumentDefaultsHelpFormatter


class Parser(argparse.ArgumentParser):
    """Usage errors are one line (exit 2 through ``main``), with ``--help`` as the pointer."""

    def error(self, message: str) -> None:
        command = self.prog.removeprefix(
            "convision"
        ).strip()  # main() prints "convision: error: "
        raise ConfigError(f"{command + ': ' if command else ''}{message} (see --help)")


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def add_modes(
    tasks: argparse._SubParsersAction, name: str, help_text: str
) -> argparse._SubParsersAction:
    """``convision NAME MODE ...``: the task's parser and its required mode sub-parsers."""
    parser = tasks.add_parser(name, help=help_text, description=help_text)
    modes = parser.add_subparsers(dest="mode", metavar="MODE", parser_class=Parser)
    modes.required = True
    return modes


def add_train(
    modes: argparse._SubParsersAction,
    cfg: Any,
    help_text: str,
    description: str,
    order: str = "defaults < --config YAML < flags",
) -> argparse.ArgumentParser:
    """``train``: ``--config`` YAML, ``--no-progress`` and one flag per setting of ``cfg``."""
    train = modes.add_parser(
        "train",
        help=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"{description}\nSettings: {order}.",
    )
    train.add_argument(
        "--config", help="YAML file of settings (flat keys, same names as the flags)"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_arguments(train, cfg)
    return train


def add_eval(
    modes: argparse._SubParsersAction,
    help_text: str,
    *,
    batch_size: int,
    data_help: str,
    splits: str = "train | val",
) -> argparse.ArgumentParser:
    """``eval``: the checkpoint, the data and split, batching, device."""
    ev = modes.add_parser(
        "eval", help=help_text, formatter_class=DEFAULTS, description=help_text
    )
    ev.add_argument(
        "--checkpoint",
        "--model",
        dest="checkpoint",
        required=True,
        help="a convision checkpoint (best.pt / last.pt) or an exported .onnx",
    )
    add_runtime(ev)
    ev.add_argument(
        "--data",
        default=None,
        help=f"{data_help} (default: what the model was trained on)",
    )
    ev.add_argument("--split", default="val", help=splits)
    ev.add_argument(
        "--batch-size", type=count(1), default=batch_size, help="images per batch"
    )
    ev.add_argument(
        "--workers", type=count(0), default=2, help="data-loading worker processes"
    )
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ev


def add_predict(
    modes: argparse._SubParsersAction, help_text: str, *, out_help: str | None
) -> argparse.ArgumentParser:
    """``predict``: input images, the checkpoint, the output folder, device, ``--strict``."""
    pr = modes.add_parser(
        "predict", help=help_text, formatter_class=DEFAULTS, description=help_text
    )
    pr.add_argument(
        "inputs",
        nargs="+",
        help="image files, folders or glob patterns (the model may come first instead of --checkpoint)",
    )
    pr.add_argument(
        "--checkpoint",
        "--model",
        dest="checkpoint",
        default=None,
        help="a convision checkpoint or an exported .onnx",
    )
    add_runtime(pr)
    if out_help is not None:
        pr.add_argument("--out", default="predictions", help=out_help)
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    pr.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first image that cannot be read (default: skip it, exit 2 at the end)",
    )
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    return pr


def add_runtime(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime",
        default="auto",
        choices=RUNTIMES,
        help="torch (a .pt checkpoint) | onnx (ONNX Runtime on an exported .onnx) | auto (by the file's suffix)",
    )


RUNTIMES = ("auto", "torch", "onnx")


MODEL_SUFFIXES = (".onnx", ".pt", ".pth")


def check_runtime(args: argparse.Namespace) -> None:
    """``--runtime`` must agree with the file given: ONNX Runtime runs ``.onnx`` files, PyTorch checkpoints.
    ``predict`` without ``--checkpoint`` takes the first input that is a model file
    (``convision segment predict --runtime onnx model.onnx photos/``)."""
    if getattr(args, "mode", None) == "predict" and args.checkpoint is None:
        models = [i for i in args.inputs if i.lower().endswith(MODEL_SUFFIXES)]
        if not models:
            raise ConfigError(
                "--checkpoint: give the model (a .pt checkpoint or an exported .onnx)"
            )
        args.checkpoint = models[0]
        args.inputs = [i for i in args.inputs if i != models[0]]
        if not args.inputs:
            raise ConfigError(f"predict: no input images after the model {models[0]}")
    runtime, path = (
        getattr(args, "runtime", "auto"),
        str(getattr(args, "checkpoint", "")),
    )
    onnx_file = path.lower().endswith(".onnx")
    if runtime == "onnx" and not onnx_file:
        raise ConfigError(
            f"--runtime onnx: {path} is not a .onnx file; export it first: "
            f"convision {args.task} export --checkpoint {path}"
        )
    if runtime == "torch" and onnx_file:
        raise ConfigError(
            f"--runtime torch: {path} is an ONNX file; use --runtime onnx (or auto)"
        )
    fixed = [
        k
        for k in (
            "nms_thresh",
            "score_thresh",
            "detections_per_image",
            "rpn_post_nms_test",
        )
        if getattr(args, k, None) is not None
    ]
    if onnx_file and fixed:
        raise ConfigError(
            f"--{fixed[0].replace('_', '-')}: an exported graph keeps the checkpoint's test-time settings; "
            "change them on the .pt checkpoint (PyTorch runtime)"
        )


def add_export(modes: argparse._SubParsersAction, what: str) -> argparse.ArgumentParser:
    """``export``: a checkpoint to ONNX with convision's metadata (task, classes, colours, normalisation, input size)."""
    ex = modes.add_parser(
        "export",
        help=f"export {what} to ONNX (checked against PyTorch with ONNX Runtime)",
        formatter_class=DEFAULTS,
        description=f"Export {what} to ONNX, with the metadata a runtime needs.",
    )
    ex.add_argument("--checkpoint", required=True, help="a convision checkpoint")
    ex.add_argument("--format", default="onnx", help="onnx (the only format)")
    ex.add_argument(
        "--out",
        default=None,
        help="the .onnx file (default: the checkpoint's name with .onnx)",
    )
    ex.add_argument(
        "--dynamic",
        action="store_true",
        help="free batch size (and image size for segmentation)",
    )
    ex.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: 18; detection 17)"
    )
    ex.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="side of the example image (default: the model's input or training size)",
    )
    ex.add_argument(
        "--quantize",
        default=None,
        choices=["int8"],
        help="segmentation: int8 static quantization (ONNX Runtime), calibrated on training images",
    )
    ex.add_argument(
        "--calibration",
        type=int,
        default=32,
        help="--quantize: training images used for calibration",
    )
    return ex


def export(args: argparse.Namespace) -> int:
    """Load ``--checkpoint`` (it must hold this task), export it, print what was written."""
    from convision.export import export_onnx
    from convision.export.onnx_export import FORMATS
    from convision.tasks.base import load

    if args.format not in FORMATS:
        raise ConfigError(
            f"--format: expected {' | '.join(FORMATS)}, got {args.format!r}"
        )
    out = args.out or str(
        Path(args.checkpoint).with_suffix(".int8.onnx" if args.quantize else ".onnx")
    )
    model = load(args.checkpoint, task=args.task)
    calibration = None
    if args.quantize:
        if args.task != "segment":
            raise ConfigError(
                f"--quantize: int8 export is offered for segmentation models, not {args.task}"
            )
        if args.calibration < 1:
            raise ConfigError(
                f"--calibration: expected at least 1 image, got {args.calibration}"
            )
        from convision.export.onnx_export import default_input_size
        from convision.tasks.segment import calibration_inputs

        size = None if args.dynamic else (args.image_size or default_input_size(model))
        calibration = calibration_inputs(model, args.calibration, size)
    info = export_onnx(
        model,
        out,
        dynamic=args.dynamic,
        opset=args.opset,
        image_size=args.image_size,
        quantize=args.quantize,
        calibration=calibration,
    )
    size = (
        "any size"
        if info["input_size"] is None
        else "x".join(map(str, info["input_size"]))
    )
    print(
        f"exported {info['task']} model {info['model']} to {info['path']} ({info['bytes'] / 1e6:.1f} MB, opset {info['opset']}; "
        f"inputs {', '.join(info['inputs'])} at {size}{', dynamic batch' if info['dynamic'] else ''}; "
        f"outputs {', '.join(info['outputs'])})"
    )
    print(
        f"checked with ONNX Runtime: max |ONNX - PyTorch| = {info['max_abs_diff']:.2e} on the example input"
        + (
            f"; int8: {100 * info['agreement']:.2f} % of arg-max outputs equal PyTorch's"
            if "agreement" in info
            else ""
        )
    )
    return 0


def train(
    args: argparse.Namespace,
    cfg: Any,
    run: Callable[..., dict[str, Any]],
    metric: str,
    recipe: Callable[[str], dict[str, Any]] | None = None,
) -> int:
    """Settings from defaults < the model's ``recipe`` (if any) < ``--config`` < flags, train,
    print the best epoch (rank 0)."""
    result = run(from_args(args, cfg, recipe), progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        best = result.get("best_metric")
        shown = f"{best:.4f}" if isinstance(best, float) else "n/a"
        print(
            f"best {metric} {shown} at epoch {result.get('best_epoch')}: {result['best']}"
        )
    return 0


def check_split(split: str) -> None:
    if split not in ("train", "val"):
        raise ConfigError(f"--split: expected train or val, got {split!r}")


def write_json(path: str | os.PathLike, data: Any, flag: str) -> Path:
    """Write ``data`` as JSON to ``path`` (its folder created); a folder there is a one-line error."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{flag}: {out} is a folder; give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=float))
    return out


def finish_predict(results: Any, out: str | None) -> int:
    """After the results are printed: images that could not be read make the exit status 2."""
    skipped = getattr(results, "skipped", [])
    if skipped:
        where = (
            f"; the other {len(results)} were written to {out}/"
            if out and results
            else ""
        )
        raise DataError(
            f"{skipped[0]}: could not be read ({len(skipped)} image(s) skipped{where})"
        )
    return 0
