"""convision's Mask R-CNN against torchvision's ``MaskRCNN``, trained and scored in one run.

For each data set (``synthetic``: the built-in scenes, which carry instance masks; or a COCO json with
polygon / RLE segmentations, e.g. the balloon set ``instances_train.json`` with ``--val-data
instances_val.json``, built by ``bench/detection_data.py``) this trains

* convision's ``mask_rcnn`` through the same entry point as ``convision detect train --model
  mask_rcnn`` (``convision.tasks.detect.train``);
* torchvision's ``MaskRCNN`` with the same conv body (convision's ``build_body``: the same MobileNetV2
  cut, weights, frozen layers and frozen batch norms), the same anchors, RoIAlign sizes (7 for boxes,
  14 for masks), box head width, mask head width (four 3x3 convs of ``--mask-dim``, the paper's FPN
  head in both), RoIs per image, NMS / score thresholds, input size, batch, epochs, optimizer,
  schedule and clipping, on the very same data pipeline (the same augmentation, masks included);
  everything else torchvision's defaults.

Both are scored by one path (``DetectionTask.eval_step``: boxes mapped to the original pixels, each
model's 28x28 mask probabilities of its detections pasted there by convision's ``paste_masks`` at 0.5,
pycocotools' ``bbox`` and ``segm`` evaluation). Speed: training images/s over the epochs (convision:
the engine's; torchvision: the same loop as ``bench/detection_real.py``), inference images/s of each
model's own full forward (masks pasted into the network-size image by each model's own code), one image
per call. Printed: mask AP, AP50, AP75, box AP, AP50, speeds and the ratios convision / torchvision.

    python bench/instance.py --data synthetic --scene-size 128 --num-train 300 --num-val 100 \\
        --epochs 8 --mask-dim 64
    python bench/instance.py --data /root/.cache/convision-bench/balloon/instances_train.json \\
        --val-data /root/.cache/convision-bench/balloon/instances_val.json --min-size 320 --epochs 12
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.detection import MaskRCNN as TVMaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detection_real import _Body, _no_resize, ratio, train_torchvision  # noqa: E402

from convision.data.detection import detection_eval_transforms  # noqa: E402
from convision.metrics.detection import coco_evaluate  # noqa: E402
from convision.models.detection.faster_rcnn import build_body  # noqa: E402
from convision.tasks import detect  # noqa: E402


class _TorchvisionMasks(nn.Module):
    """torchvision's ``MaskRCNN`` in convision's contract (labels ``0..K-1``); with ``raw`` its eval
    output keeps the 28x28 mask probabilities (``mask_probs``) instead of pasting them."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.raw = False
        self._paste = net.transform.postprocess

    def forward(self, images: list[torch.Tensor], targets: Any = None) -> Any:
        if self.training:
            return self.net(
                images,
                [
                    {
                        "boxes": t["boxes"],
                        "labels": t["labels"] + 1,
                        "masks": t["masks"],
                    }
                    for t in targets
                ],
            )
        self.net.transform.postprocess = (
            (lambda result, *_: result) if self.raw else self._paste
        )
        out = self.net(images)
        if self.raw:
            return [
                {**p, "labels": p["labels"] - 1, "mask_probs": p["masks"][:, 0]}
                for p in out
            ]
        return [{**p, "labels": p["labels"] - 1} for p in out]


def torchvision_mask_rcnn(
    cfg: detect.DetectConfig, num_classes: int, min_size: int, box_sides: Any = None
) -> _TorchvisionMasks:
    m = cfg.model
    kwargs = detect.model_kwargs(cfg, num_classes, min_size, box_sides)
    body, channels, _ = build_body(
        m.backbone,
        kwargs["weights"],
        freeze_early=kwargs["freeze_early"],
        freeze_bn=kwargs["freeze_bn"],
        fuse_frozen_bn=False,
        dilated_tail=kwargs.get("dilated_tail", True),
    )
    anchors = AnchorGenerator(
        sizes=(tuple(kwargs["anchor_sizes"]),), aspect_ratios=((0.5, 1.0, 2.0),)
    )
    dim = kwargs["mask_dim"]
    net = TVMaskRCNN(
        _Body(body, channels),
        num_classes=None,
        min_size=min_size,
        max_size=cfg.data.max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=m.rpn_pre_nms_train,
        rpn_post_nms_top_n_train=m.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=m.rpn_pre_nms_test,
        rpn_post_nms_top_n_test=m.rpn_post_nms_test,
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(channels * 49, m.head_dim),
        box_predictor=FastRCNNPredictor(m.head_dim, num_classes + 1),
        box_batch_size_per_image=m.roi_batch_size,
        box_nms_thresh=0.3,  # convision's (the Fast R-CNN papers')
        box_score_thresh=0.05,
        box_detections_per_img=m.detections_per_image,
        mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        mask_head=MaskRCNNHeads(channels, [dim] * 4, 1),
        mask_predictor=MaskRCNNPredictor(dim, dim, num_classes + 1),
    )
    net.transform.resize = (
        _no_resize  # the data pipeline already resized (as for convision's)
    )
    return _TorchvisionMasks(net)


