"""torchvision classification networks as feature extractors: ``{stride: feature map}``.

A :class:`Backbone` wraps (slices, never copies) the modules of a torchvision classifier into three
stages whose outputs have strides 8, 16 and 32 with respect to the input:

=============  ================================  ==========================  ==========================
name           stride 8                          stride 16                   stride 32
=============  ================================  ==========================  ==========================
vgg16(_bn),19  ``features`` up to pool3 (256)    up to pool4 (512)           up to pool5 (512)
mobilenet_v2   ``features[0:7]`` (32)            ``features[7:14]`` (96)     ``features[14:19]`` (1280)
resnetNN       stem + layer1 + layer2            layer3                      layer4
=============  ================================  ==========================  ==========================

Finer maps, for decoders with skips at every resolution (U-Net): :meth:`Backbone.features` also
returns, for each stride s < 8 the network has, the last map at that stride inside the stride-8
stage: VGG: 1 (conv1_2, 64), 2 (conv2_2, 128), 4 (conv3_3, 256), i.e. the block outputs before
pooling; MobileNetV2: 2 (``features[1]``, 16), 4 (``features[3]``, 24); ResNet: 2 (stem ReLU, 64), 4
(layer1, 64 or 256). Strides 8, 16, 32 are the stage outputs as above (nothing there changes).

MobileNetV2's stride-32 stage includes the final 1x1 convolution to 1280 channels so that every
pretrained weight except the classifier is used. For VGG the classifier's two hidden
``Linear`` layers (fc6, fc7) are kept aside (not registered as submodules, so they do not bloat the
state dict) for :meth:`Backbone.take_classifier`; FCN turns them into convolutions.

Weights (``weights=``): ``None``/``"none"`` for random initialisation, a torchvision weights name
(``"IMAGENET1K_V1"``, ``"DEFAULT"``; torchvision downloads into torch.hub's cache and checks the
hash as usual), or the path of a local ``.pth`` holding a torchvision state dict of that classifier.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from convision.errors import CheckpointError, ConfigError

__all__ = ["BACKBONES", "Backbone", "build_backbone", "load_torchvision_classifier"]

#: backbone name -> (family, the torchvision classifier's last layer, which a backbone never uses)
BACKBONES: dict[str, tuple[str, str]] = {
    "vgg16": ("vgg", "classifier.6."),
    "vgg16_bn": ("vgg", "classifier.6."),
    "vgg19": ("vgg", "classifier.6."),  # Gatys et al.'s style-transfer network
    "mobilenet_v2": ("mobilenet_v2", "classifier.1."),
    "resnet18": ("resnet", "fc."),
    "resnet34": ("resnet", "fc."),
    "resnet50": ("resnet", "fc."),
    "resnet101": ("resnet", "fc."),
}

_WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


class Backbone(nn.Module):
    """Three sequential stages; ``forward(x) -> {8: Tensor, 16: Tensor, 32: Tensor}``.

    Attributes: ``arch`` (the backbone name), ``channels`` (``{stride: channels}``),
    ``dropout`` (the dropout rate the torchvision classifier applies before its last layer; a
    segmentation head that replaces that layer can keep it), ``grid`` (where a feature cell sits in
    the input, see below), and ``stride8``, ``stride16``,
    ``stride32`` (``nn.Sequential`` slices of the torchvision modules, their original child names
    kept, so parameter names read like ``stride8.layer2.0.conv1.weight``).

    ``grid``: the centre of the receptive field of cell ``i`` of the stride-s map, in input pixels.
    ``"center"``: ``s*i + (s-1)/2``, the middle of the s x s block it pools (VGG: 3x3/pad-1
    convolutions and 2x2/stride-2 pooling). ``"corner"``: ``s*i`` (ResNet, MobileNetV2: every
    downsampling layer is an odd k x k, stride-2 convolution or pooling with padding (k-1)/2).
    Upsampling that puts values back at the right pixels depends on it
    (:class:`convision.nn.BilinearUpsample` ``grid=``).
    """

    def __init__(
        self,
        arch: str,
        stride8: nn.Sequential,
        stride16: nn.Sequential,
        stride32: nn.Sequential,
        dropout: float = 0.0,
        classifier: nn.Sequential | None = None,
        grid: str = "corner",
    ) -> None:
        super().__init__()
        self.arch = arch
        self.stride8 = stride8
        self.stride16 = stride16
        self.stride32 = stride32
        self.channels: dict[int, int] = {
            8: _out_channels(stride8),
            16: _out_channels(stride16),
            32: _out_channels(stride32),
        }
        self.dropout = float(dropout)
        self.grid = grid
        # A plain tuple is not registered as a submodule: no parameters, no state-dict entries.
        self._classifier: tuple[nn.Sequential, ...] = (
            (classifier,) if classifier is not None else ()
        )

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        c8 = self.stride8(x)
        c16 = self.stride16(c8)
        c32 = self.stride32(c16)
        return {8: c8, 16: c16, 32: c32}

    def features(self, x: Tensor) -> dict[int, Tensor]:
        """``forward`` plus the finer maps (strides 1, 2, 4 where the network has them; see the
        module docstring). Strides are measured on the input's height: pad it to a multiple of 32."""
        height = x.shape[-2]
        out: dict[int, Tensor] = {}
        for child in self.stride8:
            x = child(x)
            stride = 2 ** round(math.log2(height / x.shape[-2]))
            if stride < 8:
                out[stride] = x  # the last map at that stride wins
        c16 = self.stride16(x)
        c32 = self.stride32(c16)
        return {**out, 8: x, 16: c16, 32: c32}

    def feature_channels(self) -> dict[int, int]:
        """``{stride: channels}`` of :meth:`features` (one shape-only pass on a 32x32 input)."""
        param = next(self.parameters())
        was_training = self.training
        self.eval()  # no batch-norm statistics update
        try:
            with torch.no_grad():
                feats = self.features(
                    torch.zeros(1, 3, 32, 32, device=param.device, dtype=param.dtype)
                )
        finally:
            self.train(was_training)
        return {s: f.shape[1] for s, f in sorted(feats.items())}

    def take_classifier(self) -> nn.Sequential | None:
        """Hand over the torchvision classifier (VGG only; ``None`` otherwise or if already taken).

        For VGG it is torchvision's ``classifier``: ``Linear(25088, 4096), ReLU, Dropout,
        Linear(4096, 4096), ReLU, Dropout, Linear(4096, 1000)``. The backbone drops its reference.
        """
        classifier = self._classifier[0] if self._classifier else None
        self._classifier = ()
        return classifier

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, channels={self.channels}, grid={self.grid!r}"


