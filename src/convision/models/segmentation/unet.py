"""U-Net: a contracting and an expanding path joined by concatenation skips.

Olaf Ronneberger, Philipp Fischer, Thomas Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI 2015 (arXiv:1505.04597).

Architecture (paper Sec. 2, Fig. 1)
-----------------------------------
* **Contracting path**: four levels of two 3x3 convolutions + ReLU followed by 2x2 max pooling
  (stride 2), the number of channels doubling from 64 (``base_channels``) at each level; a fifth
  pair of convolutions (1024 channels) at the bottom. Dropout at the end of the contracting path
  (Sec. 3, "Drop-out layers at the end of the contracting path"): here after the bottom pair.
* **Expanding path**: at each level a 2x2 up-convolution (transposed convolution, stride 2) that
  halves the channels, concatenation with the contracting path's map of that level, two 3x3
  convolutions + ReLU; a final 1x1 convolution to ``num_classes``. 23 convolutional layers.
* **Initialisation**: Gaussian with standard deviation sqrt(2/N), N = inputs of one neuron
  (``kaiming_normal_``, fan_in), biases zero (Sec. 3).

Two forms
---------
* ``valid=True`` is the paper's: unpadded ("valid") convolutions, each skip centre-cropped to the
  up-convolved map. The output is smaller than the input: a 572x572 tile gives 388x388 logits for
  its central region (``unet_valid_output_size(572) == 388``); each pooled map must have an even
  size, so only some input sizes are valid (:func:`unet_valid_output_size` raises for others,
  :func:`unet_valid_input_size` gives the tile for a wanted output). The paper segments large
  images by overlapping tiles with the border mirrored ("overlap-tile"); this model returns the
  logits of the central region, the tiling is the caller's. Such a model cannot be trained by the
  shared engine, which needs logits at the input size.
* ``valid=False`` (default): "same"-padded 3x3 convolutions; the input is zero-padded on the
  bottom/right to a multiple of the total stride and the logits are cropped back, so the logits
  are at the input size for any H x W (as every model trained by ``convision segment train``).

Structure (as in segmentation_models_pytorch)
---------------------------------------------
``encoder`` (:class:`PaperEncoder`, the contracting path, or a torchvision
:class:`~convision.models.backbones.Backbone`), ``decoder`` (:class:`UNetDecoder`: one
:class:`DecoderBlock` per level, "upsample 2x, concatenate the skip, two 3x3 convolutions") and
``head`` (the 1x1 convolution to ``num_classes``).

Encoders
--------
``backbone=None`` (or ``"none"``) is the paper's encoder, built here (no pretrained weights).
``backbone`` one of ``vgg16``, ``vgg16_bn``, ``mobilenet_v2``, ``resnet18/34/50/101`` uses the
torchvision network (``weights=`` as for every backbone) and its maps at strides 32 (the bottom),
16, 8, 4, 2 and, for VGG, 1 (:meth:`convision.models.backbones.Backbone.features`) as skips; the
expanding path has five levels of widths ``decoder_channels`` = 256, 128, 64, 32, 16 (the last, at
stride 1, without a skip when the encoder has no stride-1 map). This form is the common "U-Net with
a pretrained encoder" (e.g. TernausNet, smp's ``Unet``), not the paper's network; it is always
padded.

Defaults per form (``None`` = the form's default)
-------------------------------------------------
================  ===========================  ======================================
setting           paper (``backbone`` none)    pretrained encoder
================  ===========================  ======================================
``upsample``      ``"transposed"`` (2x2)       ``"nearest"``
``batch_norm``    False                        True (after every decoder convolution)
``dropout``       0.5 (bottom map)             0
``head_kernel``   1 (Gaussian init)            3 (Xavier init, as smp's head)
================  ===========================  ======================================

Measured on real photographs (CamVid 96x128, 10 epochs of batch 8, smp's own training loop for
both; BENCHMARKS.md, "Real photographs"): on ImageNet MobileNetV2 the paper's decoder (ten
randomly initialised convolutions without normalisation, transposed convolutions, dropout 0.5 on
the 1280-channel bottom map) reached test mIoU 0.369, these defaults 0.404, smp's ``Unet`` 0.406.
The rest of the gap a user saw came from the training recipe, not the network: the recipe of
:data:`convision.models.segmentation.RECIPES` and the crop size that follows the data.
The 3x3 head trains to a lower loss at the same budget (0.318 vs 0.400 after 10 epochs; smp's: 0.317)
and to the same error (test mIoU 0.407).

Where this differs from the paper
---------------------------------
* ``batch_norm=True`` (not in the paper) adds BN after every 3x3 convolution.
* The weighted loss that separates touching cells (Sec. 3, Eq. 2) and the elastic deformations
  belong to the loss and the data pipeline, not the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from convision.errors import ConfigError
from convision.models.backbones import BACKBONES, build_backbone, is_none
from convision.models.segmentation.segnet import check_num_classes

__all__ = [
    "UNet",
    "UNetDecoder",
    "DecoderBlock",
    "PaperEncoder",
    "unet",
    "unet_valid_output_size",
    "unet_valid_input_size",
    "DECODER_CHANNELS",
]

#: widths of the expanding path with a torchvision encoder, strides 16, 8, 4, 2, 1
DECODER_CHANNELS: tuple[int, ...] = (256, 128, 64, 32, 16)
_DEPTH = 4  # poolings of the paper's network


def _valid_output(n: int, depth: int) -> int | None:
    size = n
    for _ in range(depth):
        size -= 4
        if size < 2 or size % 2:
            return None
        size //= 2
    size -= 4
    if size < 1:
        return None
    for _ in range(depth):
        size = size * 2 - 4
    return size if size >= 1 else None


def unet_valid_output_size(n: int, depth: int = _DEPTH) -> int:
    """Output side of the valid (unpadded) U-Net for input side ``n``: 572 -> 388 (``n - 184``).

    Valid sides (depth 4) are ``n = 16 m + 60`` with ``n >= 188``; for any other ``n`` a pooled
    map would have an odd side (or nothing would be left) and ``ValueError`` names the nearest
    valid sides.
    """
    out = _valid_output(n, depth)
    if out is None:
        step = 2**depth
        near = [
            m
            for m in range(max(1, n - step), n + step + 1)
            if _valid_output(m, depth) is not None
        ]
        hint = (
            " or ".join(map(str, near))
            if near
            else str(unet_valid_input_size(1, depth))
        )
        raise ValueError(
            f"U-Net (valid): input side {n} is not valid (every pooled map needs an even side); nearest valid: {hint}"
        )
    return out


def unet_valid_input_size(out: int, depth: int = _DEPTH) -> int:
    """Smallest input side of the valid U-Net whose output side is at least ``out`` (388 -> 572)."""
    if out < 1:
        raise ValueError(f"output size must be >= 1, got {out}")
    n = out
    while (_valid_output(n, depth) or 0) < out:
        n += 1
    return n


def _conv(cin: int, cout: int, padding: int, batch_norm: bool) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, 3, padding=padding, bias=not batch_norm)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return [
        conv,
        *([nn.BatchNorm2d(cout)] if batch_norm else []),
        nn.ReLU(inplace=True),
    ]


def double_conv(
    cin: int, cout: int, padding: int = 1, batch_norm: bool = False
) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by (BN and) ReLU."""
    return nn.Sequential(
        *_conv(cin, cout, padding, batch_norm), *_conv(cout, cout, padding, batch_norm)
    )


