"""The fixed network whose feature maps neural style transfer matches.

Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016, sec.
2: the 16 convolutional and 5 pooling layers of VGG-19 (the fully connected layers are not used),
max pooling replaced by average pooling ("slightly more appealing results"), content from
``conv4_2``, style from ``conv1_1, conv2_1, conv3_1, conv4_1, conv5_1``. Here the maps are taken
after the ReLU (``relu4_2``, ...), as most implementations do; every ``convX_Y`` is also a valid name.

Networks (``network=``):

``vgg19``, ``vgg16``
    ``features`` of the torchvision network with layers named ``convB_I``, ``reluB_I``, ``poolB``
    (block B, layer I). Pretrained weights come through torchvision (``weights="IMAGENET1K_V1"``,
    downloaded once into torch.hub's cache) or from a local ``.pth`` state dict.
``mobilenet_v2``
    ``features`` of torchvision's MobileNetV2 (Sandler et al. 2018), layers named like its modules:
    ``features.0`` (the stem) to ``features.18`` (the final 1x1 convolution). Its ImageNet weights are
    the ones ``make install`` puts in the cache, so style transfer runs offline with them. Defaults:
    content ``features.10`` (stride 16), style the block outputs ``features.1, .3, .6, .10, .13``
    (strides 2 to 16).

The network is frozen (``requires_grad=False``, eval mode) and cut after the last layer asked for;
its input is an RGB image in ``[0, 1]`` (ImageNet normalisation is inside).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from convision.data.images import IMAGENET_MEAN, IMAGENET_STD
from convision.errors import ConfigError
from convision.models.backbones import load_torchvision_classifier

__all__ = ["NETWORKS", "DEFAULT_LAYERS", "StyleFeatures", "build_style_features"]

NETWORKS = ("mobilenet_v2", "vgg19", "vgg16")

_VGG_STYLE = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
#: network -> {"content": [...], "style": [...]}
DEFAULT_LAYERS: dict[str, dict[str, list[str]]] = {
    "vgg19": {"content": ["relu4_2"], "style": _VGG_STYLE},
    "vgg16": {"content": ["relu4_2"], "style": _VGG_STYLE},
    "mobilenet_v2": {
        "content": ["features.10"],
        "style": [f"features.{i}" for i in (1, 3, 6, 10, 13)],
    },
}
POOLS = ("avg", "max")


class StyleFeatures(nn.Module):
    """``forward(image [N,3,H,W] in 0..1) -> {layer name: feature map}`` for ``layers``.

    ``body`` is an ``nn.Sequential`` of the network's layers, ``names`` their names (one each)."""

    def __init__(
        self,
        network: str,
        body: nn.Sequential,
        names: Sequence[str],
        layers: Sequence[str],
    ) -> None:
        super().__init__()
        self.network = network
        self.names = list(names)
        self.layers = list(dict.fromkeys(layers))
        self.body = body
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "StyleFeatures":
        return super().train(False)  # always inference: fixed batch-norm statistics

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        x = (image - self.mean) / self.std
        wanted, out = set(self.layers), {}
        for name, layer in zip(self.names, self.body):
            x = layer(x)
            if name in wanted:
                out[name] = x
        return out


def _vgg_named(features: nn.Sequential, pool: str) -> list[tuple[str, nn.Module]]:
    named: list[tuple[str, nn.Module]] = []
    block, index = 1, 0
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            index += 1
            named.append((f"conv{block}_{index}", layer))
        elif isinstance(layer, nn.ReLU):
            # not in place: a conv output that is asked for must not be overwritten
            named.append((f"relu{block}_{index}", nn.ReLU(inplace=False)))
        elif isinstance(layer, nn.MaxPool2d):
            named.append(
                (f"pool{block}", nn.AvgPool2d(2, 2) if pool == "avg" else layer)
            )
            block, index = block + 1, 0
    return named


def _named_layers(
    network: str, weights: str | os.PathLike | None, pool: str
) -> list[tuple[str, nn.Module]]:
    model = load_torchvision_classifier(network, weights)
    if network.startswith("vgg"):
        return _vgg_named(model.features, pool)
    return [(f"features.{i}", m) for i, m in enumerate(model.features)]


def build_style_features(
    network: str = "mobilenet_v2",
    weights: str | os.PathLike | None = "IMAGENET1K_V1",
    layers: Sequence[str] | None = None,
    pool: str = "avg",
) -> StyleFeatures:
    """A frozen :class:`StyleFeatures` on ``network`` (see the module notes) returning ``layers``
    (default: the network's content and style layers). ``pool="avg"`` replaces VGG's max pooling by
    average pooling (Gatys et al.); MobileNetV2 has no pooling to replace. An unknown layer name is a
    ``ConfigError`` that lists the valid ones."""
    if pool not in POOLS:
        raise ConfigError(f"pool: expected {' | '.join(POOLS)}, got {pool!r}")
    if network not in NETWORKS:
        raise ConfigError(
            f"network: unknown network {network!r} for style transfer (known: {', '.join(NETWORKS)})"
        )
    if layers is None:
        layers = DEFAULT_LAYERS[network]["content"] + DEFAULT_LAYERS[network]["style"]
    named = _named_layers(network, weights, pool)
    names = [name for name, _ in named]
    unknown = [name for name in layers if name not in names]
    if unknown:
        raise ConfigError(
            f"layer {unknown[0]!r}: not a layer of {network} (known: {', '.join(names)})"
        )
    if not layers:
        raise ConfigError("layers: give at least one layer")
    last = max(names.index(name) for name in layers)
    body = nn.Sequential(*(m for _, m in named[: last + 1]))
    return StyleFeatures(network, body, names[: last + 1], layers)
