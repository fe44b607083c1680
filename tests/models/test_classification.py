"""build_classifier: head replacement, strategies (freeze semantics incl. BN statistics), lr groups,
weights from a local .pth, rebuilding from the registry."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from convision.errors import CheckpointError, ConfigError
from convision.models import MODELS, build_model
from convision.models.classification import (
    ARCHS,
    Classifier,
    build_classifier,
    preprocessing,
)
from convision.tasks.classify import GroupedTrainer  # noqa: F401  (import check)

torch.set_num_threads(1)


def _step(model: Classifier, lr: float = 0.1, mult: float = 1.0) -> None:
    model.train()
    opt = torch.optim.SGD(model.parameter_groups(lr, mult), lr=lr)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _bn_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in model.state_dict().items()
        if "running_" in k or "num_batches" in k
    }


def test_registry_and_head_shape():
    assert MODELS["classifier"] is build_classifier
    model = build_model("classifier", arch="resnet18", num_classes=3, weights=None)
    assert isinstance(model, Classifier) and model.in_features == 512
    assert isinstance(model.net.fc, nn.Identity)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 3)
        assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert set(ARCHS) == {
        "alexnet",
        "vgg11",
        "vgg16",
        "googlenet",
        "resnet18",
        "resnet50",
        "densenet121",
        "mobilenet_v2",
        "alexnet2012",
        "zfnet",
    }


def test_feature_extract_freezes_backbone_and_bn_statistics():
    torch.manual_seed(0)
    model = build_classifier(
        "mobilenet_v2", 3, weights="IMAGENET1K_V1", strategy="feature-extract"
    )
    params = {k: v.clone() for k, v in model.net.state_dict().items()}
    head = model.head.weight.clone()
    _step(model)
    assert (
        model.training and not model.net.training
    )  # BN (and dropout) stay in eval mode
    assert all(
        not m.training for m in model.net.modules() if isinstance(m, nn.BatchNorm2d)
    )
    assert all(
        torch.equal(params[k], v) for k, v in model.net.state_dict().items()
    )  # weights and BN stats
    assert not torch.equal(head, model.head.weight)
    assert [g["name"] for g in model.parameter_groups(0.1, 100)] == ["head"]


def test_finetune_trains_backbone_and_bn_with_group_ratio():
    torch.manual_seed(0)
    model = build_classifier("resnet18", 3, weights=None, strategy="finetune")
    conv = model.net.conv1.weight.clone()
    stats = _bn_stats(model)
    _step(model, lr=0.01, mult=100)
    assert not torch.equal(conv, model.net.conv1.weight)
    assert any(not torch.equal(stats[k], v) for k, v in _bn_stats(model).items())
    groups = model.parameter_groups(0.001, 100)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[1]["lr"] == pytest.approx(100 * groups[0]["lr"])
    n_backbone = sum(p.numel() for p in groups[0]["params"])
    assert n_backbone == sum(p.numel() for p in model.net.parameters())


def test_grouped_trainer_optimizer_uses_groups(tmp_path):
    from convision.tasks.classify import ClassifyTrainConfig

    cfg = ClassifyTrainConfig(out=str(tmp_path), device="cpu")
    model = build_classifier("resnet18", 3)
    trainer = GroupedTrainer(
        task=None,
        model=model,
        train_set=[],
        val_set=None,
        cfg=cfg,
        meta={},
        head_lr_mult=100,
    )
    opt = trainer._build_optimizer(model)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.001, 0.1])


def test_local_pth_weights_any_last_layer(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(
        num_classes=7
    )  # a fine-tuned classifier with another head
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    model = build_classifier("resnet18", 3, weights=str(path))
    assert torch.equal(model.net.conv1.weight, ref.conv1.weight)
    torch.save({"conv1.weight": ref.conv1.weight}, tmp_path / "bad.pth")
    with pytest.raises(
        CheckpointError, match="bad.pth: not a state dict of torchvision resnet18"
    ):
        build_classifier("resnet18", 3, weights=str(tmp_path / "bad.pth"))
    with pytest.raises(CheckpointError, match="missing.pth"):
        build_classifier("resnet18", 3, weights=str(tmp_path / "missing.pth"))


def test_bad_settings():
    with pytest.raises(ConfigError, match="arch"):
        build_classifier("resnet999", 3)
    with pytest.raises(ConfigError, match="strategy"):
        build_classifier("resnet18", 3, strategy="freeze")
    with pytest.raises(ConfigError, match="scratch"):
        build_classifier("mobilenet_v2", 3, weights="IMAGENET1K_V1", strategy="scratch")
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        build_classifier("mobilenet_v2", 3, weights="IMAGENET9K")
    assert preprocessing("mobilenet_v2", "IMAGENET1K_V1")["crop_size"] == 224


def test_googlenet_is_deterministic_function_of_state():
    torch.manual_seed(0)
    a = build_classifier("googlenet", 3).eval()
    b = build_model("classifier", arch="googlenet", num_classes=3, weights=None).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    assert a.net.transform_input and not a.net.aux_logits
    a.train()
    assert a(x).shape == (1, 3)  # no auxiliary outputs in training mode


def test_stages_cover_every_backbone_parameter_once():
    for arch in ARCHS:
        model = build_classifier(arch, 3, weights=None, strategy="scratch")
        ids = [
            id(p)
            for stage in model.stages()
            for module in stage
            for p in module.parameters()
        ]
        assert len(ids) == len(set(ids)), arch  # no parameter in two stages
        assert set(ids) == {id(p) for p in model.net.parameters()}, (
            arch
        )  # and none left out
        assert len(model.stages()) >= 4, arch


def test_freeze_stages_keeps_the_bottom_fixed_and_trains_the_top():
    torch.manual_seed(0)
    model = build_classifier("resnet18", 3, weights=None, strategy="finetune")
    model.freeze_stages(
        3
    )  # conv1/bn1, layer1, layer2 frozen; layer3, layer4 and the head train
    frozen = {
        k: v.clone()
        for k, v in model.net.state_dict().items()
        if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2")
    }
    top = {
        k: v.clone()
        for k, v in model.net.state_dict().items()
        if k.split(".")[0] in ("layer3", "layer4")
    }
    _step(model)
    state = model.net.state_dict()
    assert all(
        torch.equal(v, state[k]) for k, v in frozen.items()
    )  # weights and BN running statistics
    assert (
        not model.net.layer1.training
        and not model.net.bn1.training
        and model.net.layer3.training
    )
    assert not torch.equal(top["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])
    assert not torch.equal(
        top["layer4.0.bn1.running_mean"], state["layer4.0.bn1.running_mean"]
    )
    model.freeze_stages(0)
    assert (
        all(p.requires_grad for p in model.parameters()) and model.net.layer1.training
    )
    with pytest.raises(ConfigError, match="freeze_stages"):
        model.freeze_stages(6)
    with pytest.raises(ConfigError, match="feature-extract"):
        build_classifier(
            "resnet18", 3, weights=None, strategy="feature-extract"
        ).freeze_stages(1)


def test_default_head_lr_multiple_is_10_and_an_explicit_one_is_kept():
    from convision.tasks.classify import ClassifyConfig, resolve_settings

    cfg = ClassifyConfig()
    cfg.model.weights, cfg.data.image_size = "none", 32
    assert (
        resolve_settings(cfg)["head_lr_mult"] == 10
    )  # the seeds' 100 diverged (BENCHMARKS.md)
    cfg.train.head_lr_mult = 100
    assert resolve_settings(cfg)["head_lr_mult"] == 100
    cfg.model.strategy, cfg.train.head_lr_mult = "scratch", 0
    assert resolve_settings(cfg)["head_lr_mult"] == 1
    cfg.train.unfreeze_every = (
        1  # gradual unfreezing needs a pretrained backbone being fine-tuned
    )
    with pytest.raises(
        ConfigError,
        match="unfreeze_every: gradual unfreezing is for strategy 'finetune'",
    ):
        resolve_settings(cfg)
    cfg.model.strategy, cfg.train.unfreeze_every = "finetune", -1
    with pytest.raises(ConfigError, match="unfreeze_every: must be >= 0"):
        resolve_settings(cfg)
