"""YOLOv1: the paper's 24-conv + 2-FC network and a small variant (shapes), target assignment (cell,
largest object per cell, responsible predictor), the sum-squared loss term by term, inference
(class-specific scores, per-class NMS, boxes in each input's pixels) and overfitting one image."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from convision.errors import ConfigError
from convision.models.detection.yolo import YOLOv1, yolov1


@pytest.fixture(autouse=True)
def _one_thread():
    """These networks are tiny: one thread is several times faster than two on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(**kw) -> YOLOv1:
    args = dict(
        num_classes=3, width=0.0625, fc_hidden=32, image_size=64, grid=4, dropout=0.0
    )
    args.update(kw)
    return yolov1(**args)


def test_darknet_is_the_papers_network():
    with torch.device(
        "meta"
    ):  # shapes only: the 270M-parameter network is not allocated
        model = yolov1(num_classes=20)
        out = model.predict_grid(torch.empty(2, 3, 448, 448))
        feats = model.features(torch.empty(1, 3, 448, 448))
    assert out.shape == (2, 7, 7, 30)  # S x S x (B*5 + C)
    assert feats.shape == (1, 1024, 7, 7)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 24
    assert (convs[0].kernel_size, convs[0].stride, convs[0].out_channels) == (
        (7, 7),
        (2, 2),
        64,
    )
    assert (
        sum(c.kernel_size == (1, 1) for c in convs) == 9
        and sum(c.kernel_size == (3, 3) for c in convs) == 14
    )
    assert [c.out_channels for c in convs[-6:]] == [
        512,
        1024,
        1024,
        1024,
        1024,
        1024,
    ] and convs[-3].stride == (2, 2)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 4
    assert all(
        m.negative_slope == 0.1 for m in model.modules() if isinstance(m, nn.LeakyReLU)
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fcs = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [
        (1024 * 7 * 7, 4096),
        (4096, 7 * 7 * 30),
    ]
    assert isinstance(model.head[-1], nn.Linear)  # linear final layer
    assert [m.p for m in model.head if isinstance(m, nn.Dropout)] == [0.5]
    tiny = _tiny()  # darknet reads pixels in [0, 1], no mean subtracted
    assert torch.all(tiny.mean == 0) and torch.all(tiny.std == 1)
    assert "background" in YOLOv1.__doc__


def test_small_variants_output_shapes():
    model = _tiny(grid=3, boxes_per_cell=3, num_classes=4).eval()
    x, sizes = model.preprocess([torch.rand(3, 40, 90), torch.rand(3, 100, 64)])
    assert x.shape == (2, 3, 64, 64) and sizes == [(40, 90), (100, 64)]
    assert model.predict_grid(x).shape == (2, 3, 3, 3 * 5 + 4)
    mb = yolov1(
        num_classes=2, backbone="mobilenet_v2", image_size=96, grid=5, head_channels=16
    ).eval()
    assert mb.predict_grid(torch.rand(1, 3, 96, 96)).shape == (1, 5, 5, 2 * 5 + 2)
    assert torch.allclose(mb.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert len(mb([torch.rand(3, 50, 70)])) == 1


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="backbone"):
        yolov1(num_classes=2, backbone="alexnet")
    with pytest.raises(ConfigError, match="multiple of 64"):
        yolov1(num_classes=2, image_size=100)
    with pytest.raises(ConfigError, match="weights"):
        yolov1(num_classes=2, weights="IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="num_classes"):
        yolov1(num_classes=0)
    with pytest.raises(ConfigError, match="score_threshold"):
        _tiny(score_threshold=1.5)


def test_assignment_cell_offsets_and_one_object_per_cell():
    model = _tiny(grid=7)
    # W = 140, H = 70: cells are 20 x 10 pixels. Centre (50, 45) -> column 2, row 4, offsets (0.5, 0.5).
    boxes = torch.tensor(
        [[30.0, 40, 70, 50], [45, 41, 55, 49], [100, 5, 100, 9], [-20, 60, 20, 80]]
    )
    targets = [{"boxes": boxes, "labels": torch.tensor([0, 1, 2, 1])}]
    gt = model.assign(targets, [(70, 140)], torch.device("cpu"))
    # box 1 shares box 0's cell and is smaller: dropped; box 2 has zero width: ignored;
    # box 3 is clipped to (0, 60, 20, 70): centre (10, 65) -> column 0, row 6.
    assert (
        gt["row"].tolist() == [4, 6]
        and gt["col"].tolist() == [2, 0]
        and gt["label"].tolist() == [0, 1]
    )
    expected = torch.tensor(
        [
            [0.5, 0.5, (40 / 140) ** 0.5, (10 / 70) ** 0.5],
            [0.5, 0.5, (20 / 140) ** 0.5, (10 / 70) ** 0.5],
        ]
    )
    assert torch.allclose(gt["box"], expected)
    assert torch.allclose(
        gt["xyxy"][0], torch.tensor([30 / 140, 40 / 70, 70 / 140, 50 / 70])
    )
    # the larger of two objects in one cell wins whatever the order
    flipped = [{"boxes": boxes[[1, 0]], "labels": torch.tensor([1, 0])}]
    assert model.assign(flipped, [(70, 140)], torch.device("cpu"))[
        "label"
    ].tolist() == [0]
    # the same object in an image of another size has the same normalised target
    scaled = [
        {"boxes": boxes[:1] * torch.tensor([2.0, 3, 2, 3]), "labels": torch.tensor([0])}
    ]
    gt2 = model.assign(scaled, [(210, 280)], torch.device("cpu"))
    assert gt2["row"].tolist() == [4] and torch.allclose(gt2["box"], expected[:1])


def test_responsible_predictor_is_the_max_iou_one():
    model = _tiny(grid=2, boxes_per_cell=3)
    gt = model.assign(
        [{"boxes": torch.tensor([[10.0, 10, 50, 40]]), "labels": torch.tensor([0])}],
        [(100, 100)],
        torch.device("cpu"),
    )
    assert gt["row"].tolist() == [0] and gt["col"].tolist() == [0]
    # three predictions in cell (0, 0) of a 2x2 grid: x, y offsets (cell side 0.5), sqrt w, sqrt h
    pred = torch.tensor(
        [[[0.6, 0.5, 0.2, 0.2], [0.55, 0.5, 0.6, 0.5], [0.1, 0.1, 0.9, 0.9]]]
    )
    best, iou = model.responsible(pred, gt)
    decoded = model._decode_cells(pred[0], torch.tensor(0.0), torch.tensor(0.0))
    ious = box_iou(decoded, gt["xyxy"])[:, 0]
    assert int(best) == int(ious.argmax()) == 1 and torch.allclose(iou, ious[1:2])
    # no overlap at all: the closest in (x, y, sqrt w, sqrt h)
    far = torch.tensor(
        [[[1.9, 1.9, 0.1, 0.1], [1.5, 1.9, 0.1, 0.1], [1.9, 1.9, 0.05, 0.05]]]
    )
    best, iou = model.responsible(far, gt)
    assert int(best) == 1 and float(iou) == 0.0


def _perfect(model: YOLOv1, targets, sizes) -> torch.Tensor:
    """A raw output with loss 0: predictor 1 exact with confidence 1 (IoU 1), predictor 0 a
    different box with confidence 0, one-hot classes; junk where the loss must not look."""
    s, b, k = model.grid, model.boxes_per_cell, model.num_classes
    out = torch.rand(len(targets), s, s, b * 5 + k)
    boxes = out[..., : b * 5].view(len(targets), s, s, b, 5)
    boxes[..., 4] = 0.0
    gt = model.assign(targets, sizes, torch.device("cpu"))
    i, r, c = gt["image"], gt["row"], gt["col"]
    boxes[i, r, c, 1, :4] = gt["box"]
    boxes[i, r, c, 1, 4] = 1.0
    boxes[i, r, c, 0, :4] = gt["box"] * torch.tensor([1.0, 1.0, 0.5, 0.5])
    out[i, r, c, b * 5 :] = torch.nn.functional.one_hot(gt["label"], k).float()
    return out


def test_loss_zero_when_perfect_and_each_term_reacts_to_its_error():
    model = _tiny(grid=4)
    targets = [
        {
            "boxes": torch.tensor([[4.0, 6, 30, 40], [40, 36, 62, 60]]),
            "labels": torch.tensor([2, 0]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    sizes = [(64, 64), (48, 80)]
    out = _perfect(model, targets, sizes)
    zero = model.loss(out, targets, sizes)
    assert set(zero) == {"coord", "conf_obj", "conf_noobj", "cls"}
    assert all(float(v) < 1e-6 for v in zero.values()), zero
    gt = model.assign(targets, sizes, torch.device("cpu"))
    n, r, c = int(gt["image"][0]), int(gt["row"][0]), int(gt["col"][0])
    er, ec = next(
        (a, e)
        for a in range(4)
        for e in range(4)
        if (a, e) not in zip(gt["row"].tolist(), gt["col"].tolist())
    )

    def changed(index, delta):
        o = out.clone()
        o[index] += delta
        return {k: float(v) for k, v in model.loss(o, targets, sizes).items()}

    moved = changed(
        (n, r, c, 5 + 0), 0.1
    )  # x of the responsible predictor (predictor 1)
    assert moved["coord"] == pytest.approx(
        5.0 * 0.01 / 2, rel=1e-4
    )  # lambda_coord * err^2 / batch
    assert (
        moved["conf_obj"] > 0 and moved["cls"] < 1e-6 and moved["conf_noobj"] < 1e-6
    )  # IoU target moved
    noobj = changed((1, er, ec, 4), 0.4)  # confidence of a box in an empty cell
    assert (
        noobj["conf_noobj"] == pytest.approx(0.5 * 0.16 / 2, rel=1e-4)
        and noobj["coord"] < 1e-6
    )
    other = changed(
        (n, r, c, 4), 0.4
    )  # the non-responsible box of an object cell: no-object too
    assert other["conf_noobj"] == pytest.approx(0.5 * 0.16 / 2, rel=1e-4)
    assert changed((n, r, c, 10 + 1), 0.3)["cls"] == pytest.approx(0.09 / 2, rel=1e-4)
    # class outputs and boxes of cells without objects are not penalised
    assert all(v < 1e-6 for v in changed((1, er, ec, 10 + 1), 0.7).values())
    assert all(v < 1e-6 for v in changed((1, er, ec, 0), 0.7).values())


def test_lambdas_scale_their_terms_and_loss_is_per_image():
    targets = [{"boxes": torch.tensor([[4.0, 6, 30, 40]]), "labels": torch.tensor([1])}]
    sizes = [(64, 64)]
    torch.manual_seed(0)
    out = torch.rand(1, 4, 4, 13)
    base = _tiny(grid=4).loss(out, targets, sizes)
    assert all(float(v) > 0 for v in base.values())
    coord = _tiny(grid=4, lambda_coord=10.0).loss(out, targets, sizes)
    noobj = _tiny(grid=4, lambda_noobj=1.0).loss(out, targets, sizes)
    assert torch.allclose(coord["coord"], 2 * base["coord"]) and torch.allclose(
        noobj["conf_noobj"], 2 * base["conf_noobj"]
    )
    for key in ("conf_obj", "conf_noobj", "cls"):
        assert torch.allclose(coord[key], base[key])
    for key in ("coord", "conf_obj", "cls"):
        assert torch.allclose(noobj[key], base[key])
    twice = _tiny(grid=4).loss(out.repeat(2, 1, 1, 1), targets * 2, sizes * 2)
    assert all(torch.allclose(twice[k], base[k]) for k in base)


def test_inference_contract_nms_and_pixels_of_each_image():
    model = _tiny(grid=4, detections_per_image=10, score_threshold=0.1).eval()
    torch.manual_seed(1)
    out = torch.rand(2, 4, 4, 13)
    sizes = [(50, 120), (90, 30)]
    dets = model.postprocess(out, sizes)
    for d, (h, w) in zip(dets, sizes):
        boxes, labels, scores = d["boxes"], d["labels"], d["scores"]
        assert (
            0 < len(scores) <= 10
            and labels.dtype == torch.int64
            and boxes.shape == (len(scores), 4)
        )
        assert labels.min() >= 0 and labels.max() < 3 and scores.min() > 0.1
        assert torch.all(scores[:-1] >= scores[1:])
        assert (
            boxes[:, 0::2].min() >= 0
            and boxes[:, 2].max() <= w
            and boxes[:, 1::2].min() >= 0
            and boxes[:, 3].max() <= h
        )
        for k in range(3):
            same = boxes[labels == k]
            assert torch.all(box_iou(same, same).triu(1) <= 0.5)
    # one confident box: cell (row 1, col 2), offsets (0.5, 0.25), w 0.25, h 0.5 -> own pixels of each image
    out = torch.zeros(2, 4, 4, 13)
    out[:, 1, 2, :5] = torch.tensor([0.5, 0.25, 0.5, 0.5**0.5, 0.9])
    out[:, 1, 2, 10 + 2] = 1.0
    dets = model.postprocess(out, sizes)
    for d, (h, w) in zip(dets, sizes):
        cx, cy = 2.5 / 4 * w, 1.25 / 4 * h
        expected = torch.tensor(
            [[cx - 0.125 * w, cy - 0.25 * h, cx + 0.125 * w, cy + 0.25 * h]]
        )
        assert torch.allclose(d["boxes"], expected, atol=1e-4) and d[
            "labels"
        ].tolist() == [2]
        assert d["scores"].tolist() == pytest.approx([0.9])
    # the whole pipeline: eval forward on images of different sizes keeps the contract
    dets = model([torch.rand(3, 50, 120), torch.rand(3, 90, 30)])
    assert len(dets) == 2 and all(set(d) == {"boxes", "labels", "scores"} for d in dets)


def test_negative_image_only_noobj_loss():
    model = _tiny().train()
    losses = model(
        [torch.rand(3, 40, 40)],
        [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}],
    )
    values = {k: float(v.detach()) for k, v in losses.items()}
    assert (
        values["coord"] == values["conf_obj"] == values["cls"] == 0.0
        and values["conf_noobj"] > 0
    )
    sum(losses.values()).backward()
    with pytest.raises(ValueError, match="targets"):
        model([torch.rand(3, 40, 40)])


def test_overfits_one_image():
    torch.manual_seed(0)
    model = yolov1(
        num_classes=2, width=0.0625, fc_hidden=64, image_size=64, grid=2, dropout=0.0
    )
    img = torch.rand(3, 60, 80) * 0.2
    img[:, 10:40, 20:50] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
    targets = [
        {"boxes": torch.tensor([[20.0, 10, 50, 40]]), "labels": torch.tensor([1])}
    ]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    first = None
    for _ in range(80):
        loss = sum(model([img], targets).values())
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first / 100
    det = model.eval()([img])[0]
    assert det["labels"][0] == 1 and det["scores"][0] > 0.5
    assert box_iou(det["boxes"][:1], targets[0]["boxes"])[0, 0] > 0.5
