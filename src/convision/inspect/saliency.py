"""Gradient saliency, guided backpropagation and the deconvnet as backward rules of the ReLU.

For one activation ``a`` of a hidden layer, the three pictures of an input image differ only in
how a signal ``g`` coming down crosses each ReLU with forward input ``x``:

- **gradient** (Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", 2014):
  ``g * [x > 0]``, the true derivative ``d a / d image``;
- **deconvnet** (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV
  2014): ``relu(g)``, the ReLU applied to the signal itself, ignoring where the forward pass was
  active;
- **guided backpropagation** (Springenberg et al., "Striving for Simplicity: The All
  Convolutional Net", ICLR 2015 workshop): ``relu(g) * [x > 0]``, both.

Everything else is the ordinary backward pass: through a max pooling it sends the signal to the
recorded argmax (Zeiler & Fergus's unpooling with switches), through a convolution it is the
transposed convolution with the same filters, through an eval-mode batch norm the same scaling.
So on a plain Conv-ReLU-MaxPool stack the deconvnet rule gives exactly the explicit
:class:`convision.inspect.deconvnet.DeconvNet` (tests check it), and it extends to any network:
residual sums, concatenations and depthwise convolutions just pass the signal on.

The rules replace ``nn.ReLU`` and ``nn.ReLU6`` modules in a copy of the network (for ReLU6 the
forward mask is ``0 < x < 6``); ReLUs called as functions (``F.relu``) keep the plain gradient.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["MODES", "with_relu_rule", "one_activation", "project_activation"]

MODES = ("gradient", "deconvnet", "guided")


class StopForward(Exception):
    """Raised by a forward hook to end the forward pass at the inspected layer."""


class _RuleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, upper: float | None, mode: str) -> Tensor:
        ctx.save_for_backward(x)
        ctx.upper, ctx.mode = upper, mode
        return x.clamp(0, upper) if upper is not None else x.clamp_min(0)

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        active = x > 0
        if ctx.upper is not None:
            active &= x < ctx.upper
        if ctx.mode == "deconvnet":
            g = g.clamp_min(0)
        elif ctx.mode == "guided":
            g = g.clamp_min(0) * active
        else:
            g = g * active
        return g, None, None


class RuleReLU(nn.Module):
    """``nn.ReLU`` (``upper=None``) or ``nn.ReLU6`` (``upper=6``) with the backward rule ``mode``."""

    def __init__(self, mode: str, upper: float | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.upper = mode, upper

    def forward(self, x: Tensor) -> Tensor:
        return _RuleReLU.apply(x, self.upper, self.mode)


def with_relu_rule(model: nn.Module, mode: str) -> nn.Module:
    """A copy of ``model`` (eval mode) whose ``nn.ReLU`` / ``nn.ReLU6`` modules use the backward
    rule ``mode`` (one of :data:`MODES`)."""
    net = copy.deepcopy(model).eval()
    for name, module in list(net.named_modules()):
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            upper = 6.0 if isinstance(module, nn.ReLU6) else None
            parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            setattr(parent, name.rpartition(".")[2], RuleReLU(mode, upper))
    return net


def layer_output(model: nn.Module, x: Tensor, layer: str) -> Tensor:
    """The output of module ``layer`` for input ``x`` (the forward pass stops there)."""
    captured: list[Tensor] = []

    def hook(module: nn.Module, args, output) -> None:
        captured.append(output)
        raise StopForward

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        model(x)
    except StopForward:
        pass
    finally:
        handle.remove()
    if not captured or not isinstance(captured[0], Tensor) or captured[0].dim() != 4:
        raise ValueError(f"layer {layer!r} gives no N x C x H x W map for this input")
    return captured[0]


def one_activation(
    act: Tensor, channel: int, position: tuple[int, int] | None = None
) -> Tensor:
    """Zeiler & Fergus's top signal: ``act`` (``1 x C x H x W``) zeroed except ``channel`` at
    ``position`` (default: that channel's maximum), which keeps its value."""
    signal = torch.zeros_like(act, requires_grad=False)
    if position is None:
        position = divmod(int(act[0, channel].argmax()), act.shape[-1])
    i, j = position
    signal[0, channel, i, j] = act[0, channel, i, j].detach()
    return signal


def project_activation(
    model: nn.Module,
    x: Tensor,
    layer: str,
    channel: int,
    position: tuple[int, int] | None = None,
    mode: str = "deconvnet",
) -> Tensor:
    """Project one activation of ``layer`` (``channel`` at ``position``, default its maximum)
    back to the input with the backward rule ``mode``: the signal is the activation's own value
    at that position and zero elsewhere (Zeiler & Fergus); returns ``1 x C x H x W``.

    ``model`` is the plain network; the rule is installed on a copy (see :func:`with_relu_rule`)."""
    net = with_relu_rule(model, mode) if mode != "gradient" else model.eval()
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        act = layer_output(net, x, layer)
        (grad,) = torch.autograd.grad(act, x, one_activation(act, channel, position))
    return grad.detach()
