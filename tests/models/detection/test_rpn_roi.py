import torch
from torchvision.ops import box_iou

from convision.models.detection.box_coder import ROI_WEIGHTS, decode
from convision.models.detection.roi_heads import (
    RoIBoxHead,
    RoIHeads,
    RoIPooler,
    mlp_body,
)
from convision.models.detection.rpn import RegionProposalNetwork
from convision.models.detection.spp import SpatialPyramidPooling


def _rpn(**kw):
    return RegionProposalNetwork(8, mid_channels=8, anchor_sizes=(16, 32, 64), **kw)


def test_anchor_labels_sampling_and_boundary():
    torch.manual_seed(0)
    rpn = _rpn()
    h, w = 128, 160
    anchors = rpn.anchors(h // 16, w // 16, torch.device("cpu"))
    gt = torch.tensor(
        [[10.0, 20.0, 60.0, 70.0], [90.0, 30.0, 150.0, 120.0], [0.0, 0.0, 8.0, 6.0]]
    )
    labels, matched = rpn.assign_targets(anchors, gt, (h, w))
    inside = (
        (anchors[:, 0] >= 0)
        & (anchors[:, 1] >= 0)
        & (anchors[:, 2] <= w)
        & (anchors[:, 3] <= h)
    )
    assert (~inside).any()
    assert (labels[~inside] == -1).all()  # crossing anchors ignored
    pos, neg = (labels == 1).sum().item(), (labels == 0).sum().item()
    assert 0 < pos <= 128 and pos + neg == 256
    iou = box_iou(anchors, gt)
    # positives: IoU >= 0.7 or the best inside anchor of a gt box; negatives: < 0.3
    best = iou[inside].max(0).values
    for p in torch.nonzero(labels == 1).squeeze(1):
        assert iou[p].max() >= 0.7 or (iou[p] == best).any()
        assert (matched[p] == gt[iou[p].argmax()]).all()
    assert (iou[labels == 0].max(1).values < 0.3).all()
    # every gt box has a positive anchor (the tiny one only via the highest-IoU rule)
    assert ((iou[labels == 1] == best).any(0) | (iou[labels == 1] >= 0.7).any(0)).all()


def test_positive_fraction_capped_at_half():
    torch.manual_seed(0)
    rpn = _rpn(batch_size_per_image=32)
    anchors = rpn.anchors(16, 16, torch.device("cpu"))
    # many gt boxes equal to inside anchors: far more than 16 positives available
    inside = anchors[(anchors[:, :2] >= 0).all(1) & (anchors[:, 2:] <= 256).all(1)]
    labels, _ = rpn.assign_targets(anchors, inside[::3], (256, 256))
    assert (labels == 1).sum() == 16 and (labels == 0).sum() == 16


def test_negative_image_only_negatives():
    rpn = _rpn()
    anchors = rpn.anchors(4, 4, torch.device("cpu"))
    labels, _ = rpn.assign_targets(anchors, torch.zeros(0, 4), (64, 64))
    assert (labels == 1).sum() == 0 and 0 < (labels == 0).sum() <= 256


def test_proposal_limits_train_and_test():
    torch.manual_seed(0)
    rpn = _rpn(pre_nms_train=300, post_nms_train=50, pre_nms_test=100, post_nms_test=20)
    feats = torch.randn(2, 8, 8, 10)
    sizes = [(128, 160), (100, 90)]
    rpn.train()
    props, losses = rpn(
        feats, sizes, [torch.tensor([[10.0, 10.0, 50.0, 60.0]]), torch.zeros(0, 4)]
    )
    assert set(losses) == {"rpn_cls", "rpn_box"} and all(
        torch.isfinite(v) for v in losses.values()
    )
    assert [len(p) for p in props] == [50, 50]
    rpn.eval()
    with torch.no_grad():
        props, losses = rpn(feats, sizes)
    assert losses == {} and all(0 < len(p) <= 20 for p in props)
    for p, (h, w) in zip(
        props, sizes
    ):  # clipped to each image's own size, non-degenerate
        assert (p[:, 0] >= 0).all() and (p[:, 2] <= w).all() and (p[:, 3] <= h).all()
        assert ((p[:, 2:] - p[:, :2]) >= 1.0).all()
        iou = box_iou(p, p) - torch.eye(len(p))
        assert iou.max() <= 0.7 + 1e-5  # NMS applied


def _heads(k=3, **kw):
    pooler = RoIPooler("roi_pool", 7, 1 / 16)
    return RoIHeads(
        pooler,
        RoIBoxHead(mlp_body(pooler.output_length(4), 16), 16, k),
        num_classes=k,
        **kw,
    )


def test_roi_sampling_counts_and_gt_included():
    torch.manual_seed(0)
    heads = _heads()
    gt = torch.tensor([[20.0, 20.0, 60.0, 60.0]])
    xy = torch.rand(500, 2) * 100
    props = torch.cat((xy, xy + 10 + torch.rand(500, 2) * 50), 1)
    props = torch.cat(
        (
            props,
            gt + torch.tensor([1.0, -1.0, 2.0, 0.0]).expand(60, 4) * torch.rand(60, 1),
        )
    )
    boxes, labels, matched = heads.sample(props, gt, torch.tensor([2]))
    fg = labels > 0
    assert len(boxes) <= 128 and 0 < fg.sum() <= 32
    assert (labels[fg] == 3).all()  # user class 2 -> internal 3
    iou = box_iou(boxes, gt).squeeze(1)
    assert (iou[fg] >= 0.5).all() and (iou[~fg] < 0.5).all()
    # with only the gt box as a foreground candidate, it is sampled
    boxes, labels, _ = heads.sample(
        torch.tensor([[0.0, 0.0, 5.0, 5.0], [70.0, 70.0, 90.0, 90.0]]),
        gt,
        torch.tensor([0]),
    )
    assert (boxes[labels > 0] == gt).all() and (labels > 0).sum() == 1


def test_fast_rcnn_bg_range():
    torch.manual_seed(0)
    heads = _heads(bg_iou_low=0.1)
    gt = torch.tensor([[20.0, 20.0, 60.0, 60.0]])
    props = torch.tensor(
        [[100.0, 100.0, 120.0, 120.0], [30.0, 30.0, 70.0, 70.0]]
    )  # IoU 0 and ~0.39
    boxes, labels, _ = heads.sample(props, gt, torch.tensor([0]))
    assert len(boxes) == 2 and not (boxes == props[0]).all(1).any()
    # negative image: every proposal is background
    boxes, labels, _ = heads.sample(
        props, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    )
    assert len(boxes) == 2 and (labels == 0).all()


def test_roi_postprocess_contract():
    torch.manual_seed(0)
    heads = _heads(k=2)
    feats = torch.randn(2, 4, 6, 6)
    props = [
        torch.tensor([[0.0, 0.0, 40.0, 40.0], [10.0, 10.0, 90.0, 80.0]]),
        torch.tensor([[5.0, 5.0, 30.0, 30.0]]),
    ]
    heads.eval()
    with torch.no_grad():
        heads.box_head.cls_score.bias.copy_(torch.tensor([-5.0, 3.0, 0.0]))
        heads.box_head.bbox_pred.bias.copy_(
            torch.tensor([0, 0, 5, 5, 0, 0, 0, 0.0])
        )  # class 0: grow e-fold
        out = heads(feats, props, [(96, 96), (48, 40)])
    assert len(out) == 2
    for o, (h, w) in zip(out, [(96, 96), (48, 40)]):
        assert o["labels"].dtype == torch.int64 and set(o["labels"].tolist()) <= {0, 1}
        assert (o["scores"][:-1] >= o["scores"][1:]).all()
        assert (
            (o["boxes"][:, 2] <= w).all()
            and (o["boxes"][:, 3] <= h).all()
            and (o["boxes"] >= 0).all()
        )
    assert out[1]["labels"][0] == 0
    expected = (
        decode(props[1], torch.tensor([[0, 0, 5, 5.0]]), ROI_WEIGHTS)
        .clamp(0)
        .minimum(torch.tensor([40.0, 48, 40, 48]))
    )
    assert torch.allclose(out[1]["boxes"][0], expected[0])


def test_spp_output_length():
    spp = SpatialPyramidPooling((6, 3, 2, 1), 1 / 16)
    feats = torch.randn(2, 5, 10, 12)
    rois = torch.tensor(
        [
            [0, 0.0, 0.0, 100.0, 80.0],
            [1, 16.0, 16.0, 40.0, 40.0],
            [1, 0.0, 0.0, 190.0, 150.0],
        ]
    )
    out = spp(feats, rois)
    assert out.shape == (3, 5 * 50) == (3, spp.output_length(5))
    # the 1x1 level is the max over the whole window
    assert torch.allclose(out[2, -5:], feats[1].amax(dim=(1, 2)))
    assert RoIPooler("spp", spp_levels=(4, 2, 1)).output_length(5) == 5 * 21
