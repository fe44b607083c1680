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

Encoders
--------
``backbone=None`` (or ``"none"``) is the paper's encoder, built here (no pretrained weights).
``backbone`` one of ``vgg16``, ``vgg16_bn``, ``mobilenet_v2``, ``resnet18/34/50/101`` uses the
torchvision network (``weights=`` as for every backbone) and its maps at strides 32 (the bottom),
16, 8, 4, 2 and, for VGG, 1 (:meth:`convision.models.backbones.Backbone.features`) as skips; the
expanding path has five levels of widths 256, 128, 64, 32, 16 (the last, at stride 1, without a
skip when the encoder has no stride-1 map). This form is the common "U-Net with a pretrained
encoder" (e.g. TernausNet), not the paper's network; it is always padded.

Where this differs from the paper
---------------------------------
* ``batch_norm=True`` (not in the paper) adds BN after every 3x3 convolution.
* The weighted loss that separates touching cells (Sec. 3, Eq. 2) and the elastic deformations
  belong to the loss and the data pipeline, not the model.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from convision.errors import ConfigError
from convision.models.backbones import BACKBONES, Backbone, _is_none, build_backbone
from convision.models.segmentation.segnet import check_num_classes

__all__ = ["UNet", "unet", "unet_valid_output_size", "unet_valid_input_size", "DECODER_CHANNELS"]

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
        near = [m for m in range(max(1, n - step), n + step + 1) if _valid_output(m, depth) is not None]
        hint = " or ".join(map(str, near)) if near else str(unet_valid_input_size(1, depth))
        raise ValueError(f"U-Net (valid): input side {n} is not valid (every pooled map needs an even side); nearest valid: {hint}")
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
    return [conv, *([nn.BatchNorm2d(cout)] if batch_norm else []), nn.ReLU(inplace=True)]


def double_conv(cin: int, cout: int, padding: int = 1, batch_norm: bool = False) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by (BN and) ReLU."""
    return nn.Sequential(*_conv(cin, cout, padding, batch_norm), *_conv(cout, cout, padding, batch_norm))


def up_conv(cin: int, cout: int) -> nn.ConvTranspose2d:
    """2x2 up-convolution, stride 2."""
    up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
    nn.init.kaiming_normal_(up.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(up.bias)
    return up


def _centre_crop(x: Tensor, height: int, width: int) -> Tensor:
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015); see the module docstring for the two forms and the encoders.

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
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if isinstance(backbone, str) and backbone.strip().lower() in ("", "none", "null", "unet"):
            backbone = None
        if backbone is not None and backbone not in BACKBONES:
            raise ConfigError(f"backbone: unknown backbone {backbone!r} (known: none, {', '.join(BACKBONES)})")
        if not isinstance(valid, bool) or not isinstance(batch_norm, bool):
            raise ConfigError("valid, batch_norm: expected true or false")
        if isinstance(base_channels, bool) or not isinstance(base_channels, int) or base_channels < 1:
            raise ConfigError(f"base_channels: must be a positive integer, got {base_channels!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {dropout!r}")
        if backbone is None and not _is_none(weights):
            raise ConfigError("weights: the paper's U-Net encoder (backbone none) has no pretrained weights; use weights none")
        if backbone is not None and valid:
            raise ConfigError("valid: the valid-convolution form exists for the paper's encoder only (backbone none)")
        self.valid = valid
        self.backbone_name = backbone
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        pad = 0 if valid else 1
        if backbone is None:
            widths = [base_channels * 2**i for i in range(_DEPTH + 1)]  # 64, 128, 256, 512, 1024
            self.encoder = nn.ModuleList()
            cin = 3
            for w in widths:
                self.encoder.append(double_conv(cin, w, pad, batch_norm))
                cin = w
            self.pool = nn.MaxPool2d(2, 2)
            self.ups = nn.ModuleList(up_conv(w2, w1) for w1, w2 in zip(widths[-2::-1], widths[:0:-1]))
            self.decoder = nn.ModuleList(double_conv(2 * w, w, pad, batch_norm) for w in widths[-2::-1])
            self.skip_strides: tuple[int | None, ...] = ()
            self.align = 2**_DEPTH
            out_ch = widths[0]
        else:
            self.backbone: Backbone = build_backbone(backbone, weights)
            self.backbone.take_classifier()  # unused
            chans = self.backbone.feature_channels()
            cin = chans[32]
            ups, decs, skips = [], [], []
            for stride, w in zip((16, 8, 4, 2, 1), DECODER_CHANNELS):
                skip = chans.get(stride, 0)
                ups.append(up_conv(cin, w))
                decs.append(double_conv(w + skip, w, 1, batch_norm))
                skips.append(stride if skip else None)
                cin = w
            self.ups, self.decoder = nn.ModuleList(ups), nn.ModuleList(decs)
            self.skip_strides = tuple(skips)
            self.align = 32
            out_ch = cin
        self.classifier = nn.Conv2d(out_ch, num_classes, 1)
        nn.init.kaiming_normal_(self.classifier.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.classifier.bias)
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
            },
        }

    def _paper(self, x: Tensor) -> Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            if i:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        x = self.drop(skips.pop())
        for up, block in zip(self.ups, self.decoder):
            x = up(x)
            skip = skips.pop()
            if self.valid:
                skip = _centre_crop(skip, *x.shape[-2:])
            x = block(torch_cat(skip, x))
        return self.classifier(x)

    def _torchvision(self, x: Tensor) -> Tensor:
        feats = self.backbone.features(x)
        x = self.drop(feats[32])
        for up, block, stride in zip(self.ups, self.decoder, self.skip_strides):
            x = up(x)
            x = block(torch_cat(feats[stride], x) if stride else x)
        return self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if self.valid:
            unet_valid_output_size(height), unet_valid_output_size(width)  # clear error for a bad tile
            return self._paper(x)
        pad_h, pad_w = -height % self.align, -width % self.align
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # zeros = the mean colour of normalised input
        out = self._paper(x) if self.backbone_name is None else self._torchvision(x)
        return out[..., :height, :width]

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, backbone={self.backbone_name!r}, valid={self.valid}"


def torch_cat(skip: Tensor, x: Tensor) -> Tensor:
    """Concatenate the skip (first, as in the paper's Fig. 1) and the up-convolved map along channels."""
    return torch.cat([skip, x], dim=1)


def unet(
    *,
    num_classes: int = 2,
    backbone: str | None = None,
    weights: str | os.PathLike | None = None,
    valid: bool = False,
    base_channels: int = 64,
    batch_norm: bool = False,
    dropout: float = 0.5,
) -> UNet:
    """U-Net: the paper's network (``backbone=None``, ``valid`` for its unpadded form) or a U-Net on a
    torchvision encoder (``backbone``, ``weights``). See :class:`UNet`."""
    return UNet(num_classes=num_classes, backbone=backbone, weights=weights, valid=valid, base_channels=base_channels,
                batch_norm=batch_norm, dropout=dropout)
