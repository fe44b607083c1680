import pytest
import torch
from torch import nn

from convision.models.detection.mask_rcnn import (
    MaskHead,
    MaskRCNN,
    mask_loss,
    mask_rcnn,
    mask_targets,
    paste_masks,
)
from tests.models.detection.test_faster_rcnn import _tiny as tiny_faster_rcnn


def _tiny(num_classes=2):
    """Mask R-CNN on test_faster_rcnn's random 4-conv stride-16 Faster R-CNN (RoIAlign)."""
    base = tiny_faster_rcnn(num_classes, pooling="roi_align")
    return MaskRCNN(
        base.body, base.rpn, base.roi_heads, MaskHead(64, num_classes, dim=32)
    )


def test_mask_targets_equal_a_hand_computation():
    # left half of a 100 x 100 image; a 60-px RoI from x=20 holds 30 px of it: exactly 14 of 28 columns
    gt = torch.zeros(1, 100, 100)
    gt[0, :, :50] = 1
    t = mask_targets(gt, torch.tensor([[20.0, 0.0, 80.0, 40.0]]), torch.tensor([0]))
    expected = torch.zeros(28, 28)
    expected[:, :14] = 1
    assert torch.equal(t[0], expected)
    # a square [30, 70)^2 in the RoI [10, 90]^2: cell i (2.857 px) has its centre 10 + (i + .5) 80 / 28
    # inside [30, 70] for i = 7..20
    sq = torch.zeros(2, 100, 100)
    sq[1, 30:70, 30:70] = 1
    t = mask_targets(
        sq,
        torch.tensor([[10.0, 10.0, 90.0, 90.0], [0.0, 0.0, 28.0, 28.0]]),
        torch.tensor([1, 0]),
    )
    expected = torch.zeros(28, 28)
    expected[7:21, 7:21] = 1
    assert torch.equal(t[0], expected)
    assert t[1].sum() == 0  # matched to the empty mask 0
    # a box 28 px wide at integer corners samples the mask one pixel per cell
    t = mask_targets(sq, torch.tensor([[40.0, 50.0, 68.0, 78.0]]), torch.tensor([1]))
    assert torch.equal(t[0], sq[1, 50:78, 40:68])


def test_paste_masks_places_the_mask_at_the_box():
    full = torch.ones(1, 28, 28)
    out = paste_masks(full, torch.tensor([[10.0, 20.0, 30.0, 50.0]]), (64, 64))
    assert out.dtype == torch.bool and out.shape == (1, 64, 64)
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[20:50, 10:30] = True
    assert torch.equal(out[0], expected)
    # a 28-px box maps one cell to one pixel: the left 14 columns land on x = 10..23
    left = torch.zeros(1, 28, 28)
    left[0, :, :14] = 1
    out = paste_masks(left, torch.tensor([[10.0, 20.0, 38.0, 48.0]]), (64, 64))
    expected = torch.zeros(64, 64, dtype=torch.bool)
    expected[20:48, 10:24] = True
    assert torch.equal(out[0], expected)
    # clipped at the image border, nothing outside the box, probabilities when asked
    probs = paste_masks(
        torch.full((1, 28, 28), 0.7),
        torch.tensor([[50.0, 50.0, 90.0, 90.0]]),
        (64, 64),
        None,
    )
    assert torch.allclose(probs[0, 50:, 50:], torch.tensor(0.7))
    assert probs[0, :50].sum() == 0 and probs[0, :, :50].sum() == 0
    # round trip: the pasted target of a box is the target again (the cells tile the box)
    gt = torch.zeros(1, 64, 64)
    gt[0, 8:40, 12:44] = 1
    box = torch.tensor([[4.0, 4.0, 60.0, 60.0]])
    t = mask_targets(gt, box, torch.tensor([0]))
    assert torch.equal(paste_masks(t, box, (64, 64))[0].float(), gt[0])


def test_mask_loss_uses_the_ground_truth_class_only():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 28, 28)
    labels = torch.tensor([1, 3, 4])  # internal ids: channel label - 1
    targets = (torch.rand(3, 28, 28) > 0.5).float()
    loss = mask_loss(logits, labels, targets)
    other = logits.clone()
    for r, k in enumerate(labels - 1):
        keep = other[r, k].clone()
        other[r] = torch.randn(4, 28, 28) * 10
        other[r, k] = keep
    assert torch.allclose(loss, mask_loss(other, labels, targets))
    manual = torch.stack(
        [
            nn.functional.binary_cross_entropy_with_logits(logits[r, k - 1], targets[r])
            for r, k in enumerate(labels.tolist())
        ]
    ).mean()
    assert torch.allclose(loss, manual)