def _out_channels(stage: nn.Module) -> int:
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _slice(seq: nn.Sequential, start: int, stop: int) -> nn.Sequential:
    # Sequential slicing keeps the original child names ("17", "18", ...).
    return seq[start:stop]


def _known() -> str:
    return ", ".join(BACKBONES)


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def is_none(weights: Any) -> bool:
    return weights is None or (
        isinstance(weights, str)
        and weights.strip().lower() in ("", "none", "null", "random")
    )


def looks_like_path(weights: str) -> bool:
    return (
        os.path.exists(weights)
        or weights.lower().endswith(_WEIGHT_SUFFIXES)
        or "/" in weights
        or os.sep in weights
    )


def read_state_dict(path: Path, name: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(
            f"{path}: backbone weights file not found (weights= expects 'none', a torchvision weights name or a .pth state dict of torchvision {name})"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as e:  # corrupt zip, truncated file, unsafe pickle, not a torch file ...
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch state dict ({type(e).__name__}: {first_line(e)})"
        ) from None
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    ):
        if isinstance(obj, Mapping):
            keys = ", ".join(repr(k) for k in list(obj)[:5])
            what = (
                f"a dict with keys {keys}{', ...' if len(obj) > 5 else ''}"
                if obj
                else "an empty dict"
            )
        else:
            what = f"a {type(obj).__name__}"
        raise CheckpointError(
            f"{path}: expected a state dict (parameter name -> tensor) of torchvision {name}, found {what}"
        )
    state = dict(obj)
    if all(
        k.startswith("module.") for k in state
    ):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def check_state_dict(
    path: Path, name: str, state: dict[str, Tensor], expected: dict[str, Tensor]
) -> None:
    """One-line CheckpointError unless ``state`` has exactly the ``expected`` keys and shapes."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})"
            )
        raise CheckpointError(
            f"{path}: not a state dict of torchvision {name}: keys {'; '.join(parts)}"
        )
    wrong = [k for k in state if state[k].shape != expected[k].shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{path}: not a state dict of torchvision {name}: {len(wrong)} tensor(s) of the wrong shape "
            f"(e.g. {k}: {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} expected)"
        )


def load_torchvision_classifier(
    name: str, weights: str | os.PathLike | None = None
) -> nn.Module:
    """The torchvision classifier ``name`` with ``weights`` (see the module docstring).

    Raises ``ConfigError`` for an unknown name or weights name and ``CheckpointError`` for a weights
    file that is missing, unreadable or does not fit the network, or a failed download.
    """
    if name not in BACKBONES:
        raise ConfigError(f"backbone: unknown backbone {name!r} (known: {_known()})")
    if is_none(weights):
        return torchvision.models.get_model(name, weights=None)
    if isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and looks_like_path(weights)
    ):
        return _from_file(name, Path(weights))
    if not isinstance(weights, str):
        raise ConfigError(
            f"weights: expected 'none', a torchvision weights name or a .pth path, got {weights!r}"
        )
    enum = torchvision.models.get_model_weights(name)
    key = weights.strip().removeprefix(enum.__name__ + ".")
    if key not in enum.__members__:
        raise ConfigError(
            f"weights: {weights!r} is neither a file nor a torchvision weights name for {name} (known: {', '.join(enum.__members__)})"
        )
    label = key if enum[key].name == key else f"{key} (= {enum[key].name})"
    try:
        return torchvision.models.get_model(name, weights=enum[key])
    except (
        OSError,
        RuntimeError,
        ValueError,
    ) as e:  # no network, bad hash, corrupt cache file
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise CheckpointError(
            f"weights: could not load torchvision {name} {label} ({type(e).__name__}: {first_line(e)}); "
            f"put {enum[key].url.rsplit('/', 1)[-1]} in {cache} or pass a local .pth file"
        ) from None


def _from_file(name: str, path: Path) -> nn.Module:
    state = read_state_dict(path, name)
    model = torchvision.models.get_model(name, weights=None)
    expected = model.state_dict()
    # The last classification layer is never used by a backbone: a classifier fine-tuned to other
    # classes (different shape there) is accepted, that layer keeps its random initialisation.
    head = BACKBONES[name][1]
    skipped = [
        k
        for k in expected
        if k.startswith(head) and k in state and state[k].shape != expected[k].shape
    ]
    for k in skipped:
        del state[k]
    check_state_dict(
        path, name, state, {k: v for k, v in expected.items() if k not in skipped}
    )
    model.load_state_dict(state, strict=False)
    return model


def build_backbone(name: str, weights: str | os.PathLike | None = None) -> Backbone:
    """Build the backbone ``name`` (one of :data:`BACKBONES`) with ``weights`` (see module docstring)."""
    model: Any = load_torchvision_classifier(name, weights)
    family = BACKBONES[name][0]
    if family == "vgg":
        feats = model.features
        pools = [i for i, m in enumerate(feats) if isinstance(m, nn.MaxPool2d)]
        assert len(pools) == 5, f"unexpected torchvision {name} layout"
        return Backbone(
            name,
            _slice(feats, 0, pools[2] + 1),  # conv1_1 .. pool3
            _slice(feats, pools[2] + 1, pools[3] + 1),  # conv4_1 .. pool4
            _slice(feats, pools[3] + 1, pools[4] + 1),  # conv5_1 .. pool5
            dropout=0.5,
            classifier=model.classifier,
            grid="center",
        )
    if family == "mobilenet_v2":
        feats = model.features
        dropout = next(
            (m.p for m in model.classifier if isinstance(m, nn.Dropout)), 0.0
        )
        return Backbone(
            name,
            _slice(feats, 0, 7),
            _slice(feats, 7, 14),
            _slice(feats, 14, 19),
            dropout=dropout,
            grid="corner",
        )
    # resnet
    stem = nn.Sequential(
        OrderedDict(
            [
                ("conv1", model.conv1),
                ("bn1", model.bn1),
                ("relu", model.relu),
                ("maxpool", model.maxpool),
                ("layer1", model.layer1),
                ("layer2", model.layer2),
            ]
        )
    )
    return Backbone(
        name,
        stem,
        nn.Sequential(OrderedDict(layer3=model.layer3)),
        nn.Sequential(OrderedDict(layer4=model.layer4)),
        grid="corner",
    )
