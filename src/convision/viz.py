"""Pictures: palettes, colour masks, overlays and training curves."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

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


def colorize(mask: np.ndarray, colors: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """Index mask [H,W] -> RGB uint8 [H,W,3]; ignored pixels are white."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(colors)] = np.asarray(colors, dtype=np.uint8)[:256]
    lut[ignore_index] = 255
    return lut[np.asarray(mask, dtype=np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, colors: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
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

    records = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    if not records:
        return
    keys = [k for k, v in records[-1].items() if isinstance(v, (int, float)) and k != "epoch"]
    losses = [k for k in keys if "loss" in k]
    others = [k for k in keys if k not in losses and k not in ("lr", "time", "images_per_s")]
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


def save_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], out_png: str | Path) -> None:
    """A table of RGB images, one column per title, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), len(titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.4 * n_cols, 2.4 * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
