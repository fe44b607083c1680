"""DeconvNet: a VGG16 convolution network mirrored by a deconvolution network.

Hyeonwoo Noh, Seunghoon Hong, Bohyung Han, "Learning Deconvolution Network for Semantic
Segmentation", ICCV 2015 (arXiv:1505.04366). Reference: github.com/HyeonwooNoh/DeconvNet.

Architecture (paper Sec. 3, Fig. 2, Table 1)
--------------------------------------------
* **Convolution network**: VGG16's 13 convolutional layers and 5 max-pooling layers (2x2,
  stride 2), then fc6 as a 7x7 convolution (512 -> 4096, no padding: a 7x7 pool5 map becomes
  1x1) and fc7 as a 1x1 convolution (4096 -> 4096). Batch normalisation follows every
  convolutional and deconvolutional layer (Sec. 4.1), so the encoder is torchvision ``vgg16_bn``
  and fc6/fc7 get new BN layers; with pretrained weights fc6/fc7 are torchvision's
  ``classifier`` Linear layers convolutionalised (:func:`convision.models.segmentation.fcn.fc_to_conv`).
* **Deconvolution network**, the mirror image: ``deconv_fc6`` (7x7 transposed convolution
  4096 -> 512: 1x1 back to 7x7), then per stage an unpooling layer that puts each value back at the
  position its max-pooling recorded ("switch variables") followed by 3x3 transposed convolutions
  with BN and ReLU: stage 5: 512, 512, 512; stage 4: 512, 512, 256; stage 3: 256, 256, 128;
  stage 2: 128, 64; stage 1: 64, 64; then ``score``, a 1x1 convolution to ``num_classes``.
  About 252M parameters with ``fc_channels=4096``, as the paper reports.

Inference on the whole image
----------------------------
The paper trains on 224x224 windows (two stages: object-centred crops, then proposals) and at
test time segments ~2000 object proposals per image and aggregates them (Sec. 3.3). Here the
network is applied to the whole image, the usual use of this model outside the paper: the
7x7 fc6 convolution slides over pool5 (size n -> n-6) and ``deconv_fc6`` brings it back (n-6 ->
n), which is the paper's geometry exactly at n = 7 (224x224 input). A pool5 map smaller than 7 is
zero-padded to 7 around its centre (zero = no activation after ReLU and max pooling) and cropped
back after ``deconv_fc6``. Pooling rounds up (``ceil_mode``) and unpooling restores each exact
size, so every H x W gives logits at the input size.

Where this differs from the paper
---------------------------------
* Whole-image inference instead of proposal-wise inference and aggregation (above); the
  ensemble with FCN-8s ("EDeconvNet") and the CRF are not part of the model.
* Weights come from torchvision's ``vgg16_bn`` (PyTorch-trained, RGB) rather than Caffe's VGG16;
  fc6/fc7 take ``vgg16_bn``'s classifier weights. New layers get He initialisation (``fan_in``).
* No dropout after fc6/fc7 (the paper's BN network describes none).
* ``fc_channels`` (default 4096, the paper's) narrows fc6/fc7 for small experiments and tests;
  pretrained fc6/fc7 weights need 4096.
"""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from convision.errors import ConfigError
from convision.models.backbones import is_none, load_torchvision_classifier
from convision.models.segmentation.fcn import fc_to_conv
from convision.models.segmentation.segnet import (
    check_num_classes,
    conv_bn_relu,
    vgg_stages,
)
from convision.nn.upsampling import MaxPoolWithIndices, MaxUnpool

__all__ = ["DeconvNet", "deconvnet", "DECONV_WIDTHS"]

#: output channels of the 3x3 deconvolution layers, stage 5 (after unpool5) to stage 1
DECONV_WIDTHS: tuple[tuple[int, ...], ...] = (
    (512, 512, 512),
    (512, 512, 256),
    (256, 256, 128),
    (128, 64),
    (64, 64),
)


def _he(conv: nn.Module) -> nn.Module:
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return conv


