"""Localizer: outputs, registry rebuild, parameter groups, loss, learning a toy problem, and the
mapping of predictions back to the original image's pixels."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_convert

from convision.errors import ConfigError
from convision.models import MODELS, build_model
from convision.models.localization import Localizer, build_localizer, to_pixels
from convision.tasks.localize import LocalizationTask, box_loss, predict

torch.set_num_threads(1)


def test_forward_outputs_valid_normalised_boxes():
    torch.manual_seed(0)
    m = build_localizer(
        "resnet18", num_classes=3, weights=None, strategy="scratch", hidden=16
    ).eval()
    out = m(torch.randn(2, 3, 32, 32))
    assert (
        out["logits"].shape == (2, 3)
        and out["boxes"].shape == (2, 4)
        and out["boxes_cxcywh"].shape == (2, 4)
    )
    b = out["boxes"]
    assert (b >= 0).all() and (b <= 1).all() and (b[:, 2:] > b[:, :2]).all()
    # a fresh box head starts near the centred half-size box (0.5 + small weights)
    assert torch.allclose(out["boxes_cxcywh"], torch.full((2, 4), 0.5), atol=0.05)


def test_registry_rebuilds_from_json_kwargs_and_groups_hold_the_box_head():
    assert MODELS["localizer"] is build_localizer
    kwargs = {
        "arch": "mobilenet_v2",
        "num_classes": 4,
        "weights": None,
        "strategy": "finetune",
        "hidden": 0,
    }
    a = build_model("localizer", **kwargs)
    b = build_model("localizer", **kwargs)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 32, 32)
    a.eval(), b.eval()
    assert torch.equal(a(x)["boxes"], b(x)["boxes"])
    groups = {g["name"]: g for g in a.parameter_groups(0.001, 10)}
    head_ids = {id(p) for p in groups["head"]["params"]}
    assert all(id(p) in head_ids for p in a.box_head.parameters()) and groups["head"][
        "lr"
    ] == pytest.approx(0.01)
    assert len(groups["backbone"]["params"]) == len(list(a.classifier.net.parameters()))
    with pytest.raises(ConfigError):
        build_model(
            "localizer",
            arch="resnet18",
            num_classes=3,
            weights=None,
            strategy="scratch",
            hidden=-1,
        )
    with pytest.raises(ConfigError):
        build_model(
            "localizer",
            arch="resnet18",
            num_classes=3,
            weights=None,
            strategy="scratch",
            box_input="grid",
        )


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_spatial_box_head_reads_the_last_feature_map_and_survives_deepcopy(arch):
    import copy

    torch.manual_seed(0)
    m = build_localizer(
        arch, num_classes=3, weights=None, strategy="scratch", hidden=8
    ).eval()
    assert m.box_input == "spatial" and isinstance(m.box_head[0], torch.nn.Conv2d)
    x = torch.randn(2, 3, 64, 64)
    seen = {}
    m.box_head[0].register_forward_hook(
        lambda mod, i, o: seen.update(shape=tuple(i[0].shape))
    )
    out = m(x)
    assert seen["shape"][2:] == (
        2,
        2,
    )  # stride-32 map of a 64 px input, not a pooled vector
    twin = copy.deepcopy(m)
    assert torch.equal(twin(x)["boxes"], out["boxes"])
    assert not any(
        "_localizer_map" in vars(mod) for mod in m.modules()
    )  # nothing left parked


def test_box_losses():
    pred = box_convert(torch.tensor([[0.1, 0.1, 0.5, 0.5]]), "xyxy", "cxcywh")
    assert box_loss(pred, torch.tensor([[0.1, 0.1, 0.5, 0.5]])).item() == pytest.approx(
        0.0, abs=1e-7
    )
    true = torch.tensor([[0.2, 0.1, 0.6, 0.5]])  # cx off by 0.1
    assert box_loss(pred, true, "mse").item() == pytest.approx(0.01 / 4)
    assert box_loss(pred, true, "smooth_l1").item() == pytest.approx(
        0.5 * 0.01 * 9 / 4
    )  # |0.1| < beta 1/9: quadratic
    far = torch.tensor([[0.5, 0.1, 0.9, 0.5]])  # cx off by 0.4: linear
    assert box_loss(pred, far, "smooth_l1").item() == pytest.approx((0.4 - 0.5 / 9) / 4)
    with pytest.raises(ConfigError):
        box_loss(pred, true, "l3")


def test_loss_decreases_on_a_fixed_tiny_batch():
    torch.manual_seed(0)
    m = build_localizer(
        "resnet18", num_classes=3, weights=None, strategy="scratch", hidden=32
    ).train()
    x = torch.randn(8, 3, 32, 32)
    xy = torch.rand(8, 2) * 0.5
    boxes = torch.cat([xy, xy + 0.2 + torch.rand(8, 2) * 0.3], 1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    task = LocalizationTask(3, box_loss="mse", box_weight=5.0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    first = None
    for _ in range(20):
        parts = task.losses(m, (x, boxes, labels), torch.device("cpu"))
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        first = first or {k: float(v.detach()) for k, v in parts.items()}
    with torch.no_grad():  # same (training) mode as the first loss: batch statistics
        last = {
            k: float(v)
            for k, v in task.losses(m, (x, boxes, labels), torch.device("cpu")).items()
        }
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert last["box_loss"] < first["box_loss"] and last["cls_loss"] < first["cls_loss"]


def _fixed_box_model(cxcywh: tuple[float, float, float, float]) -> Localizer:
    m = build_localizer(
        "resnet18", num_classes=2, weights=None, strategy="scratch", hidden=0
    ).eval()
    with torch.no_grad():
        m.box_head[-1].weight.zero_()
        m.box_head[-1].bias.copy_(torch.tensor(cxcywh) - 0.5)
    m.task, m.classes = "localize", ["a", "b"]
    m.normalization = {"mean": [0.5] * 3, "std": [0.25] * 3}
    m.image_size = 32
    return m


def test_predictions_map_back_to_original_pixels_of_non_square_images():
    m = _fixed_box_model(
        (0.5, 0.25, 0.5, 0.25)
    )  # normalised xyxy (0.25, 0.125, 0.75, 0.375)
    import numpy as np

    images = [np.zeros((40, 100, 3), np.uint8), np.zeros((90, 30, 3), np.uint8)]
    preds = predict(m, images, device="cpu")
    assert preds[0]["box"] == pytest.approx([25.0, 5.0, 75.0, 15.0], abs=1e-3)
    assert preds[1]["box"] == pytest.approx([7.5, 11.25, 22.5, 33.75], abs=1e-3)
    assert preds[0]["class"] in ("a", "b") and 0.5 <= preds[0]["score"] <= 1
    assert to_pixels(torch.tensor([[0.0, 0.5, 1.0, 1.0]]), 100, 40).tolist() == [
        [0.0, 20.0, 100.0, 40.0]
    ]
