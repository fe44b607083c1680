"""``convision detect train|eval|predict|convert|export``: object detection."""

from __future__ import annotations

import argparse
from pathlib import Path

from convision.cli import common
from convision.config import deprecated
from convision.data.detection_formats import convert
from convision.errors import ConfigError
from convision.metrics.detection import format_table
from convision.tasks import detect

HELP = "object detection and instance segmentation: Faster R-CNN, Mask R-CNN, Fast R-CNN, R-CNN, YOLOv1; VOC / COCO / YOLO data"


def add_parser(tasks: argparse._SubParsersAction) -> None:
    modes = common.add_modes(tasks, "detect", HELP)
    common.add_train(
        modes,
        detect.DetectConfig(),
        "train a detector",
        "Train a detector.\nData: 'synthetic' (built-in scenes), a Pascal VOC root, a COCO .json or a YOLO folder.",
    )
    ev = common.add_eval(
        modes,
        "VOC mAP@0.5 (area and 11-point), COCO mAP@[.5:.95], per-class AP, PR curves",
        batch_size=4,
        data_help="'synthetic', a VOC root, a COCO .json or a YOLO folder",
        splits="train | val | any split the data defines (VOC ImageSets/Main/<split>.txt, YOLO images/<split>/)",
    )
    ev.add_argument(
        "--coco-backend", default="pycocotools", help="pycocotools | faster_coco_eval"
    )
    ev.add_argument("--no-coco", action="store_true", help="VOC metrics only")
    ev.add_argument(
        "--json",
        default=None,
        help="write the metrics here (default: next to the checkpoint, eval_<split>.json)",
    )
    ev.add_argument(
        "--pr-curves",
        default=None,
        help="PR-curve PNG (default: next to the checkpoint, pr_<split>.png)",
    )
    _add_inference_args(ev)
    pr = common.add_predict(
        modes,
        "detect objects: drawn PNGs, predictions.json, coco_results.json",
        out_help="output folder",
    )
    pr.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        help="draw boxes scoring at least this (the JSON keeps all)",
    )
    _add_inference_args(pr)
    common.add_export(modes, "a detector")
    cv = modes.add_parser(
        "convert",
        help="convert annotations between Pascal VOC, COCO and YOLO (or export the built-in scenes)",
        formatter_class=common.DEFAULTS,
    )
    cv.add_argument(
        "src", help="a VOC root, a COCO .json, a YOLO folder, or 'synthetic'"
    )
    cv.add_argument("dst", help="output folder (VOC, YOLO) or .json file (COCO)")
    cv.add_argument("--to", required=True, help="voc | coco | yolo")
    cv.add_argument(
        "--split",
        default=None,
        help="the source split to read (VOC: ImageSets/Main/<split>.txt; YOLO: images/<split>)",
    )
    cv.add_argument(
        "--num-images",
        type=common.count(1),
        default=100,
        help="synthetic: images to export",
    )
    cv.add_argument(
        "--scene-size", type=common.count(8), default=128, help="synthetic: image side"
    )
    cv.add_argument(
        "--image-size", type=int, default=None, help=argparse.SUPPRESS
    )  # deprecated name of --scene-size
    cv.add_argument(
        "--num-classes",
        type=common.count(2),
        default=6,
        help="synthetic: classes including background",
    )
    cv.add_argument("--seed", type=int, default=0, help="synthetic: generator seed")


def _add_inference_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("test-time settings (default: the checkpoint's)")
    g.add_argument("--nms-thresh", type=float, default=None, help="per-class NMS IoU")
    g.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="detections scoring below this are dropped",
    )
    g.add_argument(
        "--detections-per-image",
        type=int,
        default=None,
        help="detections kept per image",
    )
    g.add_argument(
        "--rpn-post-nms-test",
        type=int,
        default=None,
        help="Faster R-CNN: proposals kept after NMS",
    )
    g.add_argument(
        "--tile",
        type=int,
        default=0,
        help="detect images larger than this (px) in overlapping windows of this side (0 = off)",
    )
    g.add_argument(
        "--tile-overlap",
        type=int,
        default=64,
        help="overlap of the windows in px (at least the largest object's size)",
    )


def _load(args: argparse.Namespace):
    return detect.set_inference(
        detect.load(args.checkpoint, device="cpu"),
        nms_thresh=args.nms_thresh,
        score_thresh=args.score_thresh,
        detections_per_image=args.detections_per_image,
        rpn_post_nms_test=args.rpn_post_nms_test,
    )


def run(args: argparse.Namespace) -> int:
    if args.mode == "train":
        return common.train(args, detect.DetectConfig(), detect.train, "mAP@0.5")
    return {
        "eval": _eval,
        "predict": _predict,
        "convert": _convert,
        "export": common.export,
    }[args.mode](args)


def _eval(args: argparse.Namespace) -> int:
    ckpt = Path(args.checkpoint)
    curves = (
        Path(args.pr_curves)
        if args.pr_curves
        else ckpt.with_name(f"pr_{args.split}.png")
    )
    metrics = detect.evaluate(
        _load(args),
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        progress=not args.no_progress,
        coco=not args.no_coco,
        coco_backend=args.coco_backend,
        pr_curves=curves,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
    )
    print(format_table(metrics))
    for key, title in (("coco", "COCO box"), ("coco_mask", "COCO mask")):
        if key not in metrics:
            continue
        c = metrics[key]
        shown = [
            f"{k} {c[k]:.4f}" if isinstance(c.get(k), float) else f"{k} n/a"
            for k in ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
            if k in c
        ]
        print(f"{title} (pycocotools) " + "  ".join(shown))
    if "coco_mask" in metrics:
        print("mask AP per class:")
        for name, ap in metrics["coco_mask"]["AP_per_class"].items():
            print(f"  {name:<20} {'n/a' if ap is None else f'{ap:.4f}'}")
    out = common.write_json(
        args.json or ckpt.with_name(f"eval_{args.split}.json"), metrics, "--json"
    )
    print(f"metrics written to {out}; PR curves in {curves}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    results = detect.predict_to_folder(
        _load(args),
        args.inputs,
        args.out,
        device=args.device,
        score_threshold=args.score_threshold,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        strict=args.strict,
        progress=not args.no_progress,
    )
    for f, p in results.items():
        shown = [
            f"{c} {s:.2f}"
            for c, s in zip(p["classes"], p["scores"])
            if s >= args.score_threshold
        ]
        print(f"{f}: {len(shown)} object(s){': ' if shown else ''}{', '.join(shown)}")
    print(
        f"{len(results)} image(s); drawn PNGs, predictions.json and coco_results.json in {args.out}/"
    )
    return common.finish_predict(results, args.out)


def _convert(args: argparse.Namespace) -> int:
    if args.to not in ("voc", "coco", "yolo"):
        raise ConfigError(f"--to: expected voc | coco | yolo, got {args.to!r}")
    if args.image_size is not None:
        deprecated("image_size", "scene_size", "command line")
        args.scene_size = args.image_size
    extra = {}
    if args.src == "synthetic":
        extra = {
            "num_images": args.num_images,
            "image_size": args.scene_size,
            "num_classes": args.num_classes,
            "seed": args.seed,
        }
    written = convert(args.src, args.dst, args.to, split=args.split, **extra)
    print(f"converted {args.src} to {args.to}: {written}")
    return 0