class DeconvNet(nn.Module):
    """DeconvNet (Noh et al. 2015); ``forward(x[N,3,H,W]) -> logits[N,C,H,W]`` for any H, W.

    Submodules: ``encoder`` (five slices of torchvision ``vgg16_bn.features``), ``pool``/``unpool``,
    ``fc6`` / ``fc7`` (conv, BN, ReLU), ``deconv_fc6`` (7x7 transposed conv, BN, ReLU),
    ``decoder`` (five stages of 3x3 transposed conv, BN, ReLU) and ``score``.
    """

    def __init__(
        self,
        num_classes: int = 21,
        weights: str | os.PathLike | None = None,
        fc_channels: int = 4096,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if (
            isinstance(fc_channels, bool)
            or not isinstance(fc_channels, int)
            or fc_channels < 1
        ):
            raise ConfigError(
                f"fc_channels: must be a positive integer, got {fc_channels!r}"
            )
        pretrained = not is_none(weights)
        if pretrained and fc_channels != 4096:
            raise ConfigError(
                f"fc_channels: pretrained fc6/fc7 have 4096 channels, got {fc_channels} (use weights=none)"
            )
        vgg: Any = load_torchvision_classifier("vgg16_bn", weights)
        self.encoder = nn.ModuleList(vgg_stages(vgg.features))
        self.pool = MaxPoolWithIndices(2, 2, ceil_mode=True)
        self.unpool = MaxUnpool(2, 2)
        c5 = self.encoder[-1][-3].out_channels  # 512
        if pretrained:
            linears = [m for m in vgg.classifier if isinstance(m, nn.Linear)]
            fc6, fc7 = (
                fc_to_conv(linears[0], c5, 7),
                fc_to_conv(linears[1], fc_channels, 1),
            )
        else:
            fc6, fc7 = (
                _he(nn.Conv2d(c5, fc_channels, 7)),
                _he(nn.Conv2d(fc_channels, fc_channels, 1)),
            )
        del vgg
        self.fc6 = nn.Sequential(
            fc6, nn.BatchNorm2d(fc_channels), nn.ReLU(inplace=True)
        )
        self.fc7 = nn.Sequential(
            fc7, nn.BatchNorm2d(fc_channels), nn.ReLU(inplace=True)
        )
        self.deconv_fc6 = nn.Sequential(
            _he(nn.ConvTranspose2d(fc_channels, c5, 7)),
            nn.BatchNorm2d(c5),
            nn.ReLU(inplace=True),
        )
        stages, cin = [], c5
        for widths in DECONV_WIDTHS:
            layers = []
            for w in widths:
                layers.append(conv_bn_relu(cin, w, transposed=True))
                cin = w
            stages.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(stages)
        self.score = _he(nn.Conv2d(cin, num_classes, 1))
        self.fc_channels = fc_channels
        #: the builder name and its JSON-serialisable keyword arguments
        self.spec: dict[str, Any] = {
            "name": "deconvnet",
            "kwargs": {
                "num_classes": num_classes,
                "weights": None if weights is None else os.fspath(weights),
                "fc_channels": fc_channels,
            },
        }

    def forward(self, x: Tensor) -> Tensor:
        switches = []
        for stage in self.encoder:
            x = stage(x)
            size = x.shape[-2:]
            x, idx = self.pool(x)
            switches.append((idx, size))
        h, w = x.shape[-2:]
        ph, pw = max(0, 7 - h), max(0, 7 - w)
        if (
            ph or pw
        ):  # fc6 needs a 7x7 window: pad pool5 around its centre, crop back below
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        x = self.deconv_fc6(self.fc7(self.fc6(x)))
        x = x[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        for stage, (idx, size) in zip(self.decoder, reversed(switches)):
            x = stage(self.unpool(x, idx, output_size=size))
        return self.score(x)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, fc_channels={self.fc_channels}"


def deconvnet(
    *,
    num_classes: int = 21,
    weights: str | os.PathLike | None = None,
    fc_channels: int = 4096,
) -> DeconvNet:
    """DeconvNet with a VGG16-BN convolution network; ``weights``: 'none', a torchvision ``vgg16_bn``
    weights name or a local ``.pth`` of torchvision ``vgg16_bn``."""
    return DeconvNet(num_classes=num_classes, weights=weights, fc_channels=fc_channels)
