"""Neural style transfer ("Neural Art" in the lecture notes): ``convision.style_transfer``.

Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016:
starting from the content image (or white noise), optimise the pixels of a new image so that its
feature maps in a fixed network (:mod:`convision.models.style`) match the content image's at the
content layers and its feature *statistics* match the style image's at the style layers
(:mod:`convision.nn.style_loss`: Gram matrices, or per-channel mean and standard deviation)::

    loss = content_weight * L_content + style_weight * L_style + tv_weight * TV(x)

The image is RGB in ``[0, 1]``. Optimisers: L-BFGS (the paper's; one ``step`` is one L-BFGS
iteration with a strong-Wolfe line search, so it may evaluate the network a few times) or Adam.
Adam's image is clamped to ``[0, 1]`` after every step; L-BFGS's is not (moving the point between
iterations breaks its curvature pairs: it stalled within a few steps when we clamped), only the
saved images are. ``preserve_color`` keeps the content's colours: the
result's luminance with the content image's chrominance (the "luminance-only" option of Gatys,
Bethge, Hertzmann & Shechtman, "Preserving Color in Neural Artistic Style Transfer", 2016; here
applied to the finished image, in YCbCr).

    import convision
    out = convision.style_transfer("photo.jpg", "painting.jpg", out="result.png", steps=200)
    out["image"]     # H x W x 3 uint8
    out["history"]   # per step: loss, content, style, tv
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from convision.data.io import read_image
from convision.errors import ConfigError, DataError
from convision.models.style import DEFAULT_LAYERS, NETWORKS, build_style_features
from convision.nn.style_loss import (
    STYLE_LOSSES,
    content_loss,
    style_loss,
    style_targets,
    total_variation,
)
from convision.tasks.base import device_of

__all__ = ["transfer", "OPTIMIZERS", "INITS", "DEFAULT_STYLE_WEIGHT"]

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
#: style weight per style loss (content weight 1): the two statistics differ in scale
DEFAULT_STYLE_WEIGHT = {"gram": 1e4, "moments": 1e2}

ImageInput = str | os.PathLike | np.ndarray


def transfer(
    content: ImageInput,
    style: ImageInput,
    *,
    out: str | os.PathLike | None = None,
    network: str = "mobilenet_v2",
    weights: str | os.PathLike | None = "IMAGENET1K_V1",
    style_loss_kind: str = "gram",
    content_layers: Sequence[str] | None = None,
    style_layers: Sequence[str] | None = None,
    style_layer_weights: Sequence[float] | None = None,
    content_weight: float = 1.0,
    style_weight: float | None = None,
    tv_weight: float = 1e-2,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    size: int = 384,
    style_size: int | None = None,
    steps: int = 200,
    init: str = "content",
    preserve_color: bool = False,
    save_every: int = 0,
    seed: int = 0,
    pool: str = "avg",
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Render ``content`` in the style of ``style`` (paths or ``H x W x 3`` uint8 arrays).

    ``size``/``style_size``: longer side of the content / style image in pixels (style: the content's
    by default). ``style_loss_kind``: ``"gram"`` or ``"moments"``. Layers default to the network's
    (:data:`convision.models.style.DEFAULT_LAYERS`); ``style_layer_weights`` one per style layer
    (default ``1/L`` each). ``style_weight`` defaults to :data:`DEFAULT_STYLE_WEIGHT` of the loss.
    ``lr``: Adam's step (default 0.02) or L-BFGS's (default 1). ``save_every`` N > 0 writes the image
    every N steps next to ``out`` (``<stem>.step0050.png``). ``seed`` fixes the noise start and a
    randomly initialised network. Returns ``{"image", "history", "out", "intermediate",
    "content_loss", "style_loss"}`` (the last two: before and after, ``[first, last]``).
    """
    _check(style_loss_kind, STYLE_LOSSES, "style_loss")
    _check(optimizer, OPTIMIZERS, "optimizer")
    _check(init, INITS, "init")
    _check(network, NETWORKS, "network")
    for name, value, least in (("size", size, 16), ("steps", steps, 1)):
        if int(value) < least:
            raise ConfigError(f"{name}: must be >= {least}, got {value}")
    if style_size is not None and style_size < 16:
        raise ConfigError(f"style_size: must be >= 16, got {style_size}")
    if save_every < 0:
        raise ConfigError(f"save_every: must be >= 0, got {save_every}")
    if save_every and out is None:
        raise ConfigError(
            "save_every: intermediate images are written next to out; give out"
        )
    for name, value in (
        ("content_weight", content_weight),
        ("style_weight", style_weight),
        ("tv_weight", tv_weight),
    ):
        if value is not None and (not np.isfinite(value) or value < 0):
            raise ConfigError(f"{name}: must be a finite number >= 0, got {value}")
    content_layers = list(content_layers or DEFAULT_LAYERS[network]["content"])
    style_layers = list(style_layers or DEFAULT_LAYERS[network]["style"])
    layer_w = _layer_weights(style_layers, style_layer_weights)
    style_weight = (
        DEFAULT_STYLE_WEIGHT[style_loss_kind] if style_weight is None else style_weight
    )
    out_path = _out_path(out)

    dev = device_of(device)
    content_img = _load(content, "content", size).to(dev)
    style_img = _load(style, "style", style_size or size).to(dev)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # a randomly initialised network is the same for a seed
        net = build_style_features(
            network, weights, content_layers + style_layers, pool=pool
        ).to(dev)
        generator = torch.Generator().manual_seed(seed)
        start = (
            content_img.clone()
            if init == "content"
            else torch.rand(content_img.shape, generator=generator).to(dev)
        )

    with torch.no_grad():
        c_feats = net(content_img)
        s_feats = net(style_img)
    c_targets = {k: c_feats[k].detach() for k in content_layers}
    s_targets = style_targets({k: s_feats[k] for k in style_layers}, style_loss_kind)

    def losses(x: Tensor) -> dict[str, Tensor]:
        feats = net(x)
        c = content_loss(feats, c_targets)
        s = style_loss(feats, s_targets, style_loss_kind, layer_w)
        tv = total_variation(x)
        total = content_weight * c + style_weight * s + tv_weight * tv
        return {"loss": total, "content": c, "style": s, "tv": tv}

    x = start.requires_grad_(True)
    opt = _optimizer(optimizer, x, lr)
    history: list[dict[str, float]] = []
    intermediate: list[str] = []
    with torch.no_grad():
        first = {k: float(v) for k, v in losses(x).items()}
    bar = tqdm(
        range(1, steps + 1),
        desc="style",
        disable=not progress,
        unit="step",
        leave=False,
    )
    for step in bar:
        last: dict[str, Tensor] = {}

        def closure() -> Tensor:
            opt.zero_grad()
            values = losses(x)
            values["loss"].backward()
            last.update(values)
            return values["loss"]

        opt.step(closure)
        if optimizer == "adam":
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        record = {"step": step, **{k: float(v.detach()) for k, v in last.items()}}
        if not np.isfinite(record["loss"]):
            raise ConfigError(
                f"the loss became {record['loss']} at step {step}; lower the learning rate or the weights"
            )
        history.append(record)
        bar.set_postfix(
            loss=f"{record['loss']:.3g}", style=f"{record['style']:.3g}", refresh=False
        )
        if save_every and step % save_every == 0 and step < steps:
            path = out_path.with_name(f"{out_path.stem}.step{step:04d}.png")
            _save(_finish(x, content_img, preserve_color), path)
            intermediate.append(str(path))
    bar.close()
    with torch.no_grad():
        final = {k: float(v) for k, v in losses(x).items()}
    image = _finish(x, content_img, preserve_color)
    if out_path is not None:
        _save(image, out_path)
    return {
        "image": image,
        "history": history,
        "out": None if out_path is None else str(out_path),
        "intermediate": intermediate,
        "content_loss": [first["content"], final["content"]],
        "style_loss": [first["style"], final["style"]],
        "loss": [first["loss"], final["loss"]],
    }


