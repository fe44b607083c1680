"""Segmentation at batch 1 on the CPU, step by step: PyTorch eager -> ONNX Runtime (float) -> ONNX
Runtime int8 (static quantization calibrated on training images, ``convision segment export
--quantize int8``); latency / frames per second of each step and the accuracy of each on the
built-in scenes, in one run.

* accuracy: the given checkpoint (e.g. ``make demo``'s FCN-8s MobileNetV2) evaluated on its own
  validation split by ``convision.evaluate`` three times: the ``.pt``, its float ``.onnx`` and its
  int8 ``.onnx`` (calibrated on ``--calibration`` training images);
* speed: the same network exported at ``--sizes`` (square), model only (normalised input ->
  logits) and end to end with the numpy runtime (PNG decode, normalise, infer, arg-max:
  ``OnnxModel.predict``); PyTorch end to end is ``convision.predict`` on the decoded array.
  ``--extra`` adds networks with random weights (speed only): ``unet`` (MobileNetV2 encoder),
  ``fcn8s_vgg16`` (the paper's).

    OMP_NUM_THREADS=1 .venv/bin/python bench/onnx_int8.py --checkpoint runs/demo/best.pt [--sizes 320,512] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from onnx_speed import median_ms  # bench/ is the script's folder
from PIL import Image

import convision
from convision.export import export_onnx
from convision.export.runtime import OnnxModel
from convision.models import build_model
from convision.tasks.segment import calibration_inputs

EXTRA = {
    "unet": ("unet", {"backbone": "mobilenet_v2", "weights": "IMAGENET1K_V1"}),
    "fcn8s_vgg16": ("fcn8s", {"backbone": "vgg16", "weights": None}),
}


def warm_median_ms(fn, runs: int) -> float:
    fn()  # warm-up
    return median_ms(fn, runs)


def speed_rows(
    name: str,
    model: torch.nn.Module,
    size: int,
    tmp: Path,
    calibration: int,
    runs: int,
    threads: int,
) -> None:
    f32, i8 = tmp / f"{name}_{size}.onnx", tmp / f"{name}_{size}.int8.onnx"
    export_onnx(model, f32, image_size=size)
    export_onnx(
        model,
        i8,
        image_size=size,
        quantize="int8",
        calibration=calibration_inputs(model, calibration, size),
    )
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        buf, format="PNG"
    )
    png = buf.getvalue()
    x = torch.from_numpy(calibration_inputs(model, 1, size)[0])
    decode = lambda: np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))  # noqa: E731
    rows = []
    with torch.inference_mode():
        eager_model = warm_median_ms(lambda: model(x), runs)
        eager_e2e = warm_median_ms(
            lambda: convision.predict(model, decode(), device="cpu"), runs
        )
    rows.append(("PyTorch eager", eager_model, eager_e2e))
    for label, path in (("ONNX Runtime float", f32), ("ONNX Runtime int8", i8)):
        rt = OnnxModel(path, threads=threads)
        feeds = {rt.input_names[0]: x.numpy()}
        rows.append(
            (
                label,
                warm_median_ms(lambda: rt.run(**feeds), runs),
                warm_median_ms(lambda: rt.predict(decode()), runs),
            )
        )
    for label, model_ms, e2e_ms in rows:
        print(
            f"{name + f' {size}x{size}':<24} {label:<20} {model_ms:>9.1f} {1000 / model_ms:>7.1f} {e2e_ms:>9.1f} "
            f"{1000 / e2e_ms:>7.1f} {eager_model / model_ms:>6.2f}",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a trained segmentation checkpoint (make demo: runs/demo/best.pt)",
    )
    p.add_argument(
        "--sizes", default="320,512", help="square input sides for the speed rows"
    )
    p.add_argument("--extra", default="", help="comma-separated: " + ", ".join(EXTRA))
    p.add_argument(
        "--calibration",
        type=int,
        default=32,
        help="training images for int8 calibration",
    )
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    model = convision.load(args.checkpoint)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), batch 1; checkpoint {args.checkpoint} ({model.spec['name']})"
    )

    f32, i8 = tmp / "acc.onnx", tmp / "acc.int8.onnx"
    export_onnx(model, f32, dynamic=True)
    export_onnx(
        model,
        i8,
        dynamic=True,
        quantize="int8",
        calibration=calibration_inputs(model, args.calibration, None),
    )
    print(
        f"\nmIoU on the built-in validation split ({args.calibration} calibration images):"
    )
    for label, path in (
        ("PyTorch", args.checkpoint),
        ("ONNX Runtime float", f32),
        ("ONNX Runtime int8", i8),
    ):
        m = convision.evaluate(path, device="cpu", workers=0, progress=False)
        print(
            f"  {label:<20} mIoU {m['miou']:.4f}  pixel accuracy {m['pixel_accuracy']:.4f}",
            flush=True,
        )

    print(
        f"\n{'model':<24} {'runtime':<20} {'model ms':>9} {'FPS':>7} {'e2e ms':>9} {'FPS':>7} {'gain':>6}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        speed_rows(
            model.spec["name"],
            model,
            size,
            tmp,
            args.calibration,
            args.runs,
            args.threads,
        )
    for key in filter(None, args.extra.split(",")):
        name, kwargs = EXTRA[key]
        torch.manual_seed(0)
        extra = build_model(name, num_classes=len(model.classes), **kwargs).eval()
        for attr in ("task", "classes", "colors", "normalization", "train_config"):
            setattr(extra, attr, getattr(model, attr))
        extra.spec = {"name": name, "kwargs": kwargs}
        speed_rows(key, extra, 320, tmp, args.calibration, args.runs, args.threads)


if __name__ == "__main__":
    main()
