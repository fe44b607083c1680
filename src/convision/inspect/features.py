"""Feature maps of chosen layers and the first layer's filters (the pictures of Zeiler & Fergus
2014, figure 2, and of Krizhevsky et al. 2012, figure 3)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from convision.inspect.network import conv_layers
from convision.inspect.saliency import StopForward

__all__ = ["feature_maps", "top_channels", "spread_layers", "first_filters"]


@torch.no_grad()
def feature_maps(
    model: nn.Module, x: Tensor, layers: Sequence[str]
) -> dict[str, Tensor]:
    """``{layer: 1 x C x H x W output}`` of the named modules for input ``x`` (the forward pass
    stops after the last of them runs)."""
    wanted = set(layers)
    maps: dict[str, Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, args, output) -> None:
            if isinstance(output, Tensor) and output.dim() == 4:
                maps.setdefault(name, output.detach().clone())
            if wanted <= maps.keys():
                raise StopForward

        return hook

    for name in wanted:
        handles.append(model.get_submodule(name).register_forward_hook(make_hook(name)))
    try:
        model.eval()(x)
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return {name: maps[name] for name in layers if name in maps}


def top_channels(act: Tensor, k: int) -> list[int]:
    """The ``k`` channels of a ``1 x C x H x W`` map with the largest mean positive activation."""
    score = act[0].clamp_min(0).flatten(1).mean(1)
    return score.argsort(descending=True)[:k].tolist()


def spread_layers(model: nn.Module, count: int, also: str | None = None) -> list[str]:
    """``count`` convolutions spread evenly over the network, always the first and the last
    (and ``also``), in execution-definition order."""
    names = [n for n, _ in conv_layers(model)]
    if len(names) > count:
        step = (len(names) - 1) / max(count - 1, 1)
        names = [names[round(i * step)] for i in range(count)]
    if also is not None and also not in names:
        names.append(also)
    return names


def first_filters(model: nn.Module) -> tuple[str, Tensor]:
    """The first convolution's name and weights ``C_out x C_in x k x k``."""
    name, conv = conv_layers(model)[0]
    return name, conv.weight.detach().clone()
