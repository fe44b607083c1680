"""SegNet: an encoder-decoder that upsamples with the encoder's max-pooling indices.

Vijay Badrinarayanan, Alex Kendall, Roberto Cipolla, "SegNet: A Deep Convolutional
Encoder-Decoder Architecture for Image Segmentation", arXiv:1511.00561 (2015), TPAMI 2017.
Reference net: github.com/alexgkendall/SegNet-Tutorial, ``Models/segnet_train.prototxt``.

Architecture (paper Sec. 3, Fig. 2)
-----------------------------------
* **Encoder**: the 13 convolutional layers of VGG16 with batch normalisation (torchvision
  ``vgg16_bn.features``: 3x3 convolution, BN, ReLU), the fully connected layers discarded. Each of
  the five 2x2/stride-2 max-pooling layers stores the argmax positions ("pooling indices").
* **Decoder**: mirrors the encoder. Each stage upsamples with max unpooling at the stored indices
  (a sparse map: the value goes back where the maximum was, zeros elsewhere) and densifies it with
  3x3 convolution + BN + ReLU layers. Widths, as in the reference ``conv*_D`` layers:
  stage 5: 512, 512, 512; stage 4: 512, 512, 256; stage 3: 256, 256, 128; stage 2: 128, 64;
  stage 1: 64, then the classifier.
* **Classifier**: the reference's last decoder layer ``conv1_1_D`` is a 3x3 convolution to
  ``num_classes`` without BN or ReLU, followed by the soft-max loss; here ``classifier`` (3x3,
  with bias) returns the logits.
* **Sizes**: the reference (Caffe) pools with rounding up and its ``Upsample`` layer is told the
  size to restore (``upsample_w``/``upsample_h``, e.g. 23 and 30 at the coarsest level of a 360x480
  CamVid image). Here likewise: pooling uses ``ceil_mode=True`` and unpooling restores the exact
  size before pooling, so every H x W works without padding and the logits are at the input size.

Where this differs from the paper / reference
---------------------------------------------
* Pretrained weights are torchvision's ``vgg16_bn`` (``weights="IMAGENET1K_V1"``), not the Caffe
  VGG16 the paper started from (that VGG16 had no BN; BN was added for SegNet training).
* New layers (decoder, classifier) get He initialisation as the paper states (Sec. 4:
  "the technique described in He et al."): ``kaiming_normal_`` with ``fan_in``, the default of
  Caffe's ``msra`` filler; biases zero.
* Median-frequency class balancing (paper Sec. 3.1) belongs to the loss (``--class-weights``),
  not the model.
* Bayesian SegNet's dropout is not included.
"""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor, nn

from convision.errors import ConfigError
from convision.models.backbones import load_torchvision_classifier
from convision.nn.upsampling import MaxPoolWithIndices, MaxUnpool

__all__ = ["SegNet", "segnet", "DECODER_WIDTHS"]

#: output channels of the decoder's conv-BN-ReLU layers, stage 5 (coarsest) to stage 1
DECODER_WIDTHS: tuple[tuple[int, ...], ...] = (
    (512, 512, 512),
    (512, 512, 256),
    (256, 256, 128),
    (128, 64),
    (64,),
)


def check_num_classes(num_classes: Any) -> int:
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or num_classes < 1
    ):
        raise ConfigError(
            f"num_classes: must be a positive integer, got {num_classes!r}"
        )
    return num_classes


def conv_bn_relu(
    cin: int, cout: int, kernel_size: int = 3, transposed: bool = False
) -> nn.Sequential:
    """3x3 ("same") convolution (or transposed convolution), BN, ReLU; He-initialised convolution."""
    cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    conv = cls(cin, cout, kernel_size, padding=kernel_size // 2)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def vgg_stages(features: nn.Sequential) -> list[nn.Sequential]:
    """Split torchvision VGG ``features`` into the five blocks before each max pooling (pools dropped).

    Slices keep torchvision's child names, so ``stages[1][0]`` is ``features[7]`` of vgg16_bn.
    """
    pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    if len(pools) != 5:
        raise ValueError("unexpected torchvision VGG layout")
    starts = [0] + [p + 1 for p in pools[:-1]]
    return [features[a:b] for a, b in zip(starts, pools)]


class SegNet(nn.Module):
    """SegNet (Badrinarayanan et al. 2015); ``forward(x[N,3,H,W]) -> logits[N,C,H,W]`` for any H, W.

    Submodules: ``encoder`` (five ``nn.Sequential`` slices of torchvision ``vgg16_bn.features``),
    ``pool`` / ``unpool`` (shared index-returning 2x2 pooling and its unpooling), ``decoder`` (five
    stages of conv-BN-ReLU, coarsest first) and ``classifier``.
    """

    def __init__(
        self, num_classes: int = 21, weights: str | os.PathLike | None = None
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        vgg: Any = load_torchvision_classifier("vgg16_bn", weights)
        self.encoder = nn.ModuleList(vgg_stages(vgg.features))
        del vgg
        self.pool = MaxPoolWithIndices(2, 2, ceil_mode=True)
        self.unpool = MaxUnpool(2, 2)
        enc_out = [
            stage[-3].out_channels for stage in self.encoder
        ]  # conv of each block's last conv-BN-ReLU
        stages = []
        cin = enc_out[-1]
        for widths in DECODER_WIDTHS:
            layers = []
            for w in widths:
                layers.append(conv_bn_relu(cin, w))
                cin = w
            stages.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(stages)
        self.classifier = nn.Conv2d(cin, num_classes, 3, padding=1)
        nn.init.kaiming_normal_(
            self.classifier.weight, mode="fan_in", nonlinearity="relu"
        )
        nn.init.zeros_(self.classifier.bias)
        #: the builder name and its JSON-serialisable keyword arguments
        self.spec: dict[str, Any] = {
            "name": "segnet",
            "kwargs": {
                "num_classes": num_classes,
                "weights": None if weights is None else os.fspath(weights),
            },
        }

    def forward(self, x: Tensor) -> Tensor:
        switches = []
        for stage in self.encoder:
            x = stage(x)
            size = x.shape[-2:]
            x, idx = self.pool(x)
            switches.append((idx, size))
        for stage, (idx, size) in zip(self.decoder, reversed(switches)):
            x = stage(self.unpool(x, idx, output_size=size))
        return self.classifier(x)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


def segnet(
    *, num_classes: int = 21, weights: str | os.PathLike | None = None
) -> SegNet:
    """SegNet with a VGG16-BN encoder; ``weights``: 'none', a torchvision ``vgg16_bn`` weights name
    or a local ``.pth`` of torchvision ``vgg16_bn`` (see :mod:`convision.models.backbones`)."""
    return SegNet(num_classes=num_classes, weights=weights)
