"""Pictures: palettes, colour masks, overlays and training curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def save_figure(fig: Any, out_png: str | Path) -> None:
    """Lay out ``fig``, write it as a PNG (creating the folder) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


# Pascal VOC's colour map (bit-interleaved), also used for any data set without colours.
def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    def bit(v: int, i: int) -> int:
        return (v >> i) & 1

    colors = []
    for k in range(n):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= bit(c, 0) << (7 - j)
            g |= bit(c, 1) << (7 - j)
            b |= bit(c, 2) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors


def colorize(
    mask: np.ndarray, colors: Sequence[Sequence[int]], ignore_index: int = 255
) -> np.ndarray:
    """Index mask [H,W] -> RGB uint8 [H,W,3]; ignored pixels are white."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(colors)] = np.asarray(colors, dtype=np.uint8)[:256]
    lut[ignore_index] = 255
    return lut[np.asarray(mask, dtype=np.uint8)]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    colors: Sequence[Sequence[int]],
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend a colour mask over an RGB uint8 image; background (class 0) is left clear."""
    color = colorize(mask, colors).astype(np.float32)
    out = image.astype(np.float32)
    fg = (np.asarray(mask) != 0)[..., None]
    out = np.where(fg, (1 - alpha) * out + alpha * color, out)
    return out.clip(0, 255).astype(np.uint8)


def plot_curves(metrics_jsonl: str | Path, out_png: str | Path) -> None:
    """Plot every numeric per-epoch series of ``metrics.jsonl`` (one record per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [
        json.loads(line)
        for line in Path(metrics_jsonl).read_text().splitlines()
        if line.strip()
    ]
    if not records:
        return
    keys = [
        k
        for k, v in records[-1].items()
        if isinstance(v, (int, float)) and k != "epoch"
    ]
    losses = [k for k in keys if "loss" in k]
    others = [
        k for k in keys if k not in losses and k not in ("lr", "time", "images_per_s")
    ]
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(records)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k in losses:
        axes[0].plot(epochs, [r.get(k, np.nan) for r in records], label=k)
    axes[0].set_title("loss")
    for k in others:
        axes[1].plot(epochs, [r.get(k, np.nan) for r in records], label=k)
    axes[1].set_title("validation")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def save_grid(
    rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], out_png: str | Path
) -> None:
    """A table of RGB images, one column per title, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), len(titles)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.4 * n_cols, 2.4 * n_rows), squeeze=False
    )
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    save_figure(fig, out_png)


def plot_confusion_matrix(
    matrix: np.ndarray,
    classes: Sequence[str],
    out_png: str | Path,
    normalize: bool = True,
) -> None:
    """Confusion matrix (rows: true class, columns: predicted) as a PNG; with ``normalize`` the
    colours are row shares (recall) and each cell shows its count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mat = np.asarray(matrix, dtype=np.float64)
    n = len(classes)
    shown = mat / np.maximum(mat.sum(1, keepdims=True), 1) if normalize else mat
    side = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for t in range(n):
            for p in range(n):
                ax.text(
                    p,
                    t,
                    f"{int(mat[t, p])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white"
                    if shown[t, p] > 0.5 * (shown.max() or 1)
                    else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    save_figure(fig, out_png)


def save_captioned_grid(
    images: Sequence[np.ndarray],
    captions: Sequence[str],
    out_png: str | Path,
    cols: int = 6,
    title: str = "",
) -> None:
    """RGB (or grey) images with a caption each, ``cols`` per row, as a PNG (e.g. misclassified examples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = max(1, min(cols, n)) if n else 1
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False
    )
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < n:
            img = np.asarray(images[k])
            ax.imshow(
                img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest"
            )
            ax.set_title(captions[k], fontsize=7)
        else:
            ax.axis("off")
    if n == 0:
        axes[0][0].text(0.5, 0.5, "no examples", ha="center", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, out_png)