def score(
    net: nn.Module, cfg: detect.DetectConfig, classes: list[str], min_size: int
) -> dict[str, Any]:
    """Mask and box COCO AP on the validation split (one scoring path) and inference images/s."""
    dataset = detect.split_dataset(
        cfg,
        "val",
        detection_eval_transforms(min_size, cfg.data.max_size),
        classes=classes,
    )
    dataset.original_masks = True
    task = detect.DetectionTask(classes, keep=True, masks=True)
    loader = DataLoader(dataset, batch_size=1, collate_fn=task.collate)
    metric = task.new_metric()
    net.eval()
    if isinstance(net, _TorchvisionMasks):
        net.raw = True
    with torch.no_grad():
        for batch in loader:
            task.eval_step(net, batch, torch.device("cpu"), metric)
        if isinstance(net, _TorchvisionMasks):
            net.raw = False
        images = [dataset[i][0].as_subclass(torch.Tensor) for i in range(len(dataset))]
        net([images[0]])  # warm-up
        t0 = time.perf_counter()
        for im in images:
            net([im])
        infer = len(images) / (time.perf_counter() - t0)
    box = coco_evaluate(metric.preds, metric.targets, classes)
    mask = coco_evaluate(metric.preds, metric.targets, classes, iou_type="segm")
    return {
        "mask_AP": mask["mAP"],
        "mask_AP50": mask["AP50"],
        "mask_AP75": mask["AP75"],
        "mask_APs": mask.get("AP_small"),
        "mask_APm": mask.get("AP_medium"),
        "mask_APl": mask.get("AP_large"),
        "box_AP": box["mAP"],
        "box_AP50": box["AP50"],
        "mask_AP_per_class": mask["AP_per_class"],
        "infer_img_s": infer,
        "images": len(dataset),
    }


