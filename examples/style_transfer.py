"""Neural style transfer on real images that ship with matplotlib, with the offline ImageNet MobileNetV2.

Content: ``grace_hopper.jpg`` (matplotlib's sample data; an official U.S. Navy photograph, public
domain). Style: the relief of the Jacksboro fault (matplotlib's ``jacksboro_fault_dem.npz``, a U.S.
Geological Survey elevation model, public domain) rendered with hill shading in the ``plasma``
colours. The script writes both inputs to ``--workdir``, runs ``convision.style_transfer`` with
Gram matrices and with mean/std moments (the command line equivalent is printed), and saves the
figure content | style | Gram result | moments result::

    python examples/style_transfer.py --out docs/images/style_transfer.png

About 5 minutes on one CPU thread (two runs of 200 L-BFGS steps at 384 pixels).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib import cbook
from matplotlib.colors import LightSource
from PIL import Image

import convision


def style_image(path: Path) -> None:
    dem = cbook.get_sample_data("jacksboro_fault_dem.npz")
    shade = LightSource(azdeg=315, altdeg=45).shade(
        dem["elevation"],
        cmap=matplotlib.colormaps["plasma"],
        blend_mode="soft",
        vert_exag=0.1,
        dx=dem["dx"],
        dy=dem["dy"],
    )
    Image.fromarray((shade[..., :3] * 255).round().astype(np.uint8)).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/images/style_transfer.png")
    ap.add_argument("--workdir", default="/tmp/convision-style")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    content = work / "grace_hopper.jpg"
    content.write_bytes(
        Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    )
    style = work / "jacksboro_relief.png"
    style_image(style)
    results = {}
    for kind in ("gram", "moments"):
        out = work / f"result_{kind}.png"
        print(
            f"convision style {content} {style} --out {out} --style-loss {kind} "
            f"--size {args.size} --steps {args.steps}"
        )
        start = time.perf_counter()
        r = convision.style_transfer(
            content,
            style,
            out=out,
            style_loss_kind=kind,
            size=args.size,
            steps=args.steps,
        )
        s0, s1 = r["style_loss"]
        print(
            f"  {time.perf_counter() - start:.0f} s; style loss {s0:.4g} -> {s1:.4g}, "
            f"content loss {r['content_loss'][1]:.4g}"
        )
        results[kind] = r["image"]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (np.asarray(Image.open(content).convert("RGB")), "content"),
        (np.asarray(Image.open(style).convert("RGB")), "style"),
        (results["gram"], "result: Gram matrices"),
        (results["moments"], "result: mean + std per channel"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 4.1), layout="constrained")
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90)
    # a 256-colour palette keeps the PNG small enough for the repository (~250 KB, not ~850 KB)
    figure = Image.open(buffer).convert("RGB")
    figure.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
