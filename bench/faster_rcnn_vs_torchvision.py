"""Our Faster R-CNN against torchvision's, same network, same settings: inference and training speed.

Both models use the same stride-16 MobileNetV2 body (ImageNet weights, frozen batch norms, dilated
last blocks; see convision.models.detection.faster_rcnn) with the same weights: torchvision's as conv
+ FrozenBatchNorm2d modules (what torchvision's own detection backbones use), ours with each frozen
norm folded into its convolution (same outputs and gradients, checked below), 9 anchors on the one
feature map (torchvision's AnchorGenerator with our sizes and ratios; its base anchors round a little
differently and sit on cell corners, ours on cell centres), the same RPN (3x3 conv of the body's
width; torchvision's sigmoid objectness is copied into our 2-way softmax as (0, logit), which gives
the same probability), 7x7 RoI max pooling (torchvision.ops.roi_pool in both; torchvision's RoIHeads
gets a small wrapper module in place of MultiScaleRoIAlign), the same two 1024-wide fc layers and
predictor weights, the same RPN/RoI settings (6000 -> 300 proposals at test, 12000 -> 2000 in
training, 256 anchors, 128 RoIs, score 0.05, NMS 0.3, 100 detections) and torchvision's transform
set to sizes that do not resize. With copied weights the two produce near-identical detections.

Timed (median of ``--repeats``): inference of a batch of ``--batch`` ``--size`` x ``--size`` images
(eval, no_grad) and one training step (forward + backward) on the same batch with one box per image.
Prints ``torchvision time / ours`` (> 1: ours faster). A last line times our model with Fast R-CNN's
truncated SVD of fc6/fc7 (``convision.models.detection.svd``), which changes the outputs slightly.

    python bench/faster_rcnn_vs_torchvision.py [--device cpu|cuda] [--batch 4] [--size 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign, roi_pool

from convision.models.detection.faster_rcnn import build_body, faster_rcnn

NUM_CLASSES = 5  # untrained heads give ~1/6 per class: every RoI passes the 0.05 threshold (worst-case post-processing)
SIZES = (64, 128, 256)
RATIOS = (0.5, 1.0, 2.0)


class BodyWrapper(nn.Module):
    def __init__(self, body: nn.Module, channels: int) -> None:
        super().__init__()
        self.body = body
        self.out_channels = channels

    def forward(self, x):
        return self.body(x)


class RoIPool7(nn.Module):
    """torchvision RoIHeads' box_roi_pool interface around torchvision.ops.roi_pool (7x7, 1/16)."""

    def forward(self, features, proposals, image_shapes):
        return roi_pool(features["0"], proposals, (7, 7), 1.0 / 16)