def up_conv(cin: int, cout: int) -> nn.ConvTranspose2d:
    """2x2 up-convolution, stride 2 (the paper's). Initialised with the fan-in of one output pixel,
    ``cin`` (each output pixel sees one input pixel through one of the four taps)."""
    up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
    nn.init.normal_(up.weight, 0.0, (2.0 / cin) ** 0.5)
    nn.init.zeros_(up.bias)
    return up


def _centre_crop(x: Tensor, height: int, width: int) -> Tensor:
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class DecoderBlock(nn.Module):
    """One level of the expanding path: 2x upsampling, concatenation with the skip (first, as in the
    paper's Fig. 1), two 3x3 convolutions (+ BN) + ReLU.

    ``upsample="transposed"``: the paper's 2x2 up-convolution to ``out_channels`` (halving the
    channels); ``"nearest"`` / ``"bilinear"``: parameter-free interpolation that keeps
    ``in_channels``. ``crop_skip``: centre-crop the skip to the upsampled map (valid form).
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        upsample: str = "nearest",
        batch_norm: bool = True,
        padding: int = 1,
        crop_skip: bool = False,
    ) -> None:
        super().__init__()
        if upsample == "transposed":
            self.up: nn.Module = up_conv(in_channels, out_channels)
            up_channels = out_channels
        elif upsample in ("nearest", "bilinear"):
            self.up = nn.Upsample(scale_factor=2, mode=upsample)
            up_channels = in_channels
        else:
            raise ConfigError(
                f"upsample: expected 'transposed', 'nearest' or 'bilinear', got {upsample!r}"
            )
        self.crop_skip = crop_skip
        self.convs = double_conv(
            skip_channels + up_channels, out_channels, padding, batch_norm
        )

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat(
                [_centre_crop(skip, *x.shape[-2:]) if self.crop_skip else skip, x],
                dim=1,
            )
        return self.convs(x)


class UNetDecoder(nn.Module):
    """The expanding path: one :class:`DecoderBlock` per level, coarse to fine.

    ``skip_channels[i]`` is the width of the skip joined at level ``i`` (0 = no skip there);
    ``forward(x, skips)`` takes the bottom map and the skips in the same order (``None`` where
    there is none).
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: Sequence[int],
        decoder_channels: Sequence[int],
        **block: Any,
    ) -> None:
        super().__init__()
        if len(skip_channels) != len(decoder_channels):
            raise ConfigError(
                f"decoder_channels: need {len(skip_channels)} widths, got {len(decoder_channels)}"
            )
        blocks = []
        for skip, out in zip(skip_channels, decoder_channels):
            blocks.append(DecoderBlock(in_channels, skip, out, **block))
            in_channels = out
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = in_channels

    def forward(self, x: Tensor, skips: Sequence[Tensor | None]) -> Tensor:
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip)
        return x


