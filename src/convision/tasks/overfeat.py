"""OverFeat detection with convision checkpoints: a VGG/AlexNet/MobileNetV2 classifier evaluated densely at
several scales, optionally a localizer's box regressor at every window, greedy merging.

    from convision.tasks.overfeat import overfeat
    r = overfeat("runs/classify/best.pt", "street.jpg", scales=[1.0, 1.4, 2.0],
                 localizer="runs/localize/best.pt", out_png="overfeat.png")
    r["detections"]   # [{"class", "score", "windows", "mean_probability", "box": [x1, y1, x2, y2]}]

The steps follow Sermanet et al., "OverFeat", ICLR 2014, Sec. 4.3 (see :mod:`convision.nn.overfeat`):

(a) at each scale, the classes ``C_s``: the ``top_classes`` classes with the highest probability
    anywhere in that scale's map (or the one ``class_name``), never the ``background`` class;
(b) their boxes ``B_s``: at every window whose probability for the class is at least ``min_prob``,
    the box the localizer regresses for that window (without a localizer: the window itself).
    ``regress="dense"`` (OverFeat) slides the localizer's box head over the whole image at each
    scale (:class:`~convision.nn.overfeat.BoxRegressorMap`): one pass, but with zero-padded
    backbones a window's features differ from those of its crop, most for small windows (a
    MobileNetV2 localizer at 64 px: mean IoU 0.54 between the dense box and the crop's on a
    192 x 256 scene); ``regress="crops"`` runs the localizer on each chosen window's crop, as it
    was trained, one pass per window;
(c) ``B``: the union over scales (at most ``max_boxes`` per class, the most probable);
(d)-(g) per class, :func:`~convision.nn.overfeat.merge_boxes` until the best match score exceeds
    ``merge_threshold``; a merged box's score is the sum of its windows' class probabilities.

Pairing windows and regressed boxes: the localizer has its own input size and stride, so its
windows need not coincide with the classifier's. Each classifier window takes the box regressed
for the localizer window whose centre is nearest to its own centre (the same window when both
were trained at the same input size on backbones of the same stride).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from convision.data.images import to_image
from convision.data.localization import check_box_format, from_xyxy
from convision.errors import ConfigError, DataError
from convision.nn.convolutionalize import convolutionalize
from convision.nn.overfeat import (
    BoxRegressorMap,
    cell_windows,
    dense_scores,
    merge_boxes,
    resize_by,
)
from convision.tasks import base

__all__ = ["overfeat", "parse_scales", "REGRESS"]

#: how the localizer's boxes are computed: its box head slid over the whole image (OverFeat), or
#: run on each chosen window's crop
REGRESS = ("dense", "crops")


def parse_scales(text: str | float | Sequence[float]) -> list[float]:
    """``"1.0,1.4,2"`` (or numbers) -> ``[1.0, 1.4, 2.0]``; each must be a positive number."""
    items = (
        str(text).split(",")
        if isinstance(text, (str, int, float))
        else [str(v) for v in text]
    )
    scales = []
    for item in items:
        try:
            v = float(item)
        except ValueError:
            raise ConfigError(
                f"scales: {item.strip()!r} is not a number (expected e.g. 1.0,1.4,2.0)"
            ) from None
        if not v > 0 or not np.isfinite(v):
            raise ConfigError(
                f"scales: every scale must be positive, got {item.strip()}"
            )
        scales.append(v)
    if not scales:
        raise ConfigError("scales: no scale given")
    return scales


def _normalised(array: np.ndarray, model: torch.nn.Module) -> torch.Tensor:
    mean = torch.tensor(model.normalization["mean"]).view(3, 1, 1)
    std = torch.tensor(model.normalization["std"]).view(3, 1, 1)
    img = to_image(array).as_subclass(torch.Tensor).float() / 255
    return (img - mean) / std


@torch.no_grad()
def overfeat(
    model: torch.nn.Module | str | os.PathLike,
    image: Any,
    *,
    scales: str | Sequence[float] = (1.0,),
    localizer: torch.nn.Module | str | os.PathLike | None = None,
    class_name: str | None = None,
    top_classes: int = 1,
    background: str | None = "background",
    min_prob: float = 0.5,
    merge_threshold: float = 1.0,
    max_boxes: int = 2000,
    max_detections: int = 5,
    box_format: str = "xyxy",
    regress: str = "dense",
    out_png: str | os.PathLike | None = None,
    device: str | None = "auto",
) -> dict[str, Any]:
    """OverFeat detection on one image (path or HxWx3 uint8 array); see the module notes.

    ``model``: a classification checkpoint (VGG/AlexNet/MobileNetV2, convolutionalized); ``localizer``: a
    localization checkpoint whose box head is slid over the image (optional). A class named
    ``background`` (if the classifier has one) is never among the classes kept. Returns
    ``{"detections": [{"class", "score", "windows", "mean_probability", "box"}] (best first, at most
    max_detections, ``box`` in ``box_format``, original pixels), "scales": [{"scale", "map", "windows"
    (candidates kept)}], "box_format", "candidates": [{"class", "scale", "window", "box", "probability"}] (xyxy)}``
    and writes ``out_png`` (windows and regressed boxes | merged boxes | class map) if given.
    """
    from convision.tasks import classify, localize  # the checkpoints' tasks

    scales = parse_scales(scales)
    check_box_format(box_format)
    if regress not in REGRESS:
        raise ConfigError(
            f"regress: unknown {regress!r} (expected {' | '.join(REGRESS)})"
        )
    for name, v, low in (
        ("min_prob", min_prob, 0.0),
        ("merge_threshold", merge_threshold, 0.0),
    ):
        if not v >= low:
            raise ConfigError(f"{name}: must be >= {low}, got {v}")
    if top_classes < 1 or max_boxes < 1 or max_detections < 1:
        raise ConfigError(
            "top_classes, max_boxes and max_detections must be at least 1"
        )
    dev = base.device_of(device)
    net = base.as_model(model, dev, classify.NAME)
    loc = None if localizer is None else base.as_model(localizer, dev, localize.NAME)
    name, array = base.read_inputs(image)[0]
    h, w = array.shape[:2]
    size = int(net.image_size)
    need = max(size, int(loc.image_size) if loc is not None else 0)
    for s in scales:
        hs, ws = max(1, round(h * s)), max(1, round(w * s))
        if min(hs, ws) < need:
            raise DataError(
                f"{name}: at scale {s:g} the {w}x{h} image is {ws}x{hs}, smaller than the {need}x{need} "
                "window; use larger scales"
            )
    try:
        conv = convolutionalize(net, input_size=size).eval()
        regressor = (
            BoxRegressorMap(loc, int(loc.image_size)).to(dev)
            if loc is not None and regress == "dense"
            else None
        )
    except ValueError as e:
        raise ConfigError(f"overfeat: {e}") from None
    if class_name is not None and class_name not in net.classes:
        raise ConfigError(
            f"class: {class_name!r} is not one of the model's classes ({', '.join(net.classes)})"
        )
    x = _normalised(array, net).to(dev)
    maps = dense_scores(conv, x, scales)
    x_loc = _normalised(array, loc).to(dev) if loc is not None else None
    candidates: dict[
        int, list[tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]]
    ] = {}
    per_scale = []
    for k, sc in enumerate(maps):
        probs = sc.probs.flatten(1)  # [K, h*w]
        if class_name is not None:
            classes = [net.classes.index(class_name)]
        else:
            best = probs.max(1).values
            if background in net.classes:
                best[net.classes.index(background)] = -1.0
            classes = best.topk(min(top_classes, len(net.classes))).indices.tolist()
            classes = [c for c in classes if net.classes[c] != background]
        chosen = {c: (probs[c] >= min_prob).nonzero().flatten() for c in classes}
        boxes = sc.windows
        factors = torch.tensor([sc.factor_x, sc.factor_y] * 2).double()
        if loc is not None and regress == "dense":
            reg, (rows, cols) = regressor(resize_by(x_loc, sc.scale)[None])
            reg_windows = cell_windows(
                rows, cols, regressor.stride, regressor.input_size, 1.0, 1.0
            )
            boxes = (reg / factors)[_nearest(sc.windows, reg_windows / factors)]
        elif (
            loc is not None
        ):  # "crops": the localizer on each chosen window, as trained
            cells = torch.cat([*chosen.values(), torch.zeros(0, dtype=torch.long)])
            cells = cells.unique()
            boxes = sc.windows.clone()
            if len(cells):
                scaled = sc.windows[cells] * factors
                boxes[cells] = (
                    _regress_crops(loc, resize_by(x_loc, sc.scale), scaled) / factors
                )
        kept = 0
        for c, sel in chosen.items():
            kept += len(sel)
            candidates.setdefault(c, []).append(
                (boxes[sel], probs[c, sel], k, sc.windows[sel])
            )
        per_scale.append(
            {"scale": sc.scale, "map": tuple(sc.probs.shape[1:]), "windows": kept}
        )
    detections, listed = [], []
    for c, parts in candidates.items():
        b = torch.cat([part[0] for part in parts])
        p = torch.cat([part[1] for part in parts]).double()
        sc_of = torch.cat([torch.full((len(part[1]),), part[2]) for part in parts])
        win = torch.cat([part[3] for part in parts])
        if len(p) > max_boxes:
            top = p.topk(max_boxes).indices
            b, p, win, sc_of = b[top], p[top], win[top], sc_of[top]
        for bi, pi, wi, si in zip(b, p, win, sc_of):
            listed.append(
                {
                    "class": net.classes[c],
                    "scale": scales[int(si)],
                    "window": [float(v) for v in wi],
                    "box": [float(v) for v in bi],
                    "probability": float(pi),
                }
            )
        merged, score, count = merge_boxes(b, p, merge_threshold)
        merged[:, 0::2] = merged[:, 0::2].clamp(0, w)
        merged[:, 1::2] = merged[:, 1::2].clamp(0, h)
        for mb, ms, mc in zip(merged, score, count):
            detections.append(
                {
                    "class": net.classes[c],
                    "score": float(ms),
                    "windows": int(mc),
                    "mean_probability": float(ms) / int(mc),
                    "box_xyxy": mb,
                }
            )
    detections.sort(key=lambda d: -d["score"])
    detections = detections[:max_detections]
    drawn = [dict(d, box=d["box_xyxy"].tolist()) for d in detections]
    for d in detections:
        d["box"] = [float(v) for v in from_xyxy(d.pop("box_xyxy"), box_format)[0]]
    # the class map shows the asked class, else the best detection's, else the most probable one
    if class_name is not None:
        shown = net.classes.index(class_name)
    elif detections:
        shown = net.classes.index(detections[0]["class"])
    else:
        best = torch.stack([m.probs.flatten(1).max(1).values for m in maps])
        shown = int(best.max(0).values.argmax())
    result = {
        "image": name,
        "detections": detections,
        "box_format": box_format,
        "scales": per_scale,
        "candidates": listed,
        "class_map": net.classes[shown],
        "localizer": loc is not None,
    }
    if out_png is not None:
        from convision.viz import save_overfeat

        save_overfeat(
            array,
            listed,
            drawn,
            class_map=_class_map(maps, shown, conv.stride, size, h, w),
            class_name=net.classes[shown],
            out_png=out_png,
            scales=scales,
        )
    return result


@torch.no_grad()
def _regress_crops(
    loc: torch.nn.Module, image: torch.Tensor, windows: torch.Tensor
) -> torch.Tensor:
    """The localizer on the crops ``windows`` (xyxy in ``image``'s pixels) of ``image [3,H,W]``, each
    resized to its input size as in training; boxes xyxy in ``image``'s pixels."""
    side = int(loc.image_size)
    crops = []
    for x1, y1, x2, y2 in windows.round().long().tolist():
        crop = image[:, y1:y2, x1:x2][None]
        crops.append(
            F.interpolate(crop, size=(side, side), mode="bilinear", antialias=True)[0]
        )
    out = []
    for start in range(0, len(crops), 64):
        batch = torch.stack(crops[start : start + 64])
        out.append(loc(batch)["boxes"].double().cpu())
    norm = torch.cat(out)
    size = (windows[:, 2:] - windows[:, :2]).repeat(1, 2)
    return windows[:, :2].repeat(1, 2) + norm * size


def _nearest(windows: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """For each window, the index of the window in ``others`` with the nearest centre."""
    c1 = (windows[:, :2] + windows[:, 2:]) / 2
    c2 = (others[:, :2] + others[:, 2:]) / 2
    return torch.cdist(c1, c2).argmin(1)


def _class_map(
    maps: list, c: int, stride: int, size: int, h: int, w: int
) -> np.ndarray:
    """Class ``c``'s probability on a grid over the image (at most 256 px a side): at each point the
    maximum over scales of the cell whose window centre is nearest."""
    step = max(1.0, max(h, w) / 256)
    ys = torch.arange(0, h, step).double() + step / 2
    xs = torch.arange(0, w, step).double() + step / 2
    out = torch.zeros(len(ys), len(xs))
    for sc in maps:
        pm = sc.probs[c]
        rows, cols = pm.shape
        i = ((ys * sc.factor_y - size / 2) / stride).round().long().clamp(0, rows - 1)
        j = ((xs * sc.factor_x - size / 2) / stride).round().long().clamp(0, cols - 1)
        out = torch.maximum(out, pm[i][:, j])
    return out.numpy()