def build_pair(size: int):
    ours = faster_rcnn(
        num_classes=NUM_CLASSES,
        backbone="mobilenet_v2",
        weights="IMAGENET1K_V1",
        anchor_sizes=SIZES,
        anchor_ratios=RATIOS,
        rpn_channels=320,
        rpn_min_size=1e-3,
    )
    channels = 320
    anchor_gen = AnchorGenerator(sizes=(SIZES,), aspect_ratios=(RATIOS,))
    rpn_head = RPNHead(channels, anchor_gen.num_anchors_per_location()[0])
    box_head = TwoMLPHead(channels * 49, 1024)
    predictor = FastRCNNPredictor(1024, NUM_CLASSES + 1)
    tv_body, _, _ = build_body("mobilenet_v2", "IMAGENET1K_V1", fuse_frozen_bn=False)
    with torch.no_grad():
        x = torch.rand(2, 3, size, size)
        assert torch.allclose(ours.body(x), tv_body(x), atol=1e-4, rtol=1e-4), (
            "bodies differ"
        )
    tv = TVFasterRCNN(
        BodyWrapper(tv_body, channels),
        num_classes=None,
        min_size=size,
        max_size=size,
        image_mean=ours.mean.tolist(),
        image_std=ours.std.tolist(),
        rpn_anchor_generator=anchor_gen,
        rpn_head=rpn_head,
        rpn_pre_nms_top_n_train=12000,
        rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_test=300,
        rpn_nms_thresh=0.7,
        rpn_fg_iou_thresh=0.7,
        rpn_bg_iou_thresh=0.3,
        rpn_batch_size_per_image=256,
        rpn_positive_fraction=0.5,
        box_roi_pool=MultiScaleRoIAlign(
            ["0"], 7, 2
        ),  # replaced below (the constructor checks the type)
        box_head=box_head,
        box_predictor=predictor,
        box_score_thresh=0.05,
        box_nms_thresh=0.3,
        box_detections_per_img=100,
        box_fg_iou_thresh=0.5,
        box_bg_iou_thresh=0.5,
        box_batch_size_per_image=128,
        box_positive_fraction=0.25,
    )
    tv.roi_heads.box_roi_pool = RoIPool7()
    a = anchor_gen.num_anchors_per_location()[0]
    with torch.no_grad():  # same head weights in both
        tv_conv = tv.rpn.head.conv[0][0]
        ours.rpn.head.conv.weight.copy_(tv_conv.weight)
        ours.rpn.head.conv.bias.copy_(tv_conv.bias)
        ours.rpn.head.cls_logits.weight.zero_()
        ours.rpn.head.cls_logits.bias.zero_()
        ours.rpn.head.cls_logits.weight[a:].copy_(tv.rpn.head.cls_logits.weight)
        ours.rpn.head.cls_logits.bias[a:].copy_(tv.rpn.head.cls_logits.bias)
        ours.rpn.head.bbox_pred.load_state_dict(tv.rpn.head.bbox_pred.state_dict())
        mlp = ours.roi_heads.box_head.body
        mlp[0].load_state_dict(box_head.fc6.state_dict())
        mlp[2].load_state_dict(box_head.fc7.state_dict())
        ours.roi_heads.box_head.cls_score.load_state_dict(
            predictor.cls_score.state_dict()
        )
        ours.roi_heads.box_head.bbox_pred.weight.copy_(predictor.bbox_pred.weight[4:])
        ours.roi_heads.box_head.bbox_pred.bias.copy_(predictor.bbox_pred.bias[4:])
    return ours, tv


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fns, device, repeats: int, warmup: int = 2) -> list[float]:
    """Median time of each function; the functions run alternately so that load drift hits all alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--svd-ranks",
        type=int,
        nargs="+",
        default=[256, 128],
        help="truncated SVD ranks of fc6, fc7",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    ours, tv = build_pair(args.size)
    ours.to(device)
    tv.to(device)
    images = [
        torch.rand(3, args.size, args.size, device=device) for _ in range(args.batch)
    ]
    targets = []
    for _ in range(args.batch):
        xy = torch.rand(2, device=device) * args.size * 0.5
        wh = 16 + torch.rand(2, device=device) * args.size * 0.4
        targets.append(
            {
                "boxes": torch.cat((xy, xy + wh))[None],
                "labels": torch.randint(0, NUM_CLASSES, (1,), device=device),
            }
        )

    def infer(model):
        model.eval()
        with torch.no_grad():
            return model(images)

    out_ours, out_tv = infer(ours), infer(tv)
    print(
        f"device {device}, batch {args.batch} x {args.size}x{args.size}, threads {torch.get_num_threads()}"
    )
    print(
        f"detections per image: ours {[len(o['boxes']) for o in out_ours]}, torchvision {[len(o['boxes']) for o in out_tv]}"
    )
    t_ours, t_tv = timeit(
        [lambda: infer(ours), lambda: infer(tv)], device, args.repeats
    )
    print(
        f"inference: ours {t_ours * 1000:.1f} ms, torchvision {t_tv * 1000:.1f} ms, ratio tv/ours {t_tv / t_ours:.2f}"
    )

    def train_step(model, tv_targets: bool):
        model.train()
        model.zero_grad(set_to_none=True)
        losses = model(
            images,
            [dict(t) for t in targets]
            if not tv_targets
            else [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets],
        )
        sum(losses.values()).backward()

    t_ours, t_tv = timeit(
        [lambda: train_step(ours, False), lambda: train_step(tv, True)],
        device,
        args.repeats,
    )
    print(
        f"training step: ours {t_ours * 1000:.1f} ms, torchvision {t_tv * 1000:.1f} ms, ratio tv/ours {t_tv / t_ours:.2f}"
    )

    # Fast R-CNN's truncated SVD of fc6/fc7 (section 3.1): an approximation, so reported on its own line
    import copy

    from convision.models.detection.svd import truncated_svd_

    svd = truncated_svd_(copy.deepcopy(ours), tuple(args.svd_ranks)).eval()
    t_svd, t_tv = timeit([lambda: infer(svd), lambda: infer(tv)], device, args.repeats)
    print(
        f"inference with truncated SVD ranks {tuple(args.svd_ranks)} (approximate): ours {t_svd * 1000:.1f} ms, "
        f"torchvision {t_tv * 1000:.1f} ms, ratio tv/ours {t_tv / t_svd:.2f}"
    )


if __name__ == "__main__":
    main()
