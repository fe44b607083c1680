"""The receptive fields of the lecture notes' AlexNet (2012) and ZFNet, drawn on an input image.

Each square is the patch of the input one unit of a layer sees (its theoretical receptive field,
from ``convision.nn.summarize``, the numbers ``convision summary alexnet2012`` / ``zfnet`` print),
centred on the image; the legend gives the layer's parameters. The image is matplotlib's
``grace_hopper.jpg`` (an official U.S. Navy photograph, public domain)::

    python examples/receptive_fields.py --out docs/images/receptive_fields.png
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib import cbook
from PIL import Image
from torch import nn

from convision.models.classic import PAPER_NETS
from convision.nn import summarize


def rows(name: str) -> tuple[int, list[tuple[str, int, int]]]:
    """(input side, [(label, receptive field, parameters)]) for the conv and pooling layers."""
    builder, side = PAPER_NETS[name]
    model = builder()
    modules = dict(model.named_modules())
    out, conv = [], 0
    for layer in summarize(model, (3, side, side)):
        module = modules[layer.name]
        if isinstance(module, nn.Conv2d):
            conv += 1
            out.append((f"conv{conv}", int(layer.rf), layer.params))
        elif isinstance(module, nn.MaxPool2d):
            out.append(
                (f"pool{conv}", int(layer.rf), 0)
            )  # named after the conv before it
    return side, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/images/receptive_fields.png")
    args = ap.parse_args()
    torch.set_num_threads(1)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    photo = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    photo = photo.convert("RGB").crop((0, 40, 512, 552))
    titles = {
        "alexnet2012": "AlexNet (Krizhevsky et al. 2012), 227x227",
        "zfnet": "ZFNet (Zeiler & Fergus 2014), 224x224",
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), layout="constrained")
    colours = matplotlib.colormaps["viridis"]
    for ax, name in zip(axes, titles):
        side, layers = rows(name)
        ax.imshow(np.asarray(photo.resize((side, side), Image.BILINEAR)))
        c = (side - 1) / 2
        for k, (label, rf, params) in enumerate(layers):
            colour = colours(k / max(1, len(layers) - 1))
            text = f"{label}: {rf} px" + (f", {params:,} params" if params else "")
            ax.add_patch(
                plt.Rectangle(
                    (c - rf / 2, c - rf / 2),
                    rf,
                    rf,
                    fill=False,
                    lw=1.8,
                    ec=colour,
                    label=text,
                )
            )
        ax.set_xlim(-0.5, side - 0.5)
        ax.set_ylim(side - 0.5, -0.5)
        ax.set_title(titles[name], fontsize=10)
        ax.axis("off")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7.5)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90)
    figure = Image.open(buffer).convert("RGB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
