import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d, box_iou

from convision.models.detection.fast_rcnn import fast_rcnn
from convision.models.detection.faster_rcnn import (
    ConvFrozenBN,
    FasterRCNN,
    build_body,
    build_roi_heads,
    faster_rcnn,
)
from convision.models.detection.rpn import RegionProposalNetwork

SMALL = dict(
    head_dim=32,
    rpn_channels=16,
    rpn_pre_nms_train=200,
    rpn_post_nms_train=64,
    rpn_pre_nms_test=200,
    rpn_post_nms_test=32,
    roi_batch_size=32,
    rpn_batch_size=64,
)


def _tiny(num_classes=2, pooling="roi_pool"):
    """A Faster R-CNN on a random 4-conv stride-16 body (fast enough to overfit in a test)."""
    layers, c = [], 3
    for out in (16, 32, 32, 64):
        layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
        c = out
    rpn = RegionProposalNetwork(
        64,
        mid_channels=32,
        anchor_sizes=(32, 64),
        batch_size_per_image=64,
        pre_nms_train=200,
        post_nms_train=64,
        pre_nms_test=200,
        post_nms_test=32,
    )
    heads = build_roi_heads(
        channels=64,
        num_classes=num_classes,
        classifier=None,
        pooling=pooling,
        roi_size=4,
        spp_levels=(2, 1),
        head_dim=64,
        batch_size_per_image=32,
    )
    return FasterRCNN(nn.Sequential(*layers), rpn, heads)


def _scene(h=96, w=96, box=(24, 20, 72, 60)):
    img = torch.rand(3, h, w) * 0.3
    x1, y1, x2, y2 = box
    img[:, y1:y2, x1:x2] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
    return img, torch.tensor([list(map(float, box))])


