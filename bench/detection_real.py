"""convision's detectors against torchvision's ``FasterRCNN`` on real photographs, in one run.

For each data set (a Pascal VOC folder with ``train``/``val``/``test`` splits, e.g. built by
``bench/detection_data.py``) this trains

* convision's Faster R-CNN through the same entry point as ``convision detect train``
  (``convision.tasks.detect.train``), with the given settings and every other default;
* torchvision's ``FasterRCNN`` with the same conv body (convision's ``build_body``: the same
  MobileNetV2 cut, weights, frozen layers and frozen batch norms), the same anchors, RoI pooling, input
  size, batch, epochs, optimizer, learning-rate schedule and gradient clipping, trained on the very same
  data pipeline (``build_datasets``: the same augmentation), everything else torchvision's defaults —
  the model a user would otherwise write in 40 lines;
* optionally (``--models``) convision's Fast R-CNN (selective search) and YOLOv1.

Every model is scored by one evaluation path (convision's VOC metric and pycocotools' COCO evaluation on
the predictions mapped back to the original pixels) on ``val`` and ``test``. Printed: VOC mAP@0.5, COCO
mAP@[.5:.95], AP_small, train and inference images/s, and the ratios convision / torchvision.

    python bench/detection_real.py --data /root/.cache/convision-bench/trees --min-size 400 \\
        --anchor-sizes 16,32,64,128 --pooling roi_align --epochs 10 --batch-size 2 [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, box_iou, roi_pool

from convision.data.detection import detection_eval_transforms
from convision.engine.trainer import make_lr_lambda
from convision.metrics.detection import coco_evaluate
from convision.models.detection.faster_rcnn import build_body
from convision.tasks import detect


class _Body(nn.Module):
    """torchvision's backbone contract: ``out_channels`` and a feature map."""

    def __init__(self, body: nn.Module, channels: int) -> None:
        super().__init__()
        self.body, self.out_channels = body, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _RoIPool(nn.Module):
    """RoI max pooling (7x7, 1/16) behind the interface of torchvision's ``box_roi_pool``."""

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: Any,
    ) -> torch.Tensor:
        return roi_pool(features["0"], proposals, (7, 7), 1.0 / 16)


def ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def _no_resize(image: torch.Tensor, target: Any = None) -> tuple[torch.Tensor, Any]:
    """torchvision's transform without its resize: the data pipeline already resized the images."""
    return image, target