class PaperEncoder(nn.Module):
    """The paper's contracting path: ``depth + 1`` double convolutions with 2x2 max pooling between
    them, widths ``base_channels * 2**i``; ``forward`` returns every level's map, finest first."""

    def __init__(
        self,
        base_channels: int = 64,
        depth: int = _DEPTH,
        padding: int = 1,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.widths = [
            base_channels * 2**i for i in range(depth + 1)
        ]  # 64, 128, 256, 512, 1024
        self.levels = nn.ModuleList(
            double_conv(cin, w, padding, batch_norm)
            for cin, w in zip([3, *self.widths], self.widths)
        )
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = []
        for i, level in enumerate(self.levels):
            x = level(self.pool(x) if i else x)
            maps.append(x)
        return maps


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015): ``encoder`` + ``decoder`` (:class:`UNetDecoder`) + ``head``
    (1x1 convolution); see the module docstring for the two forms, the encoders and the defaults.

    ``forward(x[N,3,H,W])``: padded form -> logits ``[N,C,H,W]`` for any H, W; valid form -> logits
    of the central ``unet_valid_output_size(H) x unet_valid_output_size(W)`` region.
    """

    def __init__(
        self,
        num_classes: int = 2,
        backbone: str | None = None,
        weights: str | os.PathLike | None = None,
        valid: bool = False,
        base_channels: int = 64,
        batch_norm: bool | None = None,
        dropout: float | None = None,
        upsample: str | None = None,
        decoder_channels: Sequence[int] | None = None,
        head_kernel: int | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if isinstance(backbone, str) and backbone.strip().lower() in (
            "",
            "none",
            "null",
            "unet",
        ):
            backbone = None
        if backbone is not None and backbone not in BACKBONES:
            raise ConfigError(
                f"backbone: unknown backbone {backbone!r} (known: none, {', '.join(BACKBONES)})"
            )
        paper = backbone is None
        batch_norm = (not paper) if batch_norm is None else batch_norm
        dropout = (0.5 if paper else 0.0) if dropout is None else dropout
        upsample = (
            ("transposed" if paper else "nearest") if upsample is None else upsample
        )
        if not isinstance(valid, bool) or not isinstance(batch_norm, bool):
            raise ConfigError("valid, batch_norm: expected true or false")
        if (
            isinstance(base_channels, bool)
            or not isinstance(base_channels, int)
            or base_channels < 1
        ):
            raise ConfigError(
                f"base_channels: must be a positive integer, got {base_channels!r}"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {dropout!r}")
        if paper and not is_none(weights):
            raise ConfigError(
                "weights: the paper's U-Net encoder (backbone none) has no pretrained weights; use weights none"
            )
        if not paper and valid:
            raise ConfigError(
                "valid: the valid-convolution form exists for the paper's encoder only (backbone none)"
            )
        if valid and upsample != "transposed":
            raise ConfigError(
                "upsample: the valid form needs the paper's 'transposed' up-convolutions"
            )
        self.valid = valid
        self.backbone_name = backbone
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if paper:
            pad = 0 if valid else 1
            self.encoder: nn.Module = PaperEncoder(
                base_channels, _DEPTH, pad, batch_norm
            )
            widths = self.encoder.widths
            bottom, skips = widths[-1], widths[-2::-1]
            default_widths = tuple(
                widths[-2::-1]
            )  # 512, 256, 128, 64: each up-convolution halves
            self.skip_strides: tuple[int | None, ...] = tuple(
                2**i for i in range(_DEPTH - 1, -1, -1)
            )
            self.align = 2**_DEPTH
            block = {
                "upsample": upsample,
                "batch_norm": batch_norm,
                "padding": pad,
                "crop_skip": valid,
            }
        else:
            self.encoder = build_backbone(backbone, weights)
            self.encoder.take_classifier()  # unused
            chans = self.encoder.feature_channels()
            bottom = chans[32]
            self.skip_strides = tuple(
                s if s in chans else None for s in (16, 8, 4, 2, 1)
            )
            skips = [chans.get(s, 0) for s in (16, 8, 4, 2, 1)]
            default_widths = DECODER_CHANNELS
            self.align = 32
            block = {"upsample": upsample, "batch_norm": batch_norm}
        widths_ = tuple(int(w) for w in (decoder_channels or default_widths))
        self.decoder = UNetDecoder(bottom, skips, widths_, **block)
        head_kernel = (1 if paper else 3) if head_kernel is None else int(head_kernel)
        if head_kernel not in (1, 3):
            raise ConfigError(f"head_kernel: expected 1 or 3, got {head_kernel!r}")
        self.head = nn.Conv2d(
            self.decoder.out_channels,
            num_classes,
            head_kernel,
            padding=head_kernel // 2,
        )
        if paper:
            nn.init.kaiming_normal_(
                self.head.weight, mode="fan_in", nonlinearity="relu"
            )  # the paper's Gaussian
        else:
            nn.init.xavier_uniform_(
                self.head.weight
            )  # a linear layer on 3x3 windows (as smp's head)
        nn.init.zeros_(self.head.bias)
        #: the builder name and its JSON-serialisable keyword arguments
        self.spec: dict[str, Any] = {
            "name": "unet",
            "kwargs": {
                "num_classes": num_classes,
                "backbone": backbone,
                "weights": None if weights is None else os.fspath(weights),
                "valid": valid,
                "base_channels": base_channels,
                "batch_norm": batch_norm,
                "dropout": float(dropout),
                "upsample": upsample,
                "decoder_channels": list(widths_),
                "head_kernel": head_kernel,
            },
        }

    def features(self, x: Tensor) -> tuple[Tensor, list[Tensor | None]]:
        """The encoder's bottom map and the skips in decoder order (coarse to fine, ``None`` where
        the level has no skip)."""
        if self.backbone_name is None:
            maps = self.encoder(x)
            return maps[-1], maps[-2::-1]
        feats = self.encoder.features(x)
        return feats[32], [feats[s] if s else None for s in self.skip_strides]

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if self.valid:
            (
                unet_valid_output_size(height),
                unet_valid_output_size(width),
            )  # clear error for a bad tile
        else:
            x = F.pad(
                x, (0, -width % self.align, 0, -height % self.align)
            )  # zeros = the mean colour of normalised input
        bottom, skips = self.features(x)
        logits = self.head(self.decoder(self.drop(bottom), skips))
        return logits if self.valid else logits[..., :height, :width]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, backbone={self.backbone_name!r}, valid={self.valid}"


def unet(
    *,
    num_classes: int = 2,
    backbone: str | None = None,
    weights: str | os.PathLike | None = None,
    valid: bool = False,
    base_channels: int = 64,
    batch_norm: bool | None = None,
    dropout: float | None = None,
    upsample: str | None = None,
    decoder_channels: Sequence[int] | None = None,
    head_kernel: int | None = None,
) -> UNet:
    """U-Net: the paper's network (``backbone=None``, ``valid`` for its unpadded form) or a U-Net on a
    torchvision encoder (``backbone``, ``weights``). ``None`` picks the form's default (module
    docstring). See :class:`UNet`."""
    return UNet(
        num_classes=num_classes,
        backbone=backbone,
        weights=weights,
        valid=valid,
        base_channels=base_channels,
        batch_norm=batch_norm,
        dropout=dropout,
        upsample=upsample,
        decoder_channels=decoder_channels,
        head_kernel=head_kernel,
    )
