"""Zeiler & Fergus's deconvnet: project a hidden activation back to pixel space.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks" (ECCV 2014), section 2.1:
a deconvnet is attached to each layer of a convnet and run backwards from one activation (all
others of the layer set to zero) to the input pixels, undoing each layer in turn:

- **unpooling**: max pooling is not invertible, but the *switches* -- where each pooling window's
  maximum was -- are recorded on the forward pass; unpooling puts each value back at its switch
  and zeros elsewhere (``F.max_unpool2d`` with the indices of ``F.max_pool2d(...,
  return_indices=True)``);
- **rectification**: the reconstruction is passed through a ReLU (the map must stay positive, as
  the features were);
- **filtering**: the transposed versions of the same filters (``F.conv_transpose2d`` with the
  convolution's own weights, stride, padding, dilation and groups; no bias).

:class:`DeconvNet` does exactly that for a plain stack of ``Conv2d`` / ``ReLU`` / ``MaxPool2d``
(plus layers it passes through: eval-mode ``BatchNorm2d`` -- its scale --, ``Dropout``,
``LocalResponseNorm``, ``Identity``), which is what AlexNet's, ZFNet's and VGG's feature
extractors are. :func:`plain_stack` finds whether the layers up to a chosen one form such a
stack. For other networks (ResNet's sums, MobileNet's inverted residuals) the same projection is
the backward pass with the ReLU's backward rule replaced by ``relu(signal)``
(:func:`convision.inspect.saliency.project_activation` with ``mode="deconvnet"``); on a plain
stack the two agree (the tests check it).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convision.inspect.saliency import StopForward

__all__ = ["DeconvNet", "plain_stack", "pool_with_switches", "unpool"]

_PASS = (nn.Dropout, nn.Dropout2d, nn.LocalResponseNorm, nn.Identity)


def _passes(module: nn.Module) -> bool:
    """Layers the deconvnet passes the signal through: dropout, identity, local response
    normalisation (``nn.LocalResponseNorm`` or a module named like ``...LRN``, e.g. convision's
    two-tower ``TowerLRN``; Zeiler & Fergus do not invert the normalisation either)."""
    return isinstance(module, _PASS) or type(module).__name__.endswith("LRN")


def _units(module: nn.Module) -> list[nn.Module]:
    """The leaf modules, a pass-through layer counting as one unit with its children."""
    if _passes(module) or next(module.children(), None) is None:
        return [module]
    return [unit for child in module.children() for unit in _units(child)]


def pool_with_switches(x: Tensor, pool: nn.MaxPool2d) -> tuple[Tensor, Tensor]:
    """``pool(x)`` and its switches: the flat index (into each ``H x W`` input plane) of every
    window's maximum."""
    return F.max_pool2d(
        x,
        pool.kernel_size,
        pool.stride,
        pool.padding,
        pool.dilation,
        ceil_mode=pool.ceil_mode,
        return_indices=True,
    )


def unpool(
    y: Tensor, switches: Tensor, pool: nn.MaxPool2d, size: Sequence[int]
) -> Tensor:
    """Each value of ``y`` put back where its window's maximum was; zeros elsewhere."""
    out = torch.zeros(
        (*y.shape[:2], size[-2] * size[-1]), dtype=y.dtype, device=y.device
    )
    out.scatter_add_(2, switches.flatten(2), y.flatten(2))
    return out.view(*y.shape[:2], size[-2], size[-1])


class DeconvNet:
    """A deconvnet attached to a plain stack of layers (see the module notes).

    ``forward(x)`` runs the stack and records the switches and sizes; ``project(signal)`` maps a
    signal shaped like the stack's output back to the input."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        for layer in layers:
            if not (
                isinstance(layer, (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d))
                or _passes(layer)
            ):
                raise ValueError(
                    f"DeconvNet: {type(layer).__name__} is not a Conv2d / ReLU / MaxPool2d layer"
                )
        self.layers = list(layers)
        self.records: list[tuple[torch.Size, Tensor | None]] = []

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        self.records = []
        for layer in self.layers:
            switches = None
            if isinstance(layer, nn.MaxPool2d):
                out, switches = pool_with_switches(x, layer)
            elif isinstance(layer, nn.ReLU):
                out = F.relu(x)
            else:
                out = layer(x)
            self.records.append((x.shape, switches))
            x = out
        return x

    __call__ = forward

    @torch.no_grad()
    def project(self, signal: Tensor) -> Tensor:
        if len(self.records) != len(self.layers):
            raise RuntimeError("DeconvNet.project: call forward() first")
        y = signal
        for layer, (size, switches) in zip(
            reversed(self.layers), reversed(self.records)
        ):
            if isinstance(layer, nn.MaxPool2d):
                y = unpool(y, switches, layer, size)
            elif isinstance(layer, nn.ReLU):
                y = F.relu(y)
            elif isinstance(layer, nn.Conv2d):
                y = _transposed_conv(y, layer, size)
            elif isinstance(layer, nn.BatchNorm2d):
                scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
                y = y * scale.view(1, -1, 1, 1)
        return y


def _transposed_conv(y: Tensor, conv: nn.Conv2d, size: Sequence[int]) -> Tensor:
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        padding = _explicit_padding(conv)
    else:
        padding = conv.padding
    extra = []
    for a in range(2):
        k = conv.dilation[a] * (conv.kernel_size[a] - 1) + 1
        full = (y.shape[2 + a] - 1) * conv.stride[a] - 2 * padding[a] + k
        extra.append(size[2 + a] - full)
    return F.conv_transpose2d(
        y,
        conv.weight,
        stride=conv.stride,
        padding=padding,
        output_padding=tuple(extra),
        groups=conv.groups,
        dilation=conv.dilation,
    )


def _explicit_padding(conv: nn.Conv2d) -> tuple[int, int]:
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same" and all(
        conv.dilation[a] * (conv.kernel_size[a] - 1) % 2 == 0 for a in range(2)
    ):
        return tuple(
            conv.dilation[a] * (conv.kernel_size[a] - 1) // 2 for a in range(2)
        )
    raise ValueError(
        f"DeconvNet: cannot transpose a convolution with padding {conv.padding!r} / {conv.padding_mode}"
    )


def plain_stack(model: nn.Module, x: Tensor, layer: str) -> list[nn.Module] | None:
    """The modules ``model`` runs on ``x`` up to and including ``layer`` if they form a plain chain
    of :class:`DeconvNet` layers (each consumes the previous one's output, the first the image),
    else None."""
    target = model.get_submodule(layer)
    # (module, input, its version when the module starts, output, its version when it ends):
    # the versions catch in-place operations between modules (ResNet's ``out += identity``)
    calls: list[tuple[nn.Module, Any, int, Tensor, int]] = []
    started: list[tuple[Any, int]] = []
    handles = []

    def pre_hook(module: nn.Module, args) -> None:
        given = args[0] if args else None
        started.append((given, getattr(given, "_version", -1)))

    def hook(module: nn.Module, args, output) -> None:
        given, version = started.pop()
        calls.append((module, given, version, output, getattr(output, "_version", -1)))
        if module is target:
            raise StopForward

    for m in _units(model):
        handles.append(m.register_forward_pre_hook(pre_hook))
        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    if not calls or calls[-1][0] is not target:
        return None
    previous, previous_version = x, x._version
    for module, given, version, output, out_version in calls:
        if (
            given is not previous
            or version != previous_version
            or not (
                isinstance(module, (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d))
                or _passes(module)
            )
        ):
            return None
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)) and module.training:
            return None
        previous, previous_version = output, out_version
    return [call[0] for call in calls]