def save_heatmap(
    image: np.ndarray,
    prob_map: np.ndarray,
    box: Sequence[float],
    out_png: str | Path,
    *,
    stride: float,
    window: float,
    title: str = "",
) -> None:
    """A class-probability map over an image: cell (i, j) is drawn over the centre of its window
    (``j*stride .. +window``), the best window's ``box`` (x1, y1, x2, y2) as a rectangle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    h, w = image.shape[:2]
    mh, mw = prob_map.shape
    off = window / 2 - stride / 2  # the cells' centres, each cell stride wide
    extent = (off, off + mw * stride, off + mh * stride, off)
    fig, ax = plt.subplots(figsize=(6, 6 * h / max(w, 1) + 0.4))
    ax.imshow(image)
    im = ax.imshow(
        prob_map,
        cmap="jet",
        alpha=0.45,
        vmin=0,
        vmax=1,
        extent=extent,
        interpolation="bilinear",
    )
    x1, y1, x2, y2 = box
    ax.add_patch(
        Rectangle(
            (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=2
        )
    )
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, out_png)


def save_overfeat(
    image: np.ndarray,
    candidates: Sequence[dict],
    detections: Sequence[dict],
    *,
    class_map: np.ndarray,
    class_name: str,
    out_png: str | Path,
    scales: Sequence[float],
    max_drawn: int = 150,
) -> None:
    """OverFeat's three pictures side by side: the windows kept at every scale (thin, one colour
    per scale) with the boxes regressed from them (dashed); the merged detections; the class map
    (``class_map``, a grid over the whole image). Boxes are xyxy pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    h, w = image.shape[:2]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5 * h / max(w, 1) + 0.6))
    colors = plt.get_cmap("tab10")
    shown = sorted(candidates, key=lambda c: -c["probability"])[:max_drawn]
    for ax in axes:
        ax.imshow(image)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    for c in shown:
        color = colors(list(scales).index(c["scale"]) % 10)
        for key, style in (("window", "-"), ("box", "--")):
            x1, y1, x2, y2 = c[key]
            if key == "box" and c["box"] == c["window"]:
                continue
            axes[0].add_patch(
                Rectangle(
                    (x1, y1),
                    x2 - x1,
                    y2 - y1,
                    fill=False,
                    edgecolor=color,
                    linewidth=0.7,
                    linestyle=style,
                    alpha=0.6,
                )
            )
    for k, s in enumerate(scales):
        axes[0].plot([], [], color=colors(k % 10), label=f"scale {s:g}")
    if scales:
        axes[0].legend(fontsize=7, loc="lower right")
    more = (
        f" (the {max_drawn} most probable drawn)" if len(candidates) > max_drawn else ""
    )
    axes[0].set_title(
        f"{len(candidates)} windows, solid; regressed boxes, dashed{more}", fontsize=9
    )
    for k, d in enumerate(detections):
        x1, y1, x2, y2 = d["box"]
        axes[1].add_patch(
            Rectangle(
                (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="yellow", linewidth=2
            )
        )
        axes[1].text(
            x1,
            max(y1 - 2, 8),
            f"{d['class']} {d['score']:.1f} ({d['windows']} win.)",
            color="black",
            fontsize=7,
            bbox={"facecolor": "yellow", "alpha": 0.8, "pad": 1, "linewidth": 0},
        )
    axes[1].set_title(f"{len(detections)} merged detection(s)", fontsize=9)
    im = axes[2].imshow(
        class_map,
        cmap="jet",
        alpha=0.5,
        vmin=0,
        vmax=1,
        extent=(0, w, h, 0),
        interpolation="bilinear",
    )
    axes[2].set_title(f"p({class_name}), max over scales", fontsize=9)
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04)
    save_figure(fig, out_png)


def draw_box(
    image: np.ndarray,
    box: Sequence[float],
    caption: str = "",
    color: tuple[int, int, int] = (255, 40, 40),
    width: int = 0,
) -> np.ndarray:
    """``image`` (HxWx3 or HxW uint8) with the xyxy pixel ``box`` and a ``caption`` drawn
    (``torchvision.utils.draw_bounding_boxes``); returns a new HxWx3 uint8 array."""
    import torch
    from torchvision.utils import draw_bounding_boxes

    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    h, w = a.shape[:2]
    b = torch.tensor([list(box)], dtype=torch.float32)
    b[:, 0::2] = b[:, 0::2].clamp(0, w - 1)
    b[:, 1::2] = b[:, 1::2].clamp(0, h - 1)
    width = width or max(1, round(min(h, w) / 100))
    img = torch.from_numpy(np.ascontiguousarray(a[:, :, :3].transpose(2, 0, 1)))
    drawn = draw_bounding_boxes(
        img,
        b,
        labels=[caption] if caption else None,
        colors=[tuple(color)],
        width=width,
    )
    return drawn.permute(1, 2, 0).numpy().copy()