class _UserLabels(nn.Module):
    """torchvision's detector in convision's contract: labels 0..K-1 (torchvision's 1..K)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(
        self,
        images: list[torch.Tensor],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> Any:
        if self.training:
            return self.net(
                images,
                [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets],
            )
        return [{**p, "labels": p["labels"] - 1} for p in self.net(images)]


def torchvision_faster_rcnn(
    cfg: detect.DetectConfig, num_classes: int, min_size: int, box_sides: Any = None
) -> nn.Module:
    m = cfg.model
    kwargs = detect.model_kwargs(
        cfg, num_classes, min_size, box_sides
    )  # convision's resolution of the settings
    body, channels, _ = build_body(
        m.backbone,
        kwargs["weights"],
        freeze_early=kwargs["freeze_early"],
        freeze_bn=kwargs["freeze_bn"],
        fuse_frozen_bn=False,
        dilated_tail=kwargs.get("dilated_tail", True),
    )
    sizes = tuple(kwargs["anchor_sizes"])
    anchors = AnchorGenerator(sizes=(sizes,), aspect_ratios=((0.5, 1.0, 2.0),))
    net = TVFasterRCNN(
        _Body(body, channels),
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(channels * 49, m.head_dim),
        box_predictor=FastRCNNPredictor(m.head_dim, num_classes + 1),
        min_size=min_size,
        max_size=cfg.data.max_size,
    )
    if m.pooling == "roi_pool":
        net.roi_heads.box_roi_pool = _RoIPool()
    # the data pipeline already resized the images (the same as convision's); torchvision's transform
    # would resize the jittered scales back to min_size, so it only normalises and batches here
    net.transform.resize = _no_resize
    return _UserLabels(net)


def torchvision_plain_faster_rcnn(
    cfg: detect.DetectConfig, num_classes: int, min_size: int, box_sides: Any = None
) -> nn.Module:
    """What a torchvision user writes: ``mobilenet_v2(weights=...).features[:14]`` (stride 16, 96 channels,
    ordinary batch norms, nothing frozen) in ``FasterRCNN`` with the same anchors and RoI pooling."""
    from torchvision.models import mobilenet_v2

    m = cfg.model
    kwargs = detect.model_kwargs(cfg, num_classes, min_size, box_sides)
    body = mobilenet_v2(weights=kwargs["weights"]).features[:14]
    anchors = AnchorGenerator(
        sizes=(tuple(kwargs["anchor_sizes"]),), aspect_ratios=((0.5, 1.0, 2.0),)
    )
    net = TVFasterRCNN(
        _Body(body, 96),
        num_classes=num_classes + 1,
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        min_size=min_size,
        max_size=cfg.data.max_size,
    )
    if m.pooling == "roi_pool":
        net.roi_heads.box_roi_pool = _RoIPool()
    net.transform.resize = _no_resize
    return _UserLabels(net)


def train_torchvision(
    net: nn.Module,
    cfg: detect.DetectConfig,
    train_set: Any,
    threads_note: str,
    keys: tuple[str, ...] = ("boxes", "labels"),
) -> dict[str, Any]:
    """The same optimizer, schedule, warm-up and clipping as convision's Trainer; returns images/s.
    ``keys``: the target entries passed to the model (Mask R-CNN: also ``masks``)."""
    t = cfg.train
    params = [p for p in net.parameters() if p.requires_grad]
    opt = (
        torch.optim.SGD(
            params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
        )
        if t.optimizer == "sgd"
        else torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    )
    loader = DataLoader(
        train_set,
        batch_size=t.batch_size,
        shuffle=True,
        drop_last=len(train_set) > t.batch_size,
        collate_fn=detect.DetectionTask([]).collate,
        num_workers=cfg.data.workers,
    )
    total = t.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        make_lr_lambda(
            t.schedule, total, round(t.warmup_epochs * len(loader)), t.poly_power
        ),
    )
    net.train()
    seen, spent = 0, 0.0
    for epoch in range(t.epochs):
        t0 = time.perf_counter()
        for images, targets in loader:
            losses = net(images, [{k: x[k] for k in keys} for x in targets])
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, t.grad_clip)
            opt.step()
            sched.step()
            seen += len(images)
        spent += time.perf_counter() - t0
        print(
            f"  torchvision epoch {epoch + 1}/{t.epochs}: loss {float(loss):.3f} ({threads_note})",
            file=sys.stderr,
        )
    return {"train_img_s": seen / spent}


@torch.no_grad()
def proposal_recall(net: nn.Module, dataset: Any, k: int = 300) -> float | None:
    """Share of ground-truth boxes that one of the ``k`` best RPN proposals covers with IoU >= 0.5."""
    found = total = 0
    for i in range(len(dataset)):
        image, target = dataset[i]
        image = image.as_subclass(torch.Tensor)
        if isinstance(net, _UserLabels):
            tv = net.net
            batch, _ = tv.transform([image])
            props = tv.rpn(batch, {"0": tv.backbone(batch.tensors)})[0][0]
        elif hasattr(net, "rpn"):
            x, sizes = net.prepare([image])
            post = net.rpn.post_nms[False]
            net.rpn.post_nms[False] = max(post, k)
            props = net.rpn(net.body(x), sizes)[0][0]
            net.rpn.post_nms[False] = post
        else:
            return None
        gt = target["boxes"].as_subclass(torch.Tensor)
        if len(gt):
            found += (
                int((box_iou(gt, props[:k]).max(dim=1).values >= 0.5).sum())
                if len(props)
                else 0
            )
            total += len(gt)
    return found / max(1, total)


def score(
    net: nn.Module,
    cfg: detect.DetectConfig,
    split: str,
    classes: list[str],
    min_size: int,
    proposals: Path | None = None,
) -> dict[str, Any]:
    """VOC and COCO metrics of ``net`` on ``split`` (original pixels) and its inference images/s.
    ``proposals``: the selective-search cache of a Fast R-CNN (computed before the clock starts)."""
    dataset = detect.split_dataset(
        cfg,
        split,
        detection_eval_transforms(min_size, cfg.data.max_size),
        classes=classes,
    )
    if proposals is not None:
        dataset = detect.WithProposals(
            dataset,
            detect.compute_proposals(dataset, detect.proposal_settings(cfg), proposals),
        )
    task = detect.DetectionTask(
        classes, uses_proposals=proposals is not None, keep=True
    )
    loader = DataLoader(dataset, batch_size=1, collate_fn=task.collate)
    metric = task.new_metric()
    net.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            task.eval_step(net, batch, torch.device("cpu"), metric)
    infer = len(dataset) / (time.perf_counter() - t0)
    voc = metric.compute()
    recall = proposal_recall(net, dataset) if proposals is None else None
    coco = coco_evaluate(metric.preds, metric.targets, classes)
    return {
        "mAP50": voc["mAP"],
        "coco_mAP": coco["mAP"],
        "AP_small": coco.get("AP_small"),
        "infer_img_s": infer,
        "rpn_recall300": recall,
        "images": len(dataset),
        "detections_per_image": sum(len(p["scores"]) for p in metric.preds)
        / max(1, len(dataset)),
    }


def config(
    args: argparse.Namespace, data: str, model: str, out: Path
) -> detect.DetectConfig:
    cfg = detect.DetectConfig()
    cfg.data.data, cfg.data.min_size, cfg.data.max_size, cfg.data.workers = (
        data,
        args.min_size,
        args.max_size,
        0,
    )
    cfg.model.model, cfg.model.backbone, cfg.model.pooling = (
        model,
        args.backbone,
        args.pooling,
    )
    cfg.model.anchor_sizes = args.anchor_sizes
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr = (
        args.epochs,
        args.batch_size,
        args.lr,
    )
    cfg.train.out, cfg.train.overwrite, cfg.train.seed = str(out), True, args.seed
    for item in args.set or []:  # --set section.key=value: any other convision setting
        key, value = item.split("=", 1)
        section, name = key.split(".")
        target = getattr(cfg, section)
        setattr(
            target,
            name,
            type(getattr(target, name))(value)
            if not isinstance(getattr(target, name), bool)
            else value.lower() in ("1", "true", "yes"),
        )
    return cfg


def run_set(args: argparse.Namespace, data: str) -> list[dict[str, Any]]:
    rows = []
    name = Path(data).name
    for model in args.models:
        out = Path(args.out) / name / model
        cfg = config(
            args, data, "faster_rcnn" if model.startswith("torchvision") else model, out
        )
        min_size = detect.resolve_min_size(cfg.data)
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        if model.startswith("torchvision"):
            train_set, _ = detect.build_datasets(cfg, min_size)
            classes = list(train_set.classes)
            build = (
                torchvision_plain_faster_rcnn
                if model == "torchvision_plain"
                else torchvision_faster_rcnn
            )
            net = build(
                cfg,
                len(classes),
                min_size,
                detect.box_sides_at(train_set, min_size, cfg.data.max_size),
            )
            speed = train_torchvision(
                net, cfg, train_set, f"{torch.get_num_threads()} threads"
            )
            out.mkdir(parents=True, exist_ok=True)
            torch.save(net.state_dict(), out / "torchvision.pt")
        else:
            run = detect.train(cfg, progress=args.progress)
            net = detect.load(run["last"])
            classes = list(net.classes)
            history = run["history"]
            speed = {
                "train_img_s": sum(h["images_per_s"] for h in history) / len(history)
            }
        wall = time.perf_counter() - t0
        for split in args.splits:
            row = {
                "set": name,
                "model": model,
                "split": split,
                "train_s": wall,
                **speed,
                **score(
                    net,
                    cfg,
                    split,
                    classes,
                    min_size,
                    proposals=out / "proposals" if model == "fast_rcnn" else None,
                ),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="VOC folders with train/val/test splits",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=["faster_rcnn", "torchvision"],
        help="faster_rcnn torchvision fast_rcnn yolov1",
    )
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--pooling", default="roi_align")
    parser.add_argument("--anchor-sizes", default="16,32,64,128")
    parser.add_argument("--min-size", type=int, default=400)
    parser.add_argument("--max-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--set",
        action="append",
        help="any other convision setting: section.key=value (both models where it applies)",
    )
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", default="runs/bench_detection_real")
    parser.add_argument("--json", default=None, help="write every row here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [r for data in args.data for r in run_set(args, data)]
    print(
        f"\n{'set':<12} {'model':<12} {'split':<5} {'mAP50':>6} {'COCO':>6} {'APs':>6} {'RPN@300':>7} {'train/s':>8} {'infer/s':>8}"
    )
    for r in rows:
        aps = "-" if r["AP_small"] is None else f"{r['AP_small']:.3f}"
        rec = "-" if r.get("rpn_recall300") is None else f"{r['rpn_recall300']:.3f}"
        print(
            f"{r['set']:<12} {r['model']:<12} {r['split']:<5} {r['mAP50']:6.3f} {r['coco_mAP']:6.3f} {aps:>6} {rec:>7} "
            f"{r['train_img_s']:8.2f} {r['infer_img_s']:8.2f}"
        )
    by = {(r["set"], r["model"], r["split"]): r for r in rows}
    for (s, m, sp), r in by.items():
        tv = by.get((s, "torchvision", sp))
        if m == "faster_rcnn" and tv:
            print(
                f"{s} {sp}: convision / torchvision  mAP50 {ratio(r['mAP50'], tv['mAP50']):.2f}x  "
                f"COCO mAP {ratio(r['coco_mAP'], tv['coco_mAP']):.2f}x  train speed {r['train_img_s'] / tv['train_img_s']:.2f}x  "
                f"inference speed {r['infer_img_s'] / tv['infer_img_s']:.2f}x"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