def test_train_losses_backward_and_eval_contract_mixed_sizes():
    torch.manual_seed(0)
    model = faster_rcnn(
        num_classes=3,
        backbone="resnet18",
        weights=None,
        anchor_sizes=(16, 32, 64),
        **SMALL,
    )
    images = [
        torch.rand(3, 96, 128),
        torch.rand(3, 64, 80),
    ]  # different sizes, one negative image
    targets = [
        {
            "boxes": torch.tensor([[10.0, 12.0, 50.0, 70.0], [60.0, 5.0, 120.0, 40.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"rpn_cls", "rpn_box", "roi_cls", "roi_box"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert losses["roi_box"] > 0 and losses["rpn_box"] > 0
    sum(losses.values()).backward()
    for part in (model.body, model.rpn.head, model.roi_heads.box_head):
        assert any(
            p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()
        )
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, im in zip(out, images):
        h, w = im.shape[1:]
        assert set(o) == {"boxes", "labels", "scores"}
        assert (
            o["boxes"].shape[1] == 4
            and len(o["boxes"]) == len(o["labels"]) == len(o["scores"]) <= 100
        )
        assert (
            o["labels"].dtype == torch.int64
            and ((o["labels"] >= 0) & (o["labels"] < 3)).all()
        )
        assert (
            (o["boxes"][:, :2] >= 0).all()
            and (o["boxes"][:, 2] <= w).all()
            and (o["boxes"][:, 3] <= h).all()
        )
        assert (o["scores"][:-1] >= o["scores"][1:]).all() and (
            o["scores"] > 0.05
        ).all()


def test_negative_batch_trains():
    torch.manual_seed(0)
    model = _tiny()
    model.train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = model([torch.rand(3, 64, 64), torch.rand(3, 64, 64)], [empty, empty])
    assert (
        losses["rpn_box"] == 0
        and losses["roi_box"] == 0
        and losses["rpn_cls"] > 0
        and losses["roi_cls"] > 0
    )
    sum(losses.values()).backward()
    assert model.roi_heads.box_head.cls_score.weight.grad.abs().sum() > 0


def test_overfit_single_image_finds_the_box():
    torch.manual_seed(0)
    model = _tiny()
    img, gt = _scene(64, 64, (16, 12, 48, 44))
    targets = [{"boxes": gt, "labels": torch.tensor([1])}]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(50):
        loss = sum(model([img], targets).values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first
    model.eval()
    with torch.no_grad():
        out = model([img])[0]
    assert out["labels"][0] == 1
    assert box_iou(out["boxes"][:1], gt).item() > 0.6


def test_fast_rcnn_with_proposals_and_spp():
    torch.manual_seed(0)
    model = fast_rcnn(
        num_classes=2,
        backbone="resnet18",
        weights=None,
        pooling="spp",
        spp_levels=(2, 1),
        head_dim=32,
    )
    img, gt = _scene(64, 80, (10, 10, 40, 50))
    props = [
        torch.tensor(
            [[8.0, 8.0, 42.0, 48.0], [0.0, 0.0, 30.0, 30.0], [40.0, 20.0, 78.0, 60.0]]
        )
    ]
    model.train()
    losses = model([img], [{"boxes": gt, "labels": torch.tensor([1])}], proposals=props)
    assert set(losses) == {"roi_cls", "roi_box"} and all(
        torch.isfinite(v) for v in losses.values()
    )
    sum(losses.values()).backward()
    with pytest.raises(ValueError):
        model([img], [{"boxes": gt, "labels": torch.tensor([1])}])
    model.eval()
    with torch.no_grad():
        out = model([img], proposals=props)[0]
    assert ((out["labels"] >= 0) & (out["labels"] < 2)).all() and (
        out["boxes"][:, 2] <= 80
    ).all()


def test_mobilenet_v2_body_pretrained_stride16():
    model = faster_rcnn(
        num_classes=2
    )  # MobileNetV2 ImageNet weights from the local hub cache
    x = torch.rand(1, 3, 64, 96)
    assert model.body(x).shape == (1, 320, 4, 6)
    assert any(isinstance(m, ConvFrozenBN) for m in model.body.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.body.modules())
    assert (
        not model.body[0][0][0].conv.weight.requires_grad
        and model.body[2][3].conv[0][0].conv.weight.requires_grad
    )
    # folding the frozen norms into the convolutions changes nothing: same outputs as conv + FrozenBatchNorm2d
    unfused, _, _ = build_body("mobilenet_v2", "IMAGENET1K_V1", fuse_frozen_bn=False)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in unfused.modules()) and not any(
        isinstance(m, ConvFrozenBN) for m in unfused.modules()
    )
    with torch.no_grad():
        assert torch.allclose(model.body(x), unfused(x), atol=1e-4, rtol=1e-4)
    dil = [
        m.dilation
        for m in model.body[2].modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    assert dil == [(1, 1), (2, 2), (2, 2), (2, 2)]
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])
    assert len(out) == 1 and set(out[0]) == {"boxes", "labels", "scores"}


def test_mobilenet_v2_body_without_the_dilated_tail_and_with_trainable_norms():
    model = faster_rcnn(
        num_classes=2, dilated_tail=False, freeze_bn=False, freeze_early=False
    )
    x = torch.rand(2, 3, 64, 96)
    assert model.body(x).shape == (2, 96, 4, 6)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.body.modules())
    assert all(p.requires_grad for p in model.body.parameters())
    assert fast_rcnn(num_classes=2, dilated_tail=False).body(x).shape == (2, 96, 4, 6)


def test_conv_frozen_bn_same_gradients_as_conv_then_norm():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    bn = FrozenBatchNorm2d(4)
    bn.weight.copy_(torch.rand(4) + 0.5)
    bn.bias.copy_(torch.randn(4))
    bn.running_mean.copy_(torch.randn(4))
    bn.running_var.copy_(torch.rand(4) + 0.1)
    x = torch.randn(2, 3, 8, 8)
    ref = bn(conv(x))
    (g_ref,) = torch.autograd.grad(ref.square().sum(), conv.weight)
    fused = ConvFrozenBN(conv, bn)(x)
    (g_fused,) = torch.autograd.grad(fused.square().sum(), conv.weight)
    assert torch.allclose(ref, fused, atol=1e-5) and torch.allclose(
        g_ref, g_fused, atol=1e-4
    )
