"""FCN-32s, FCN-16s and FCN-8s.

Jonathan Long, Evan Shelhamer, Trevor Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015 (arXiv:1411.4038); extended as Shelhamer, Long, Darrell, TPAMI 2017
(arXiv:1605.06211). Reference nets: github.com/shelhamer/fcn.berkeleyvision.org (``voc-fcn32s``,
``voc-fcn16s``, ``voc-fcn8s``). Layer names below are the reference nets' names.

Architecture (paper Sec. 4, Fig. 3)
-----------------------------------
* **Convolutionalised classifier.** VGG16's fully connected layers become convolutions with the
  same weights: fc6 ``Linear(512*7*7, 4096)`` is a 7x7 convolution over pool5 (weight reshaped to
  ``[4096, 512, 7, 7]``; torchvision flattens pool5 in C, H, W order, as Caffe does), fc7
  ``Linear(4096, 4096)`` a 1x1 convolution, each followed by ReLU and Dropout(0.5). The 1000-way
  ImageNet layer is discarded ("decapitated") and replaced by ``score_fr``, a 1x1 convolution to
  ``num_classes``.
* **Skip layers.** ``score_pool4`` and ``score_pool3`` are 1x1 convolutions on pool4 and pool3.
  FCN-16s: ``upscore2`` (2x) of score_fr + score_pool4, then ``upscore16`` (16x). FCN-8s: that sum
  upsampled 2x again (``upscore_pool4``) + score_pool3, then ``upscore8`` (8x). FCN-32s has one
  32x layer, ``upscore``.
* **Zero-initialised scoring.** All score layers (weights and biases) start at zero, the Caffe
  default the reference nets rely on (paper Sec. 4.3: random initialisation gave neither better
  results nor faster convergence; Sec. 4.2: the new skip layer starts at zero so that the net
  starts from the coarser net's predictions). Consequences: the logits are exactly zero at
  initialisation; a new skip layer starts as a no-op, so FCN-16s initialised from a trained
  FCN-32s predicts what the FCN-32s predicted, up to interpolating 2x-then-16x instead of 32x;
  and on the first step the score layers get gradients but the layers below them do not (the
  gradient passes through the zero weights), the backbone learns from the second step on.
* **Upsampling** is a transposed convolution initialised to bilinear interpolation
  (:class:`convision.nn.BilinearUpsample`, one filter per class on the diagonal). The reference
  implementation keeps every one of them fixed (``lr_mult: 0``; its README: learning them made no
  significant difference), which is the default here; ``learnable_upsampling=True`` learns all of
  them and ``learnable_upsampling="2x"`` learns only the intermediate 2x layers and keeps the final
  one fixed, as the CVPR paper's text describes (Sec. 4.2, 4.3).
* **Staged training** (32s -> 16s -> 8s, paper Sec. 4.2): shared layers have the same parameter
  names in all three models (``backbone.*``, ``fc6``, ``fc7``, ``score_fr``, and ``score_pool4`` /
  ``upscore2`` between 16s and 8s), so ``fcn16s().load_state_dict(fcn32s_state, strict=False)``
  leaves exactly the new layers missing.

Alignment: ``faithful=True`` versus the default
-----------------------------------------------
``faithful=True`` (VGG16 only) is the reference Caffe alignment: conv1_1 pads the input by 100
pixels, fc6 has no padding, max pooling rounds up (Caffe's ``ceil`` output size; with floor
rounding the output could be smaller than the input), upsampling layers have kernel 2f, stride f
and no padding, and every branch is cropped at the reference offsets, which Caffe's ``coord_map``
computed for these exact layers: voc-fcn32s ``upscore`` 19; voc-fcn16s ``score_pool4`` 5,
``upscore16`` 27; voc-fcn8s ``score_pool4`` 5, ``score_pool3`` 9, ``upscore8`` 31. The 100-pixel
pad makes fc6's 7x7 window fit any input and leaves a margin that the crops remove; it costs
compute (a 500x500 image runs as 698x698) and the network sees a wide band of padding.

The default ("modern aligned") mode gets exact alignment without the margin: the input is padded at
the bottom and right to a multiple of 32 with zeros (the inputs are normalised, so zero is the
ImageNet mean colour, the same value Caffe's padding has after its mean subtraction; zero also
works for any size, where reflection needs the pad to be smaller than the image), conv1_1 keeps
padding 1, pooling rounds down (exact on multiples of 32), fc6 is 7x7 with padding 3 so pool5 keeps
its size, and the upsampling layers have kernel 2f, stride f, padding f/2, which makes each output
exactly f times its input and matches the pooling grid (a stride-s cell covers input pixels
[s*i, s*i + s - 1], and the half-pixel bilinear interpolation puts its value at their centre). All
maps then line up with offset 0 (the same coordinate-map computation that gives Caffe's offsets
gives 0 for every crop; the tests recompute both from the layers) and the output is cropped back
to H x W. Both modes give logits at the input size for any H, W. Within half a stride of the
padded border the zero-padded transposed convolutions fade the logits (all classes by the same
factor where one cell contributes), as in the reference.

Other backbones
---------------
MobileNetV2 and ResNet get the same heads on their stride 8/16/32 features (:mod:`convision.models.
backbones`); they have no fc6/fc7, so ``score_fr`` is a 1x1 convolution on the stride-32 features,
after the dropout their torchvision classifier used before its last layer (MobileNetV2 0.2,
ResNet none). Their downsampling layers are odd k x k, stride-2 convolutions/pooling with padding
(k-1)/2, so cell i of a stride-s map is centred on input pixel s*i, not s*i + (s-1)/2 as for VGG's
2x2 pooling; the upsampling layers follow that grid (``Backbone.grid == "corner"``: kernel 2f-1,
padding f-1, output padding f-1), otherwise FCN-32s's output would be shifted by 15.5 pixels.
Alignment is again exact (offset 0).

Where this differs from the reference
-------------------------------------
* Weights come from torchvision (PyTorch-trained, RGB, ImageNet mean/std normalisation), not from
  the Caffe VGG16 (BGR, mean-subtracted 0-255): ``faithful`` reproduces the geometry, not the
  numbers of the published models.
* The staged voc-fcn8s adds skips unscaled, as here; the "at-once" variant's skip scaling
  (0.01 for pool4, 0.0001 for pool3) is not implemented.
* Optimiser details of the reference (biases at twice the learning rate and without weight decay;
  the reference code's batch-1 "heavy" training with momentum 0.99 and an unnormalised loss)
  belong to the trainer, not the model.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from convision.errors import ConfigError
from convision.models.backbones import BACKBONES, Backbone, build_backbone
from convision.nn.upsampling import BilinearUpsample

__all__ = ["FCN", "fcn32s", "fcn16s", "fcn8s", "fc_to_conv", "CAFFE_CROP_OFFSETS"]

#: Crop offsets of the reference Caffe nets (``faithful=True``), by output stride and layer.
CAFFE_CROP_OFFSETS: dict[int, dict[str, int]] = {
    32: {"upscore": 19},
    16: {"score_pool4": 5, "upscore16": 27},
    8: {"score_pool4": 5, "score_pool3": 9, "upscore8": 31},
}

_ALIGN = 32  # default mode pads the input to a multiple of the coarsest stride


def fc_to_conv(
    linear: nn.Linear, in_channels: int, kernel_size: int, padding: int = 0
) -> nn.Conv2d:
    """The convolution equivalent to ``linear`` applied to a flattened ``[in_channels, k, k]`` window.

    ``linear.weight`` ``[out, in_channels*k*k]`` is viewed as ``[out, in_channels, k, k]`` (C, H, W
    flattening order) and the bias is copied (paper Sec. 3.1, "convolutionalization").
    """
    expected = in_channels * kernel_size * kernel_size
    if linear.in_features != expected:
        raise ValueError(
            f"Linear has {linear.in_features} inputs, expected {in_channels}*{kernel_size}*{kernel_size} = {expected}"
        )
    # skip_init: the weights are overwritten at once (a random init of fc6 alone takes ~1 s on CPU).
    conv = torch.nn.utils.skip_init(
        nn.Conv2d,
        in_channels,
        linear.out_features,
        kernel_size,
        padding=padding,
        bias=linear.bias is not None,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(linear.weight.detach().reshape(conv.weight.shape))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias.detach())
    return conv


def _zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _crop(x: Tensor, offset: int, height: int, width: int) -> Tensor:
    """Caffe ``Crop`` (axis 2): ``x[..., offset:offset+height, offset:offset+width]``."""
    if x.shape[-2] < offset + height or x.shape[-1] < offset + width:
        raise RuntimeError(
            f"FCN crop: map {tuple(x.shape[-2:])} too small for offset {offset} and size {(height, width)}"
        )
    return x[..., offset : offset + height, offset : offset + width]


def _learnable_flags(value: Any) -> tuple[bool, bool]:
    """``learnable_upsampling`` -> (learn the 2x layers, learn the final layer)."""
    if isinstance(value, bool):
        return value, value
    if isinstance(value, str) and value.strip().lower() in ("2x", "intermediate"):
        return True, False
    if isinstance(value, str) and value.strip().lower() in (
        "none",
        "false",
        "all",
        "true",
    ):
        on = value.strip().lower() in ("all", "true")
        return on, on
    raise ConfigError(
        f"learnable_upsampling: expected true, false or '2x', got {value!r}"
    )


class FCN(nn.Module):
    """Fully convolutional network for semantic segmentation (Long et al., CVPR 2015).

    ``forward(x[N, 3, H, W]) -> logits[N, num_classes, H, W]`` for any H, W. Use the builders
    :func:`fcn32s`, :func:`fcn16s`, :func:`fcn8s`; ``stride`` is the coarsest prediction stride that
    is combined (32, 16 or 8). See the module docstring for every design choice.
    """

    def __init__(
        self,
        num_classes: int = 21,
        stride: int = 8,
        backbone: str = "vgg16",
        weights: str | os.PathLike | None = None,
        faithful: bool = False,
        learnable_upsampling: bool | str = False,
    ) -> None:
        super().__init__()
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, int)
            or num_classes < 1
        ):
            raise ConfigError(
                f"num_classes: must be a positive integer, got {num_classes!r}"
            )
        if stride not in CAFFE_CROP_OFFSETS:
            raise ConfigError(
                f"stride: FCN combines strides 32, 16 or 8, got {stride!r}"
            )
        if not isinstance(backbone, str) or backbone not in BACKBONES:
            raise ConfigError(
                f"backbone: unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})"
            )
        if not isinstance(faithful, bool):
            raise ConfigError(f"faithful: expected true or false, got {faithful!r}")
        if faithful and backbone != "vgg16":
            raise ConfigError(
                f"faithful: the reference pad-100-and-crop alignment exists for backbone 'vgg16' only, got {backbone!r}"
            )
        learn_2x, learn_final = _learnable_flags(learnable_upsampling)

        self.num_classes = num_classes
        self.stride = stride
        self.faithful = faithful
        self.backbone: Backbone = build_backbone(backbone, weights)
        channels = self.backbone.channels

        classifier = self.backbone.take_classifier()
        if classifier is not None:  # VGG: convolutionalise fc6 / fc7
            linears = [m for m in classifier if isinstance(m, nn.Linear)]
            drops = [m.p for m in classifier if isinstance(m, nn.Dropout)] + [0.5, 0.5]
            self.fc6 = fc_to_conv(
                linears[0], channels[32], 7, padding=0 if faithful else 3
            )
            self.relu6 = nn.ReLU(inplace=True)
            self.drop6 = nn.Dropout(drops[0])
            self.fc7 = fc_to_conv(linears[1], linears[0].out_features, 1)
            self.relu7 = nn.ReLU(inplace=True)
            self.drop7 = nn.Dropout(drops[1])
            fc_params = (*self.fc6.parameters(), *self.fc7.parameters())
            if not fc_params[0].is_meta and not all(
                torch.isfinite(p.sum(dtype=torch.float64)) for p in fc_params
            ):
                # torchvision's VGG16 IMAGENET1K_FEATURES weights ship a NaN classifier on purpose.
                warnings.warn(
                    "the VGG classifier weights are not finite (feature-only weights?): fc6/fc7 are initialised randomly",
                    stacklevel=3,
                )
                for conv in (self.fc6, self.fc7):
                    nn.init.normal_(
                        conv.weight, 0.0, 0.01
                    )  # torchvision's VGG Linear initialisation
                    nn.init.zeros_(conv.bias)
            score_in = self.fc7.out_channels
            del classifier, linears
        else:
            self.fc6 = None
            self.fc7 = None
            p = self.backbone.dropout
            self.dropout = nn.Dropout(p) if p > 0 else nn.Identity()
            score_in = channels[32]

        if faithful:
            first_conv = next(
                m for m in self.backbone.modules() if isinstance(m, nn.Conv2d)
            )
            first_conv.padding = (100, 100)  # conv1_1 pad 100
            for m in self.backbone.modules():
                if isinstance(m, nn.MaxPool2d):
                    m.ceil_mode = True  # Caffe rounds pooled sizes up

        def upsample(factor: int, learnable: bool) -> BilinearUpsample:
            return BilinearUpsample(
                num_classes,
                factor,
                learnable=learnable,
                aligned=not faithful,
                grid=self.backbone.grid,
            )

        self.score_fr = _zero_conv(score_in, num_classes)
        if stride == 32:
            self.upscore = upsample(32, learn_final)
        else:
            self.upscore2 = upsample(2, learn_2x)
            self.score_pool4 = _zero_conv(channels[16], num_classes)
            if stride == 16:
                self.upscore16 = upsample(16, learn_final)
            else:
                self.upscore_pool4 = upsample(2, learn_2x)
                self.score_pool3 = _zero_conv(channels[8], num_classes)
                self.upscore8 = upsample(8, learn_final)

        #: the builder name and its JSON-serialisable keyword arguments: build_model(spec["name"], **spec["kwargs"])
        self.spec: dict[str, Any] = {
            "name": f"fcn{stride}s",
            "kwargs": {
                "num_classes": num_classes,
                "backbone": backbone,
                "weights": None if weights is None else os.fspath(weights),
                "faithful": faithful,
                "learnable_upsampling": learnable_upsampling,
            },
        }

    def _score_fr(self, c32: Tensor) -> Tensor:
        if self.fc6 is not None:
            x = self.drop6(self.relu6(self.fc6(c32)))
            x = self.drop7(self.relu7(self.fc7(x)))
        else:
            x = self.dropout(c32)
        return self.score_fr(x)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if not self.faithful:
            pad_h, pad_w = -height % _ALIGN, -width % _ALIGN
            if pad_h or pad_w:
                x = F.pad(
                    x, (0, pad_w, 0, pad_h)
                )  # zeros = the mean colour of normalised input
        offsets = CAFFE_CROP_OFFSETS[self.stride] if self.faithful else {}
        feats = self.backbone(x)
        score = self._score_fr(feats[32])
        if self.stride == 32:
            out, final = self.upscore(score), "upscore"
        else:
            score = self.upscore2(score)
            pool4 = self.score_pool4(feats[16])
            score = score + _crop(
                pool4, offsets.get("score_pool4", 0), *score.shape[-2:]
            )
            if self.stride == 16:
                out, final = self.upscore16(score), "upscore16"
            else:
                score = self.upscore_pool4(score)
                pool3 = self.score_pool3(feats[8])
                score = score + _crop(
                    pool3, offsets.get("score_pool3", 0), *score.shape[-2:]
                )
                out, final = self.upscore8(score), "upscore8"
        return _crop(out, offsets.get(final, 0), height, width)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, stride={self.stride}, faithful={self.faithful}"


def _build(
    stride: int,
    num_classes: int,
    backbone: str,
    weights: str | os.PathLike | None,
    faithful: bool,
    learnable_upsampling: bool | str,
) -> FCN:
    return FCN(
        num_classes=num_classes,
        stride=stride,
        backbone=backbone,
        weights=weights,
        faithful=faithful,
        learnable_upsampling=learnable_upsampling,
    )


def fcn32s(
    num_classes: int = 21,
    backbone: str = "vgg16",
    weights: str | os.PathLike | None = None,
    faithful: bool = False,
    learnable_upsampling: bool | str = False,
) -> FCN:
    """FCN-32s: score_fr upsampled 32x (reference ``voc-fcn32s``). Arguments: see :class:`FCN`."""
    return _build(32, num_classes, backbone, weights, faithful, learnable_upsampling)


def fcn16s(
    num_classes: int = 21,
    backbone: str = "vgg16",
    weights: str | os.PathLike | None = None,
    faithful: bool = False,
    learnable_upsampling: bool | str = False,
) -> FCN:
    """FCN-16s: 2x score_fr + score_pool4, upsampled 16x (reference ``voc-fcn16s``)."""
    return _build(16, num_classes, backbone, weights, faithful, learnable_upsampling)


def fcn8s(
    num_classes: int = 21,
    backbone: str = "vgg16",
    weights: str | os.PathLike | None = None,
    faithful: bool = False,
    learnable_upsampling: bool | str = False,
) -> FCN:
    """FCN-8s: FCN-16s's fused map 2x + score_pool3, upsampled 8x (reference ``voc-fcn8s``)."""
    return _build(8, num_classes, backbone, weights, faithful, learnable_upsampling)
