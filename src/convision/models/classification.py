"""Image classifiers by transfer learning from torchvision's ImageNet networks.

``build_classifier(arch, num_classes, weights, strategy)`` takes a torchvision classifier, replaces
its last ``Linear`` (the 1000-way ImageNet layer) by a new, freshly initialised one with
``num_classes`` outputs (weights N(0, 0.01), bias 0), and sets up one of three strategies:

``feature-extract``
    The pretrained network is a fixed feature extractor: its parameters are frozen
    (``requires_grad=False``) and it stays in eval mode even under ``model.train()`` -- batch-norm
    layers keep their ImageNet running statistics and the backbone's own dropout (VGG/AlexNet fc6/fc7,
    MobileNetV2's dropout before the classifier) is off, so the features of an image are a fixed
    function of it. Only the new head trains (that is also what makes feature caching exact, see
    :mod:`convision.tasks.classify`).
``finetune``
    Everything trains; :meth:`Classifier.parameter_groups` gives the head a larger learning rate
    than the pretrained backbone: 10x by default (:func:`default_head_lr_mult`; the seeds' SGD
    recipe is 100x, 0.001 backbone / 0.1 head, available as ``head_lr_mult=100``).
``scratch``
    Random initialisation (``weights`` must be None), everything trains at one learning rate.

``alexnet2012`` and ``zfnet`` are the papers' networks (:mod:`convision.models.classic`): random
initialisation or a local ``.pth`` of them, no published weights.

Weights (``weights=``): ``None``/``"none"``, a torchvision weights name (``"IMAGENET1K_V1"``,
``"DEFAULT"``), or the path of a local ``.pth`` holding a torchvision state dict of ``arch`` (its
last layer may have any number of classes: it is replaced anyway).

GoogLeNet is always built without its auxiliary classifiers and with ``transform_input=True`` (what
torchvision uses with its ImageNet weights), so a checkpoint rebuilds the same function whatever
the weights were. :func:`preprocessing` gives the input size and normalisation the weights expect.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from convision.data.images import IMAGENET_MEAN, IMAGENET_STD
from convision.errors import CheckpointError, ConfigError
from convision.models.backbones import (
    check_state_dict,
    first_line,
    is_none,
    looks_like_path,
    read_state_dict,
)
from convision.models.classic import PAPER_NETS

__all__ = [
    "ARCHS",
    "STAGES",
    "STRATEGIES",
    "Classifier",
    "build_classifier",
    "preprocessing",
    "default_head_lr_mult",
]

#: arch -> dotted path of the torchvision model's last Linear layer
ARCHS: dict[str, str] = {
    "alexnet": "classifier.6",
    "vgg11": "classifier.6",
    "vgg16": "classifier.6",
    "googlenet": "fc",
    "resnet18": "fc",
    "resnet50": "fc",
    "densenet121": "classifier",
    "mobilenet_v2": "classifier.1",
    "alexnet2012": "classifier.6",  # convision.models.classic: the papers' networks, no pretrained weights
    "zfnet": "classifier.6",
}
STRATEGIES = ("feature-extract", "finetune", "scratch")

#: arch -> the backbone's stages, input side first, as dotted module paths inside the torchvision
#: model: the unit of gradual unfreezing (:meth:`Classifier.freeze_stages`). Pooling-delimited
#: blocks; the pretrained fully connected layers (fc6/fc7) are the last stage of AlexNet and VGG.
STAGES: dict[str, list[list[str]]] = {
    "alexnet": [
        ["features.0"],
        ["features.3"],
        ["features.6", "features.8", "features.10"],
        ["classifier.1", "classifier.4"],
    ],
    "alexnet2012": [
        ["features.0"],
        ["features.4"],
        ["features.8", "features.10", "features.12"],
        ["classifier.1", "classifier.4"],
    ],
    "zfnet": [
        ["features.0"],
        ["features.4"],
        ["features.8", "features.10", "features.12"],
        ["classifier.1", "classifier.4"],
    ],
    "vgg11": [
        ["features.0"],
        ["features.3"],
        ["features.6", "features.8"],
        ["features.11", "features.13"],
        ["features.16", "features.18"],
        ["classifier.0", "classifier.3"],
    ],
    "vgg16": [
        ["features.0", "features.2"],
        ["features.5", "features.7"],
        ["features.10", "features.12", "features.14"],
        ["features.17", "features.19", "features.21"],
        ["features.24", "features.26", "features.28"],
        ["classifier.0", "classifier.3"],
    ],
    "googlenet": [
        ["conv1"],
        ["conv2", "conv3"],
        ["inception3a", "inception3b"],
        ["inception4a", "inception4b", "inception4c", "inception4d", "inception4e"],
        ["inception5a", "inception5b"],
    ],
    "resnet18": [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]],
    "resnet50": [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]],
    "densenet121": [
        ["features.conv0", "features.norm0"],
        ["features.denseblock1", "features.transition1"],
        ["features.denseblock2", "features.transition2"],
        ["features.denseblock3", "features.transition3"],
        ["features.denseblock4", "features.norm5"],
    ],
    # by output stride: 2, 4, 8, 16, 32 (features.18 is the final 1x1 conv to 1280 channels)
    "mobilenet_v2": [
        [f"features.{i}" for i in r]
        for r in (range(0, 2), range(2, 4), range(4, 7), range(7, 14), range(14, 19))
    ],
}


def default_head_lr_mult(optimizer: str, strategy: str) -> float:
    """Head lr / backbone lr when not set: 10 for finetune and feature-extract (SGD and AdamW), 1 for scratch.

    The seeds fine-tune with SGD at 0.001 for the backbone and 0.1 for the new head (100x). Measured
    on Fashion-MNIST with MobileNetV2 (BENCHMARKS.md, ``bench/fashion_mnist_transfer.py``), a head at
    0.1 diverged in every SGD run -- 1 %, 10 % of the data, with and without a warm-up, and also at
    backbone 0.01 / head 0.1 -- and ended below training from scratch (0.53-0.63), while 10x trained
    stably (0.80-0.92). So the default is 10x for SGD too (the usual choice for AdamW, whose step
    does not scale with the gradient); ``head_lr_mult=100`` reproduces the seeds.
    """
    if strategy == "scratch":
        return 1.0
    return 10.0


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ConfigError(
            f"arch: unknown architecture {arch!r} (known: {', '.join(ARCHS)})"
        )


def _weights_enum(arch: str, weights: str):
    if arch in PAPER_NETS:
        raise ConfigError(
            f"weights: {arch} has no published weights ({weights!r}); use 'none' or a local .pth state dict of it"
        )
    enum = torchvision.models.get_model_weights(arch)
    key = weights.strip().removeprefix(enum.__name__ + ".")
    if key not in enum.__members__:
        raise ConfigError(
            f"weights: {weights!r} is neither a file nor a torchvision weights name for {arch} "
            f"(known: {', '.join(enum.__members__)})"
        )
    return enum[key]


def preprocessing(
    arch: str, weights: str | os.PathLike | None = None
) -> dict[str, Any]:
    """``{"mean", "std", "crop_size", "resize_size"}`` the weights were trained with (ImageNet's
    mean/std and 224/256 for random or file weights)."""
    _check_arch(arch)
    info = {
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "crop_size": 224,
        "resize_size": 256,
    }
    if (
        isinstance(weights, str)
        and not is_none(weights)
        and not looks_like_path(weights)
    ):
        tf = _weights_enum(arch, weights).transforms()
        info = {
            "mean": [float(v) for v in tf.mean],
            "std": [float(v) for v in tf.std],
            "crop_size": int(tf.crop_size[0]),
            "resize_size": int(tf.resize_size[0]),
        }
    return info


_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _torchvision_model(arch: str, weights: str | os.PathLike | None) -> nn.Module:
    if arch in PAPER_NETS:
        if (
            isinstance(weights, str)
            and not is_none(weights)
            and not looks_like_path(weights)
        ):
            _weights_enum(arch, weights)  # raises: no published weights
        model = PAPER_NETS[arch][0]()
        if not is_none(weights):
            _load_file(model, arch, Path(weights))
        return model
    extra: dict[str, Any] = {}
    if arch == "googlenet":
        extra = {"transform_input": True}
    if is_none(weights):
        if arch == "googlenet":
            extra.update(aux_logits=False, init_weights=True)
        return torchvision.models.get_model(arch, weights=None, **extra)
    if isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and looks_like_path(weights)
    ):
        if arch == "googlenet":
            extra.update(aux_logits=False, init_weights=False)
        model = torchvision.models.get_model(arch, weights=None, **extra)
        _load_file(model, arch, Path(weights))
        return model
    if not isinstance(weights, str):
        raise ConfigError(
            f"weights: expected 'none', a torchvision weights name or a .pth path, got {weights!r}"
        )
    enum = _weights_enum(arch, weights)
    try:
        return torchvision.models.get_model(arch, weights=enum, **extra)
    except (
        OSError,
        RuntimeError,
        ValueError,
    ) as e:  # no network, bad hash, corrupt cache file
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise CheckpointError(
            f"weights: could not load torchvision {arch} {enum.name} ({type(e).__name__}: {first_line(e)}); "
            f"put {enum.url.rsplit('/', 1)[-1]} in {cache} or pass a local .pth file"
        ) from None


def _load_file(model: nn.Module, arch: str, path: Path) -> None:
    state = read_state_dict(path, arch)
    if (
        arch == "densenet121"
    ):  # old-style keys ("norm.1") as in torchvision's own loader
        state = {(_DENSENET_KEY.sub(r"\1\2", k)): v for k, v in state.items()}
    if arch == "googlenet":  # auxiliary classifiers are not used
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    last = ARCHS[arch] + "."
    state = {
        k: v for k, v in state.items() if not k.startswith(last)
    }  # replaced by the new head
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(last)}
    check_state_dict(path, arch, state, expected)
    model.load_state_dict(state, strict=False)


def _set(module: nn.Module, dotted: str, value: nn.Module) -> None:
    parent_path, _, name = dotted.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    if name.isdigit():
        parent[int(name)] = value
    else:
        setattr(parent, name, value)


class Classifier(nn.Module):
    """A torchvision network (``net``, its last Linear replaced by ``nn.Identity``) and a new ``head``.

    ``forward(images[N,3,H,W]) -> logits[N,K]``; ``features(images) -> [N,D]`` is the backbone's
    output, the head's input. ``forward`` of a 2-D ``[N,D]`` tensor runs the head only: that is how
    the engine trains on cached features (:mod:`convision.tasks.classify`). Parameter names: ``net.<torchvision name>`` and ``head.weight/bias``.
    Attributes: ``arch``, ``num_classes``, ``strategy``, ``in_features`` (D), ``frozen``.
    """

    def __init__(
        self, arch: str, net: nn.Module, num_classes: int, strategy: str
    ) -> None:
        super().__init__()
        last = net.get_submodule(ARCHS[arch])
        if not isinstance(last, nn.Linear):
            raise TypeError(
                f"{arch}: expected a Linear at {ARCHS[arch]}, found {type(last).__name__}"
            )
        _set(net, ARCHS[arch], nn.Identity())
        self.arch = arch
        self.num_classes = int(num_classes)
        self.strategy = strategy
        self.in_features = int(last.in_features)
        self.net = net
        self.head = nn.Linear(self.in_features, self.num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self.frozen = strategy == "feature-extract"
        self.frozen_stages = (
            0  # gradual unfreezing: this many stages from the input side are frozen
        )
        if self.frozen:
            self.net.requires_grad_(False)
            self.net.eval()

    def stages(self) -> list[list[nn.Module]]:
        """The backbone's stages (:data:`STAGES`), input side first; the head is not among them."""
        return [
            [self.net.get_submodule(name) for name in stage]
            for stage in STAGES[self.arch]
        ]

    def freeze_stages(self, n: int) -> None:
        """Freeze the first ``n`` backbone stages (input side) and make every later one trainable:
        the step of gradual unfreezing (Howard & Ruder, "Universal Language Model Fine-tuning for
        Text Classification", ACL 2018, §3.2: train the last layer first, then unfreeze one more
        layer group from the top each epoch). Frozen stages get no gradients and their batch-norm
        layers keep their running statistics (eval mode, as with ``feature-extract``). ``finetune``
        and ``scratch`` only; ``n = 0`` trains everything."""
        if self.frozen:
            raise ConfigError(
                "freeze_stages: a feature-extract classifier keeps its whole backbone frozen"
            )
        stages = self.stages()
        if not 0 <= n <= len(stages):
            raise ConfigError(
                f"freeze_stages: n must be in [0, {len(stages)}] for {self.arch}, got {n}"
            )
        self.net.requires_grad_(True)
        for stage in stages[:n]:
            for module in stage:
                module.requires_grad_(False)
        self.frozen_stages = int(n)
        self.train(self.training)

    def features(self, images: Tensor) -> Tensor:
        """Backbone output ``[N, in_features]`` (the head's input)."""
        return self.net(images)

    def forward(self, images: Tensor) -> Tensor:
        """``images [N,3,H,W] -> logits [N,K]``; ``[N, in_features]`` (cached features) -> ``head`` only."""
        if images.ndim == 2:
            return self.head(images)
        return self.head(self.net(images))

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if (
            self.frozen
        ):  # frozen backbone: BN statistics and dropout stay in inference mode
            self.net.eval()
        elif self.frozen_stages:
            for stage in self.stages()[: self.frozen_stages]:
                for module in stage:
                    module.eval()
        return self

    def parameter_groups(
        self, lr: float, head_lr_mult: float = 10.0
    ) -> list[dict[str, Any]]:
        """Optimizer groups ``[{"name": "backbone", "params", "lr": lr}, {"name": "head", "params",
        "lr": lr * head_lr_mult}]``, trainable parameters only (no backbone group when frozen)."""
        backbone = [p for p in self.net.parameters() if p.requires_grad]
        head = [p for p in self.head.parameters() if p.requires_grad]
        groups = []
        if backbone:
            groups.append({"name": "backbone", "params": backbone, "lr": float(lr)})
        if head:
            groups.append(
                {"name": "head", "params": head, "lr": float(lr) * float(head_lr_mult)}
            )
        return groups

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_classes={self.num_classes}, strategy={self.strategy!r}"


def build_classifier(
    arch: str,
    num_classes: int,
    weights: str | os.PathLike | None = None,
    strategy: str = "finetune",
) -> Classifier:
    """A :class:`Classifier` (see the module notes). Errors are ``ConfigError``/``CheckpointError``."""
    _check_arch(arch)
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"strategy: unknown {strategy!r} (expected {' | '.join(STRATEGIES)})"
        )
    if int(num_classes) < 2:
        raise ConfigError(
            f"num_classes: a classifier needs at least 2 classes, got {num_classes}"
        )
    if strategy == "scratch" and not is_none(weights):
        raise ConfigError(
            f"weights: strategy 'scratch' trains from random initialisation; got weights {weights!r} (use --weights none)"
        )
    net = _torchvision_model(arch, weights)
    return Classifier(arch, net, int(num_classes), strategy)