def _check(value: str, allowed: Sequence[str], name: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: expected {' | '.join(allowed)}, got {value!r}")


def _layer_weights(
    layers: Sequence[str], weights: Sequence[float] | None
) -> dict[str, float] | None:
    if weights is None:
        return None
    weights = [float(w) for w in weights]
    if len(weights) != len(layers):
        raise ConfigError(
            f"style_layer_weights: {len(weights)} weight(s) for {len(layers)} style layer(s) ({', '.join(layers)})"
        )
    if any(not np.isfinite(w) or w < 0 for w in weights):
        raise ConfigError(
            f"style_layer_weights: must be finite and >= 0, got {weights}"
        )
    return dict(zip(layers, weights))


def _out_path(out: str | os.PathLike | None) -> Path | None:
    if out is None:
        return None
    path = Path(out)
    if path.is_dir():
        raise ConfigError(
            f"out: {path} is a folder; give a file name such as result.png"
        )
    if path.suffix.lower() not in (
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
        ".tif",
        ".tiff",
        ".webp",
    ):
        raise ConfigError(f"out: {path}: give an image file name (.png, .jpg, ...)")
    return path


def _load(image: ImageInput, what: str, side: int) -> Tensor:
    """``[1, 3, h, w]`` float in [0, 1], the longer side resized to ``side`` (antialiased)."""
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise DataError(
                f"{what}: expected an H x W x 3 uint8 array, got {array.dtype} {array.shape}"
            )
    elif isinstance(image, (str, os.PathLike)):
        if not Path(image).is_file():
            raise DataError(f"{image}: {what} image not found")
        array = read_image(image)
    else:
        raise ConfigError(
            f"{what}: expected an image path or an H x W x 3 uint8 array, got {type(image).__name__}"
        )
    x = (
        torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1)[None].float()
        / 255
    )
    h, w = x.shape[-2:]
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size != (h, w):
        x = F.interpolate(
            x, size=size, mode="bilinear", antialias=True, align_corners=False
        )
    return x.clamp(0, 1).contiguous()


def _optimizer(name: str, x: Tensor, lr: float | None) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam([x], lr=0.02 if lr is None else lr)
    return torch.optim.LBFGS(
        [x],
        lr=1.0 if lr is None else lr,
        max_iter=1,
        history_size=50,
        line_search_fn=None,
    )


# ITU-R BT.601 (JPEG's YCbCr), RGB in [0, 1]
_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)


def _luminance_transfer(result: Tensor, content: Tensor) -> Tensor:
    """The result's Y with the content's Cb, Cr (Gatys et al. 2016, "Preserving Color ...")."""
    to = _TO_YCBCR.to(result)
    y = torch.einsum("ij,njhw->nihw", to, result)
    c = torch.einsum("ij,njhw->nihw", to, content)
    ycc = torch.cat([y[:, :1], c[:, 1:]], dim=1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(to), ycc).clamp(0, 1)


def _finish(x: Tensor, content: Tensor, preserve_color: bool) -> np.ndarray:
    with torch.no_grad():
        img = _luminance_transfer(x, content) if preserve_color else x.clamp(0, 1)
        return (img[0].permute(1, 2, 0) * 255).round().byte().cpu().numpy()


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        Image.fromarray(image).save(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot write the image ({e})") from None