def _scene(seed):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, 64, 64, generator=g) * 0.3
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    masks[0] = (yy - 20) ** 2 + (xx - 20) ** 2 < 14**2  # a disc
    masks[1, 34:58, 30:60] = True  # a rectangle
    img[:, masks[0]] = torch.tensor([0.9, 0.2, 0.1])[:, None]
    img[:, masks[1]] = torch.tensor([0.1, 0.8, 0.3])[:, None]
    boxes = torch.tensor([[6.0, 6.0, 34.0, 34.0], [30.0, 34.0, 60.0, 58.0]])
    return img, {"boxes": boxes, "labels": torch.tensor([0, 1]), "masks": masks}


def test_mask_loss_on_positive_rois_only_and_not_on_negative_images():
    torch.manual_seed(0)
    model = _tiny()
    model.train()
    seen = {}
    sample_batch = model.roi_heads.sample_batch

    def spy(*a, **k):
        out = sample_batch(*a, **k)
        seen["fg"] = int((out[1] > 0).sum())
        return out

    model.roi_heads.sample_batch = spy
    rois = []
    model.mask_head.register_forward_hook(lambda m, i, o: rois.append(i[0].shape[0]))
    img, t = _scene(0)
    losses = model([img], [t])
    assert set(losses) == {"rpn_cls", "rpn_box", "roi_cls", "roi_box", "roi_mask"}
    assert seen["fg"] > 0 and rois == [seen["fg"]]
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.long),
        "masks": torch.zeros(0, 64, 64, dtype=torch.bool),
    }
    model.zero_grad()
    losses = model([img], [empty])
    assert losses["roi_mask"] == 0
    sum(losses.values()).backward()
    assert all(
        p.grad is None or p.grad.abs().sum() == 0 for p in model.mask_head.parameters()
    )


def test_training_steps_reduce_the_mask_loss_and_eval_contract():
    torch.manual_seed(0)
    model = _tiny()
    batch = [_scene(0), _scene(1)]
    images, targets = [b[0] for b in batch], [b[1] for b in batch]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    history = []
    for _ in range(40):
        losses = model(images, targets)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append(float(losses["roi_mask"].detach()))
    assert sum(history[-5:]) / 5 < 0.6 * sum(history[:5]) / 5
    model.eval()
    with torch.no_grad():
        out = model(images)
    for o in out:
        assert set(o) == {"boxes", "labels", "scores", "masks", "mask_probs"}
        n = len(o["boxes"])
        assert o["masks"].shape == (n, 64, 64) and o["masks"].dtype == torch.bool
        assert o["mask_probs"].shape == (n, 28, 28)


def test_builder_and_bad_targets():
    model = mask_rcnn(
        num_classes=3,
        backbone="mobilenet_v2",
        weights=None,
        dilated_tail=False,
        anchor_sizes=(16, 32),
        head_dim=32,
        mask_dim=16,
    )
    assert model.mask_size == 28 and model.roi_heads.pooler.pooling == "roi_align"
    assert model.mask_head.predictor.out_channels == 3
    model.train()
    img, t = _scene(0)
    with pytest.raises(ValueError, match="masks"):
        model([img], [{"boxes": t["boxes"], "labels": t["labels"]}])
    with pytest.raises(ValueError, match="masks"):
        model([img], [{**t, "masks": t["masks"][:1]}])


def test_the_head_as_1x1_convolutions_and_pixel_shuffle_is_exact():
    torch.manual_seed(0)
    head = MaskHead(8, 3, dim=6)
    nn.init.normal_(head.upsample.bias)
    # the whole head equals the plain layer-by-layer computation, gradients included
    nn.init.normal_(head.predictor.bias)
    feats = torch.randn(5, 8, 14, 14)
    plain = head.predictor(torch.relu(head.upsample(head.convs(feats))))
    fused = head(feats)
    assert torch.allclose(fused, plain, atol=1e-5)
    params = [head.upsample.weight, head.predictor.weight, head.predictor.bias]
    g = torch.randn_like(plain)
    for a, b in zip(
        torch.autograd.grad(fused, params, g), torch.autograd.grad(plain, params, g)
    ):
        assert torch.allclose(a, b, atol=1e-4)
