"""ONNX Runtime vs PyTorch eager on the same machine and run: latency at batch 1 on the CPU, and
whether the outputs agree.

Models (21 classes, ImageNet MobileNetV2 backbones as torchvision ships them, heads randomly
initialised: latency does not depend on the weights):

* FCN-8s (MobileNetV2) at 320x320, U-Net (MobileNetV2 encoder) at 320x320: logits; the outputs
  compared are the logits (max |diff|) and the arg-max masks (share of equal pixels);
* Faster R-CNN (MobileNetV2, the paper's test settings: 6000 -> 300 proposals, NMS 0.7 / 0.3) on a
  600x600 image: everything from the normalised image to the final boxes, NMS included, in both.

Each model is exported with ``convision.export.export_onnx`` (what ``convision TASK export`` writes)
and run by ``onnxruntime.InferenceSession`` with its default graph optimisations. Timings alternate
the two runtimes, iteration by iteration, after warm-up; the median is reported. Ratio > 1: ONNX
Runtime is faster.

    OMP_NUM_THREADS=1 .venv/bin/python bench/onnx_speed.py [--threads 1] [--runs 20] [--models fcn8s,unet,faster_rcnn]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from convision.export import export_onnx
from convision.models import build_model

MODELS = {
    "fcn8s": (
        "segment",
        "fcn8s",
        {"num_classes": 21, "backbone": "mobilenet_v2", "weights": "IMAGENET1K_V1"},
        320,
    ),
    "unet": (
        "segment",
        "unet",
        {"num_classes": 21, "backbone": "mobilenet_v2", "weights": "IMAGENET1K_V1"},
        320,
    ),
    "faster_rcnn": (
        "detect",
        "faster_rcnn",
        {"num_classes": 20, "backbone": "mobilenet_v2", "weights": "IMAGENET1K_V1"},
        600,
    ),
}


def loaded(task: str, name: str, kwargs: dict, size: int) -> torch.nn.Module:
    """The model with the attributes convision.load gives it (what the exporter reads)."""
    torch.manual_seed(0)
    model = build_model(name, **kwargs).eval()
    model.task, model.spec, model.train_config = (
        task,
        {"name": name, "kwargs": kwargs},
        {},
    )
    model.classes = [f"class{i}" for i in range(kwargs["num_classes"])]
    model.colors = []
    model.normalization = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    model.min_size, model.max_size, model.proposal_settings = size, 1000, {}
    with (
        torch.no_grad()
    ):  # zero-initialised layers (FCN's score layers) drawn, so that the logits vary
        for m in model.modules():
            if (
                isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
                and not m.weight.any()
            ):
                m.weight.normal_(0, 0.01)
    if (
        task == "detect"
    ):  # a trained-like head: scores spread out, so NMS has boxes to work on
        with torch.no_grad():
            for layer in (
                model.rpn.head.cls_logits,
                model.roi_heads.box_head.cls_score,
            ):
                layer.weight.normal_(0, 0.05)
    return model


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=1, help="threads of both runtimes")
    p.add_argument(
        "--runs",
        type=int,
        default=20,
        help="timed runs per runtime (after 3 warm-up runs)",
    )
    p.add_argument(
        "--models",
        default=",".join(MODELS),
        help="comma-separated: " + ", ".join(MODELS),
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} thread(s), batch 1, median of {args.runs}"
    )
    print(
        f"{'model':<28} {'PyTorch ms':>10} {'ORT ms':>8} {'ratio':>6} {'PyTorch FPS':>11} {'ORT FPS':>8}  outputs"
    )
    tmp = Path(tempfile.mkdtemp())
    for key in args.models.split(","):
        task, name, kwargs, size = MODELS[key]
        model = loaded(task, name, kwargs, size)
        export_onnx(model, tmp / f"{key}.onnx", image_size=size)
        session = ort.InferenceSession(
            str(tmp / f"{key}.onnx"),
            sess_options=opts,
            providers=["CPUExecutionProvider"],
        )
        g = torch.Generator().manual_seed(1)
        if task == "segment":
            x = (torch.rand(1, 3, size, size, generator=g) - 0.45) / 0.225
            feeds = {"images": x.numpy()}
            run_torch = lambda: model(x)  # noqa: E731
        else:
            x = torch.rand(1, 3, size, size, generator=g)
            feeds = {"image": x.numpy()}
            run_torch = lambda: model([x[0]])  # noqa: E731
        run_ort = lambda: session.run(None, feeds)  # noqa: E731
        with torch.inference_mode():
            for _ in range(3):
                run_torch(), run_ort()
            t_ms, o_ms = [], []
            for _ in range(
                args.runs
            ):  # interleaved, so that load from other processes hits both alike
                t_ms.append(median_ms(run_torch, 1))
                o_ms.append(median_ms(run_ort, 1))
            ref, got = run_torch(), run_ort()
        tm, om = statistics.median(t_ms), statistics.median(o_ms)
        if task == "segment":
            diff = float((ref - torch.from_numpy(got[0])).abs().max())
            same = float(
                (ref.argmax(1) == torch.from_numpy(got[0]).argmax(1)).float().mean()
            )
            agree = f"max |logit diff| {diff:.1e}, equal mask pixels {100 * same:.2f} %"
        else:
            r = ref[0]
            n = min(len(r["labels"]), len(got[1]))
            same = bool(np.array_equal(r["labels"][:n].numpy(), got[1][:n]))
            box = float(np.abs(r["boxes"][:n].numpy() - got[0][:n]).max()) if n else 0.0
            agree = f"{len(r['labels'])} vs {len(got[1])} detections, labels equal {same}, max |box diff| {box:.1e} px"
        label = f"{name} MobileNetV2 {size}x{size}"
        print(
            f"{label:<28} {tm:>10.1f} {om:>8.1f} {tm / om:>6.2f} {1000 / tm:>11.1f} {1000 / om:>8.1f}  {agree}",
            flush=True,
        )


if __name__ == "__main__":
    main()
