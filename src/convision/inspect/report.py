"""``convision inspect``: every picture of a network for one image, written as titled PNGs.

:func:`inspect_model` writes into ``out``:

- ``filters_<layer>.png``: the first convolution's filters (each scaled to its own range);
- ``maps/<k>_<layer>.png``: for convolutions spread over the network (and the chosen layer), the
  ``top_k`` channels with the largest mean activation, each map on its own colour scale;
- ``projection_<layer>.png``: for the chosen layer's strongest channels, the strongest activation
  projected back to pixels by the deconvnet (Zeiler & Fergus 2014), next to guided
  backpropagation and the plain gradient (:mod:`convision.inspect.saliency`);
- ``patches_<layer>_ch<c>.png`` (with ``patches``): the 9 image patches of a folder that excite
  channel ``c`` most (:mod:`convision.inspect.patches`);
- ``inspect.json``: the layer, channels, files and the projection method.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import Tensor

from convision.data.io import read_image
from convision.errors import ConfigError
from convision.inspect.deconvnet import DeconvNet, plain_stack
from convision.inspect.features import (
    feature_maps,
    first_filters,
    spread_layers,
    top_channels,
)
from convision.inspect.network import Network, load_network, preprocess, resolve_layer
from convision.inspect.patches import Patch, top_patches
from convision.inspect.saliency import (
    layer_output,
    one_activation,
    project_activation,
)
from convision.tasks.base import output_folder

__all__ = ["inspect_model", "deconv_projection"]


def deconv_projection(
    net: Network, x: Tensor, layer: str, channel: int
) -> tuple[Tensor, str]:
    """The deconvnet projection of ``channel``'s strongest activation in ``layer`` and how it was
    made: ``"deconvnet"`` (the explicit unpool / ReLU / transposed-filter network, for a plain
    stack) or ``"deconvnet rule"`` (the backward pass with the deconvnet's ReLU rule)."""
    stack = plain_stack(net.module, x, layer)
    if stack is None:
        return project_activation(net.module, x, layer, channel, mode="deconvnet"), (
            "deconvnet rule"
        )
    deconv = DeconvNet(stack)
    return deconv.project(one_activation(deconv(x), channel)), "deconvnet"


def inspect_model(
    model: str,
    image: str | os.PathLike | np.ndarray,
    out: str | os.PathLike,
    *,
    layer: str | None = None,
    channel: int | None = None,
    top_k: int = 16,
    max_layers: int = 8,
    projections: int = 4,
    patches: str | os.PathLike | None = None,
    weights: str | None = None,
    backbone: str | None = None,
    num_classes: int | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """Write the pictures listed in the module notes for ``model`` (a torchvision or convision
    model name, or a checkpoint; see :func:`convision.inspect.network.load_network`) and
    ``image`` (a path or an RGB uint8 array) into ``out``; returns what ``inspect.json`` holds."""
    array = image if isinstance(image, np.ndarray) else read_image(image)
    net = load_network(
        model, weights=weights, backbone=backbone, num_classes=num_classes, size=size
    )
    layer = resolve_layer(net.module, layer)
    root = output_folder(out, "--out")
    shown, x = preprocess(array, net)
    try:
        act = layer_output(net.module, x, layer)
    except ValueError as e:
        raise ConfigError(f"--layer: {e}") from None
    if channel is not None and not 0 <= channel < act.shape[1]:
        raise ConfigError(
            f"--channel: {layer} has channels 0..{act.shape[1] - 1}, got {channel}"
        )
    strongest = top_channels(act, max(projections, 1))
    chosen = strongest[0] if channel is None else channel
    files: list[str] = []

    name, weight = first_filters(net.module)
    path = root / f"filters_{_safe(name)}.png"
    _save_filters(
        weight, f"{model}: first-layer filters ({name}, {tuple(weight.shape)})", path
    )
    files.append(path.name)

    (root / "maps").mkdir(exist_ok=True)
    layers = spread_layers(net.module, max_layers, also=layer)
    for k, (lname, fmap) in enumerate(feature_maps(net.module, x, layers).items()):
        path = root / "maps" / f"{k:02d}_{_safe(lname)}.png"
        chans = top_channels(fmap, top_k)
        _save_maps(
            shown,
            fmap[0, chans],
            chans,
            f"{model}: {lname}, {fmap.shape[1]} channels of {fmap.shape[2]}x{fmap.shape[3]}; "
            f"the {len(chans)} most active",
            path,
        )
        files.append(f"maps/{path.name}")

    rows, method = [], ""
    for c in [chosen] + [c for c in strongest if c != chosen][: projections - 1]:
        deconv, method = deconv_projection(net, x, layer, c)
        guided = project_activation(net.module, x, layer, c, mode="guided")
        grad = project_activation(net.module, x, layer, c, mode="gradient")
        rows.append((c, deconv, guided, grad))
    path = root / f"projection_{_safe(layer)}.png"
    _save_projections(shown, rows, method, f"{model}: {layer}", path)
    files.append(path.name)

    found: list[Patch] = []
    if patches is not None:
        found = top_patches(net, layer, chosen, patches)
        path = root / f"patches_{_safe(layer)}_ch{chosen}.png"
        _save_patches(
            found, f"{model}: {layer} channel {chosen}: top {len(found)} patches", path
        )
        files.append(path.name)

    report = {
        "model": model,
        "input_size": net.size,
        "layer": layer,
        "channel": chosen,
        "strongest_channels": strongest,
        "projection": method,
        "maps": layers,
        "patches": [
            {"path": p.path, "activation": p.activation, "box": list(p.box)}
            for p in found
        ],
        "files": files,
    }
    (root / "inspect.json").write_text(json.dumps(report, indent=2))
    return report


def _safe(name: str) -> str:
    return name.replace(".", "_").replace("/", "_") or "model"


def _figure(rows: int, cols: int, cell: float = 1.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        rows, cols, figsize=(max(cols * cell, 5.0), rows * cell + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    return plt, fig, axes


def _grid(n: int) -> tuple[int, int]:
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def _save_filters(weight: Tensor, title: str, path: Path) -> None:
    """One mosaic (a single image: fast for hundreds of filters), each filter on its own range."""
    w = (
        weight
        if weight.shape[1] == 3
        else weight.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    )
    lo = w.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = w.flatten(1).max(1).values.view(-1, 1, 1, 1)
    w = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()
    n, kh, kw = w.shape[:3]
    rows, cols = _grid(n)
    mosaic = np.ones((rows * (kh + 1) + 1, cols * (kw + 1) + 1, 3))
    for k in range(n):
        r, c = divmod(k, cols)
        mosaic[
            1 + r * (kh + 1) : (r + 1) * (kh + 1), 1 + c * (kw + 1) : (c + 1) * (kw + 1)
        ] = w[k]
    plt, fig, axes = _figure(1, 1, 6.0)
    axes[0, 0].imshow(mosaic, interpolation="nearest")
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _save_maps(
    shown: np.ndarray, maps: Tensor, chans: Sequence[int], title: str, path: Path
) -> None:
    rows, cols = _grid(len(chans) + 1)
    plt, fig, axes = _figure(rows, cols)
    axes.flat[0].imshow(shown)
    axes.flat[0].set_title("input", fontsize=7)
    for ax, c, m in zip(axes.flat[1:], chans, maps):
        ax.imshow(m.numpy(), cmap="viridis")
        ax.set_title(f"ch {c} (max {float(m.max()):.2g})", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _scale(values: np.ndarray) -> float:
    """The 99.5th percentile of the non-zero magnitudes: a few extreme pixels do not grey out the rest."""
    mags = np.abs(values[values != 0])
    return max(float(np.percentile(mags, 99.5)) if mags.size else 0.0, 1e-12)


def _as_picture(grad: Tensor) -> np.ndarray:
    """A signed RGB projection as a picture: 0 is mid-grey (:func:`_scale` for the contrast)."""
    g = grad[0].permute(1, 2, 0).numpy()
    return np.clip(0.5 + g / (2 * _scale(g)), 0, 1)


def _saliency(grad: Tensor) -> np.ndarray:
    """Simonyan et al.'s map: the largest magnitude over the colour channels."""
    g = grad[0].abs().amax(0).numpy()
    return np.clip(g / _scale(g), 0, 1)


def _support(grads: Sequence[Tensor], side: int) -> tuple[int, int, int, int]:
    """``top, left, bottom, right`` around the pixels the projections reach (magnitude above
    0.1 % of the largest), at least ``side / 8`` wide, with a 4-pixel margin."""
    mag = sum(g[0].abs().amax(0) for g in grads)
    hit = mag > 1e-3 * float(mag.max()) if float(mag.max()) > 0 else mag >= 0
    rows, cols = hit.any(1).nonzero().flatten(), hit.any(0).nonzero().flatten()
    h, w = mag.shape
    box = []
    for idx, n in ((rows, h), (cols, w)):
        lo, hi = int(idx[0]) - 4, int(idx[-1]) + 5
        grow = max(0, side // 8 - (hi - lo))
        lo, hi = lo - grow // 2, hi + grow - grow // 2
        box.append((max(lo, 0), min(hi, n)))
    return box[0][0], box[1][0], box[0][1], box[1][1]


def _save_projections(
    shown: np.ndarray, rows: list, method: str, title: str, path: Path
) -> None:
    from matplotlib.patches import Rectangle

    plt, fig, axes = _figure(len(rows), 5, 2.2)
    heads = [
        "input",
        "input, cropped",
        "deconvnet" if method == "deconvnet" else "deconvnet (ReLU rule)",
        "guided backprop",
        "gradient",
    ]
    for r, (c, deconv, guided, grad) in enumerate(rows):
        t, left, b, right = _support((deconv, guided, grad), shown.shape[0])
        crop = (slice(t, b), slice(left, right))
        axes[r, 0].imshow(shown)
        axes[r, 0].add_patch(
            Rectangle(
                (left - 0.5, t - 0.5), right - left, b - t, fill=False, color="red"
            )
        )
        axes[r, 1].imshow(shown[crop])
        axes[r, 2].imshow(_as_picture(deconv)[crop])
        axes[r, 3].imshow(_as_picture(guided)[crop])
        axes[r, 4].imshow(_saliency(grad)[crop], cmap="gray")
        for k in range(5):
            axes[r, k].set_title(f"{heads[k]}, ch {c}", fontsize=7)
    fig.suptitle(
        f"{title}: each channel's strongest activation projected to pixels", fontsize=9
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _save_patches(found: list[Patch], title: str, path: Path) -> None:
    rows, cols = _grid(max(len(found), 1))
    plt, fig, axes = _figure(rows, cols)
    for ax, p in zip(axes.flat, found):
        ax.imshow(p.crop)
        ax.set_title(f"{Path(p.path).name[:18]} {p.activation:.3g}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