def speed(args: argparse.Namespace, rounds: int = 3) -> dict[str, Any]:
    """Training step and inference times of the two models (fresh weights, or with ``--score-only``
    the trained ones in ``--out``; the run's settings) on
    the same fixed batches: ``rounds`` alternations (ours, torchvision, ours, ...) so that a machine
    whose load drifts penalises neither; medians of the per-round means."""
    from convision.models import build_model

    cfg = config(args, Path(args.out) / "speed")
    min_size = detect.resolve_min_size(cfg.data)
    train_set, val_set = detect.build_datasets(cfg, min_size)
    classes = list(train_set.classes)
    sides = detect.box_sides_at(train_set, min_size, cfg.data.max_size)
    torch.manual_seed(args.seed)
    nets = {
        "mask_rcnn": build_model(
            "mask_rcnn", **detect.model_kwargs(cfg, len(classes), min_size, sides)
        ),
        "torchvision": torchvision_mask_rcnn(cfg, len(classes), min_size, sides),
    }
    if (
        args.score_only
    ):  # the trained weights of the run in --out (its detections, not 100 random ones)
        name = "synthetic" if args.data == "synthetic" else Path(args.data).parent.name
        out = Path(args.out) / name
        nets["mask_rcnn"] = detect.load(out / "mask_rcnn" / "last.pt")
        nets["torchvision"].load_state_dict(
            torch.load(out / "torchvision" / "torchvision.pt", weights_only=True)
        )
    collate = detect.DetectionTask([]).collate
    b = cfg.train.batch_size
    batches = [
        collate([train_set[i + j] for j in range(b)])
        for i in range(0, min(len(train_set), 4 * b) - b + 1, b)
    ]
    images = [
        val_set[i][0].as_subclass(torch.Tensor) for i in range(min(8, len(val_set)))
    ]
    times: dict[str, dict[str, list[float]]] = {
        n: {"train": [], "infer": []} for n in nets
    }
    opts = {
        n: torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        for n, net in nets.items()
    }
    for r in range(rounds + 1):  # round 0 warms up
        for n, net in nets.items():
            net.train()
            t0 = time.perf_counter()
            for ims, ts in batches:
                keys = ("boxes", "labels", "masks")
                loss = sum(net(ims, [{k: t[k] for k in keys} for t in ts]).values())
                opts[n].zero_grad()
                loss.backward()
                opts[n].step()
            train = (time.perf_counter() - t0) / (len(batches) * b)
            net.eval()
            t0 = time.perf_counter()
            with torch.no_grad():
                for im in images:
                    net([im])
            infer = (time.perf_counter() - t0) / len(images)
            if r:
                times[n]["train"].append(train)
                times[n]["infer"].append(infer)
            print(
                f"  round {r} {n}: {train:.3f} s/train image, {infer:.3f} s/image inference",
                file=sys.stderr,
            )
    med = {
        n: {k: sorted(v)[len(v) // 2] for k, v in t.items()} for n, t in times.items()
    }
    return {
        "train_s_per_image": {n: m["train"] for n, m in med.items()},
        "infer_s_per_image": {n: m["infer"] for n, m in med.items()},
        "train_speedup": med["torchvision"]["train"] / med["mask_rcnn"]["train"],
        "infer_speedup": med["torchvision"]["infer"] / med["mask_rcnn"]["infer"],
    }


def picture(
    checkpoint: Path, path: Path, side: int = 128, scenes=(3, 7, 11, 21)
) -> None:
    """Validation scenes (top) and the model's instances scoring >= 0.5 drawn (bottom), 2x enlarged."""
    import numpy as np
    from PIL import Image

    from convision.data.segmentation import VAL_INDEX_OFFSET
    from convision.data.synthetic import make_scene

    model = detect.load(checkpoint)

    def big(a: np.ndarray) -> np.ndarray:
        return np.asarray(
            Image.fromarray(a).resize((2 * side, 2 * side), Image.NEAREST)
        )

    columns = []
    for i in scenes:
        image = make_scene(VAL_INDEX_OFFSET + i, image_size=side).image
        drawn = detect.draw_detections(image, detect.predict(model, image)[0], 0.5)
        columns.append(np.concatenate([big(image), big(drawn)], axis=0))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(columns, axis=1)).save(path)


def config(args: argparse.Namespace, out: Path) -> detect.DetectConfig:
    cfg = detect.DetectConfig()
    d, m, t = cfg.data, cfg.model, cfg.train
    d.data, d.val_data, d.workers = args.data, args.val_data, 0
    d.min_size, d.max_size = args.min_size, args.max_size
    d.num_train, d.num_val, d.scene_size = args.num_train, args.num_val, args.scene_size
    m.model, m.backbone, m.pooling = "mask_rcnn", args.backbone, "roi_align"
    m.anchor_sizes, m.mask_dim = args.anchor_sizes, args.mask_dim
    t.epochs, t.batch_size, t.lr = args.epochs, args.batch_size, args.lr
    t.out, t.overwrite, t.seed = str(out), True, args.seed
    for item in args.set or []:  # --set section.key=value: any other convision setting
        key, value = item.split("=", 1)
        section, name = key.split(".")
        target = getattr(cfg, section)
        old = getattr(target, name)
        setattr(
            target,
            name,
            value.lower() in ("1", "true", "yes")
            if isinstance(old, bool)
            else type(old)(value),
        )
    return cfg


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    name = "synthetic" if args.data == "synthetic" else Path(args.data).parent.name
    rows = []
    for model in args.models:
        out = Path(args.out) / name / model
        cfg = config(args, out)
        min_size = detect.resolve_min_size(cfg.data)
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        if args.score_only:  # the trained weights of an earlier run, scored again
            previous = {
                r["model"]: r
                for r in json.loads(Path(args.json).read_text())
                if r["set"] == name
            }[model]
            train_set, _ = detect.build_datasets(cfg, min_size)
            classes = list(train_set.classes)
            if model == "torchvision":
                net = torchvision_mask_rcnn(
                    cfg,
                    len(classes),
                    min_size,
                    detect.box_sides_at(train_set, min_size, cfg.data.max_size),
                )
                net.load_state_dict(
                    torch.load(out / "torchvision.pt", weights_only=True)
                )
            else:
                net = detect.load(out / "last.pt")
            speed = {k: previous[k] for k in ("train_s", "train_img_s")}
        elif model == "torchvision":
            train_set, _ = detect.build_datasets(cfg, min_size)
            classes = list(train_set.classes)
            net = torchvision_mask_rcnn(
                cfg,
                len(classes),
                min_size,
                detect.box_sides_at(train_set, min_size, cfg.data.max_size),
            )
            speed = train_torchvision(
                net,
                cfg,
                train_set,
                f"{torch.get_num_threads()} threads",
                keys=("boxes", "labels", "masks"),
            )
            out.mkdir(parents=True, exist_ok=True)
            torch.save(net.state_dict(), out / "torchvision.pt")
        else:
            run_ = detect.train(cfg, progress=args.progress)
            net = detect.load(run_["last"])
            classes = list(net.classes)
            history = run_["history"]
            speed = {
                "train_img_s": sum(h["images_per_s"] for h in history) / len(history)
            }
        row = {
            "set": name,
            "model": model,
            "train_s": time.perf_counter() - t0,
            **speed,
            **score(net, cfg, classes, min_size),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic", help="synthetic | a COCO json")
    parser.add_argument("--val-data", default="", help="the validation COCO json")
    parser.add_argument("--models", nargs="+", default=["mask_rcnn", "torchvision"])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--anchor-sizes", default="auto")
    parser.add_argument("--min-size", type=int, default=0)
    parser.add_argument("--max-size", type=int, default=1000)
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--scene-size", type=int, default=128)
    parser.add_argument("--mask-dim", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--set", action="append", help="section.key=value (both models)"
    )
    parser.add_argument("--progress", action="store_true")
    parser.add_argument(
        "--picture",
        default=None,
        help="only draw the built-in-scenes run's predictions on 4 validation scenes into this PNG",
    )
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="only time training steps and inference of both models on the same batches (alternating)",
    )
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="score the weights an earlier run left in --out again (train speeds from its --json)",
    )
    parser.add_argument("--out", default="runs/bench_instance")
    parser.add_argument("--json", default=None, help="write every row here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.picture:
        picture(
            Path(args.out) / "synthetic" / "mask_rcnn" / "last.pt",
            Path(args.picture),
            args.scene_size,
        )
        return
    if args.speed_only:
        result = speed(args)
        print(json.dumps(result))
        print(
            f"convision / torchvision speed: training {result['train_speedup']:.2f}x, "
            f"inference {result['infer_speedup']:.2f}x"
        )
        return
    rows = run(args)
    print(
        f"\n{'set':<10} {'model':<12} {'maskAP':>6} {'AP50':>6} {'AP75':>6} {'boxAP':>6} {'bAP50':>6} "
        f"{'train/s':>8} {'infer/s':>8}"
    )
    for r in rows:
        print(
            f"{r['set']:<10} {r['model']:<12} {r['mask_AP']:6.3f} {r['mask_AP50']:6.3f} {r['mask_AP75']:6.3f} "
            f"{r['box_AP']:6.3f} {r['box_AP50']:6.3f} {r['train_img_s']:8.2f} {r['infer_img_s']:8.2f}"
        )
    by = {r["model"]: r for r in rows}
    if "mask_rcnn" in by and "torchvision" in by:
        a, b = by["mask_rcnn"], by["torchvision"]
        print(
            f"{a['set']}: convision / torchvision  mask AP {ratio(a['mask_AP'], b['mask_AP']):.2f}x  "
            f"mask AP50 {ratio(a['mask_AP50'], b['mask_AP50']):.2f}x  box AP {ratio(a['box_AP'], b['box_AP']):.2f}x  "
            f"train speed {ratio(a['train_img_s'], b['train_img_s']):.2f}x  "
            f"inference speed {ratio(a['infer_img_s'], b['infer_img_s']):.2f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
