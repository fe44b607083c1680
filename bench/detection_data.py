"""Real, human-annotated detection data sets for the benchmarks, converted to Pascal VOC folders.

Each set is built from a source obtainable on this machine into ``<root>/<name>/`` (default root
``/root/.cache/convision-bench``) with ``JPEGImages/``, ``Annotations/*.xml`` and
``ImageSets/Main/{train,val,test}.txt`` plus VOC's per-class lists ``<class>_<split>.txt``, written by
:func:`convision.data.detection_formats.write_voc` (so the class list is the same for every split).
Nothing here is committed; the sources are:

``trees`` (1 class, many small objects)
    NEON tree crowns shipped in the ``deepforest`` wheel (MIT; Weinstein et al., "Individual tree-crown
    detection in RGB imagery using semi-supervised deep learning neural networks", Remote Sensing 2019)::

        pip download --no-deps deepforest==2.1.0 -d /root/.cache/convision-bench/pkgs
        cd /root/.cache/convision-bench/pkgs && unzip -q -o deepforest-2.1.0-py3-none-any.whl 'deepforest/data/*' -d deepforest

    The two Yellowstone crops (``2019_YELL_2_*``) are cut into non-overlapping 400x400 tiles (the
    remainder at the right / bottom edge is dropped); boxes are clipped to the tile and dropped when
    they keep less than half their area. train / val: a seeded split of those tiles (1/6 val).
    test: the held-out sites OSBS_029 and SOAP_061 (400x400 each).
``chess`` (12 classes, ordinary photographs)
    Roboflow "Chess Pieces" v23 raw (public domain, CC0 1.0; 289 photos of a board, 2048x1371),
    COCO JSON, from the GitHub repository ``jsansao/ChessPiecesv23`` (the search tool's
    ``fetch github:jsansao/ChessPiecesv23``; commit 246442c). Images are scaled to ``max_side``
    (default 1024). Splits: Roboflow's own train / valid / test. One box labelled with the bare
    super-category ``bishop`` (no colour) is dropped.
``facemask`` (3 classes, small faces, many per image)
    "Face Mask Detection" (853 images, Pascal VOC XML; Kaggle ``andrewmvd/face-mask-detection``,
    CC0 1.0), from ``hittheant/475Project`` (``fetch github:hittheant/475Project``; commit c02968a;
    its ``archive/`` is the Kaggle archive; boxes checked identical to a second copy). Seeded
    60 / 20 / 20 split.
``balloon`` (1 class, instance polygons)
    Matterport's balloon set (Mask R-CNN release 2.1, MIT repository; 75 Flickr photos whose licences
    allow commercial use and modification, polygons drawn with VIA), from ``ukiras123/ml-temp``
    ``datasets/balloon_original`` (``fetch github:ukiras123/ml-temp``; commit 77a97cf). Images scaled to
    ``max_side``. test: the release's ``val`` (13); train / val: a seeded split of its ``train`` (61).
    Besides the VOC folder, ``instances_<split>.json`` (COCO, with the polygons, file names relative
    to the set's folder) is written for instance segmentation.

The fetched repositories lie under ``/work/.mirror/<owner>+<name>/repo`` (``--mirror-root``).

Usage::

    python bench/detection_data.py --sets trees,chess,facemask,balloon [--root /root/.cache/convision-bench]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from convision.data.detection_formats import DetectionRecord, write_voc

DEFAULT_ROOT = Path("/root/.cache/convision-bench")
DEEPFOREST_DATA = DEFAULT_ROOT / "pkgs" / "deepforest" / "deepforest" / "data"
MIRROR_ROOT = Path("/work/.mirror")
SPLITS = ("train", "val", "test")
TILE = 400
MIN_KEPT_AREA = 0.5


class SourceMissing(Exception):
    """A set's source (wheel contents or fetched repository) is not on this machine."""


# ------------------------------------------------------------------------------------------ helpers


def voc_objects(xml_text: str | bytes) -> list[tuple[str, float, float, float, float]]:
    """``(name, x1, y1, x2, y2)`` of a VOC XML, continuous pixels (``x1 = xmin - 1``, ``x2 = xmax``)."""
    root = ET.fromstring(xml_text)
    out = []
    for obj in root.findall("object"):
        b = [
            float(obj.findtext(f"bndbox/{t}").strip())
            for t in ("xmin", "ymin", "xmax", "ymax")
        ]
        out.append((obj.findtext("name").strip(), b[0] - 1.0, b[1] - 1.0, b[2], b[3]))
    return out


def clip_to_window(
    boxes: np.ndarray, x0: int, y0: int, w: int, h: int, min_kept: float = MIN_KEPT_AREA
) -> np.ndarray:
    """Indices of ``boxes`` (xyxy) that keep at least ``min_kept`` of their area inside the window, and
    those boxes clipped to it in window coordinates: returns ``(keep, clipped)``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    c = boxes - np.array([x0, y0, x0, y0], dtype=np.float64)
    c = np.clip(c, 0.0, [w, h, w, h])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = np.clip(c[:, 2] - c[:, 0], 0, None) * np.clip(c[:, 3] - c[:, 1], 0, None)
    keep = np.nonzero(kept >= min_kept * np.maximum(area, 1e-9))[0]
    return keep, c[keep].astype(np.float32)


def seeded_split(n: int, fractions: tuple[float, ...], seed: int) -> list[list[int]]:
    """Deterministic partition of ``range(n)`` into ``len(fractions)`` sorted index lists (the last gets the rest)."""
    perm = np.random.default_rng(seed).permutation(n).tolist()
    parts, start = [], 0
    for f in fractions[:-1]:
        k = int(round(f * n))
        parts.append(sorted(perm[start : start + k]))
        start += k
    parts.append(sorted(perm[start:]))
    return parts


def mirror(owner_name: str, mirror_root: Path) -> Path:
    """The git directory of a fetched repository (``<mirror_root>/<owner>+<name>/repo``)."""
    base = mirror_root / owner_name.replace("/", "+") / "repo"
    for d in (base, base / ".git"):
        if (d / "HEAD").is_file() or (d / ".git").exists():
            return d
    raise SourceMissing(
        f"{base}: repository {owner_name} not fetched (search tool: fetch github:{owner_name})"
    )


def git_files(repo: Path, prefix: str) -> dict[str, bytes]:
    """Every file under ``prefix`` at ``HEAD`` of ``repo``, ``{path: bytes}`` (one ``git archive``)."""
    tar = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", "HEAD", prefix],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}


def git_head(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def scaled(image: Image.Image, max_side: int | None) -> tuple[Image.Image, float]:
    """``image`` (RGB) scaled down so its longer side is at most ``max_side``; and the scale."""
    image = image.convert("RGB")
    if not max_side or max(image.size) <= max_side:
        return image, 1.0
    s = max_side / max(image.size)
    size = (max(1, round(image.width * s)), max(1, round(image.height * s)))
    return image.resize(size, Image.BILINEAR), s


class SetWriter:
    """Collects images (written at once to ``<out>/JPEGImages``) and their boxes, split by split; boxes
    are clipped to the image (annotation tools leave some a pixel outside) and dropped if empty then."""

    def __init__(self, out: Path, classes: list[str]) -> None:
        if out.exists():
            shutil.rmtree(out)
        (out / "JPEGImages").mkdir(parents=True)
        self.out, self.classes = out, classes
        self.records: dict[str, list[DetectionRecord]] = {s: [] for s in SPLITS}
        self.extra: dict[str, list[dict]] = {s: [] for s in SPLITS}
        self.clipped = self.dropped = 0

    def add(
        self, split: str, name: str, image: Image.Image | bytes, boxes, names, **extra
    ) -> None:
        path = self.out / "JPEGImages" / name
        if path.exists():
            raise ValueError(f"{path}: two images of the set map to this name")
        if isinstance(image, bytes):
            path.write_bytes(image)
            with Image.open(path) as im:
                w, h = im.size
        else:
            image.save(path, quality=95) if path.suffix.lower() in (
                ".jpg",
                ".jpeg",
            ) else image.save(path)
            w, h = image.size
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        inside = np.clip(boxes, 0, [w, h, w, h])
        self.clipped += int((np.abs(inside - boxes) > 1e-3).any(1).sum())
        good = (inside[:, 2] > inside[:, 0]) & (inside[:, 3] > inside[:, 1])
        self.dropped += int((~good).sum())
        boxes, labels = (
            inside[good],
            [self.classes.index(n) for n, g in zip(names, good) if g],
        )
        rec = DetectionRecord(
            path,
            w,
            h,
            boxes,
            labels,
            np.zeros(len(labels), bool),
            len(self.records[split]),
        )
        self.records[split].append(rec)
        self.extra[split].append(extra)

    def finish(self) -> dict[str, list[DetectionRecord]]:
        print(
            f"{self.out.name}: {self.clipped} box(es) clipped to their image, {self.dropped} empty after it dropped"
        )
        for split in SPLITS:
            write_voc(self.records[split], self.classes, self.out, split)
        return self.records


# ------------------------------------------------------------------------------------------ sets


def build_trees(
    root: Path,
    data_dir: Path = DEEPFOREST_DATA,
    seed: int = 0,
    val_fraction: float = 1 / 6,
):
    """DeepForest's tree crowns: YELL crops tiled (train / val), OSBS_029 + SOAP_061 (test)."""
    crops = sorted(data_dir.glob("2019_YELL_2_*.png"))
    if not crops or not all(
        (data_dir / f"{s}.{e}").is_file()
        for s in ("OSBS_029", "SOAP_061")
        for e in ("png", "xml")
    ):
        raise SourceMissing(
            f"{data_dir}: DeepForest data not found (pip download --no-deps deepforest==2.1.0 "
            f"-d {DEFAULT_ROOT / 'pkgs'} and unzip its deepforest/data/)"
        )
    w = SetWriter(root / "trees", ["Tree"])
    tiles = []
    for png in crops:
        image = Image.open(png).convert("RGB")
        objs = voc_objects(png.with_suffix(".xml").read_bytes())
        boxes = np.array([o[1:] for o in objs], dtype=np.float32).reshape(-1, 4)
        for y0 in range(0, image.height - TILE + 1, TILE):
            for x0 in range(0, image.width - TILE + 1, TILE):
                _, clipped = clip_to_window(boxes, x0, y0, TILE, TILE)
                tiles.append(
                    (
                        f"{png.stem}_{x0}_{y0}.png",
                        image.crop((x0, y0, x0 + TILE, y0 + TILE)),
                        clipped,
                    )
                )
    train, val = seeded_split(len(tiles), (1 - val_fraction, val_fraction), seed)
    for split, idx in (("train", train), ("val", val)):
        for i in idx:
            name, tile, boxes = tiles[i]
            w.add(split, name, tile, boxes, ["Tree"] * len(boxes))
    for site in ("OSBS_029", "SOAP_061"):
        objs = voc_objects((data_dir / f"{site}.xml").read_bytes())
        w.add(
            "test",
            f"{site}.png",
            (data_dir / f"{site}.png").read_bytes(),
            [o[1:] for o in objs],
            ["Tree"] * len(objs),
        )
    return w.finish()


CHESS_CLASSES = [
    "black-bishop",
    "black-king",
    "black-knight",
    "black-pawn",
    "black-queen",
    "black-rook",
    "white-bishop",
    "white-king",
    "white-knight",
    "white-pawn",
    "white-queen",
    "white-rook",
]


def build_chess(root: Path, mirror_root: Path = MIRROR_ROOT, max_side: int = 1024):
    """Roboflow Chess Pieces (12 classes), its own train / valid / test, scaled to ``max_side``."""
    repo = mirror("jsansao/ChessPiecesv23", mirror_root)
    w = SetWriter(root / "chess", CHESS_CLASSES)
    dropped = 0
    for split, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        files = git_files(repo, folder)
        coco = json.loads(files[f"{folder}/_annotations.coco.json"])
        cats = {c["id"]: c["name"] for c in coco["categories"]}
        per_image: dict[int, list] = {im["id"]: [] for im in coco["images"]}
        for a in coco["annotations"]:
            per_image[a["image_id"]].append(a)
        for im in sorted(coco["images"], key=lambda im: im["file_name"]):
            image, s = scaled(
                Image.open(io.BytesIO(files[f"{folder}/{im['file_name']}"])), max_side
            )
            boxes, names = [], []
            for a in per_image[im["id"]]:
                if cats[a["category_id"]] not in CHESS_CLASSES:
                    dropped += 1
                    continue
                x, y, bw, bh = a["bbox"]
                boxes.append([x * s, y * s, (x + bw) * s, (y + bh) * s])
                names.append(cats[a["category_id"]])
            w.add(
                split,
                Path(im["file_name"]).stem.split("_jpg.rf.")[0] + ".jpg",
                image,
                boxes,
                names,
            )
    print(
        f"chess: source {repo} @ {git_head(repo)}; dropped {dropped} box(es) of the bare 'bishop' category"
    )
    return w.finish()


FACEMASK_CLASSES = ["mask_weared_incorrect", "with_mask", "without_mask"]


def build_facemask(root: Path, mirror_root: Path = MIRROR_ROOT, seed: int = 0):
    """Kaggle Face Mask Detection (853 images, 3 classes), seeded 60 / 20 / 20 split."""
    repo = mirror("hittheant/475Project", mirror_root)
    files = git_files(repo, "archive")
    stems = sorted(
        (Path(p).stem for p in files if p.startswith("archive/annotations/")),
        key=lambda s: int(s[12:]),
    )
    w = SetWriter(root / "facemask", FACEMASK_CLASSES)
    parts = seeded_split(len(stems), (0.6, 0.2, 0.2), seed)
    for split, idx in zip(SPLITS, parts):
        for i in idx:
            objs = voc_objects(files[f"archive/annotations/{stems[i]}.xml"])
            w.add(
                split,
                f"{stems[i]}.png",
                files[f"archive/images/{stems[i]}.png"],
                [o[1:] for o in objs],
                [o[0] for o in objs],
            )
    print(f"facemask: source {repo} @ {git_head(repo)}")
    return w.finish()


def build_balloon(
    root: Path, mirror_root: Path = MIRROR_ROOT, max_side: int = 1024, seed: int = 0
):
    """Matterport's balloons with polygons: VOC boxes and COCO ``instances_<split>.json`` (polygons)."""
    repo = mirror("ukiras123/ml-temp", mirror_root)
    files = git_files(repo, "datasets/balloon_original")
    w = SetWriter(root / "balloon", ["balloon"])

    def items(folder: str) -> list[dict]:
        via = json.loads(
            files[f"datasets/balloon_original/{folder}/via_region_data.json"]
        )
        return sorted(via.values(), key=lambda v: v["filename"])

    train_items, test_items = items("train"), items("val")
    train_idx, val_idx = seeded_split(len(train_items), (0.8, 0.2), seed)
    plan = [("train", "train", train_items[i]) for i in train_idx] + [
        ("val", "train", train_items[i]) for i in val_idx
    ]
    plan += [("test", "val", v) for v in test_items]
    for split, folder, v in plan:
        image, s = scaled(
            Image.open(
                io.BytesIO(files[f"datasets/balloon_original/{folder}/{v['filename']}"])
            ),
            max_side,
        )
        regions = (
            v["regions"].values() if isinstance(v["regions"], dict) else v["regions"]
        )
        polys = []
        for r in regions:
            xs = np.asarray(r["shape_attributes"]["all_points_x"], dtype=np.float64) * s
            ys = np.asarray(r["shape_attributes"]["all_points_y"], dtype=np.float64) * s
            polys.append(
                np.stack([np.clip(xs, 0, image.width), np.clip(ys, 0, image.height)], 1)
            )
        polys = [
            p for p in polys if np.ptp(p[:, 0]) > 0 and np.ptp(p[:, 1]) > 0
        ]  # boxes stay aligned with polygons
        boxes = [
            [p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in polys
        ]
        w.add(
            split,
            Path(v["filename"]).stem + ".jpg",
            image,
            boxes,
            ["balloon"] * len(boxes),
            polygons=[p.round(1).ravel().tolist() for p in polys],
        )
    records = w.finish()
    for split in SPLITS:
        images, anns = [], []
        for k, (rec, extra) in enumerate(zip(records[split], w.extra[split]), start=1):
            images.append(
                {
                    "id": k,
                    "file_name": f"JPEGImages/{rec.image.name}",
                    "width": rec.width,
                    "height": rec.height,
                }
            )
            for (x1, y1, x2, y2), poly in zip(rec.boxes.tolist(), extra["polygons"]):
                xy = np.asarray(poly).reshape(-1, 2)
                area = 0.5 * abs(
                    np.dot(xy[:, 0], np.roll(xy[:, 1], 1))
                    - np.dot(xy[:, 1], np.roll(xy[:, 0], 1))
                )
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": k,
                        "category_id": 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": float(area),
                        "segmentation": [poly],
                        "iscrowd": 0,
                    }
                )
        (w.out / f"instances_{split}.json").write_text(
            json.dumps(
                {
                    "images": images,
                    "annotations": anns,
                    "categories": [{"id": 1, "name": "balloon"}],
                }
            ),
            encoding="utf-8",
        )
    print(f"balloon: source {repo} @ {git_head(repo)}")
    return records


BUILDERS = {
    "trees": build_trees,
    "chess": build_chess,
    "facemask": build_facemask,
    "balloon": build_balloon,
}


# ------------------------------------------------------------------------------------------ report


def describe(
    name: str, records: dict[str, list[DetectionRecord]], classes: list[str]
) -> None:
    """Per split: images, boxes, box size sqrt(w*h) percentiles, boxes per image, per-class counts."""
    for split in SPLITS:
        recs = records[split]
        boxes = (
            np.concatenate([r.boxes for r in recs])
            if recs
            else np.zeros((0, 4), np.float32)
        )
        counts = np.array([len(r.boxes) for r in recs])
        line = f"{name:9s} {split:5s} images {len(recs):4d}  boxes {len(boxes):5d}"
        if len(boxes):
            side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
            p = np.percentile(side, [5, 25, 50, 75, 95])
            sizes = sorted({(r.width, r.height) for r in recs})
            shown = (
                f"{sizes[0][0]}x{sizes[0][1]}"
                if len(sizes) == 1
                else f"{len(sizes)} sizes"
            )
            line += (
                f"  size px p5/25/50/75/95 {'/'.join(f'{v:.0f}' for v in p)}"
                f"  per image mean {counts.mean():.1f} max {counts.max()}  images {shown}"
            )
        print(line)
        if len(classes) > 1 and len(boxes):
            per = np.bincount(
                np.concatenate([r.labels for r in recs]), minlength=len(classes)
            )
            print(" " * 16 + "  ".join(f"{c} {n}" for c, n in zip(classes, per)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sets",
        default=",".join(BUILDERS),
        help=f"comma-separated, of {', '.join(BUILDERS)}",
    )
    ap.add_argument(
        "--root",
        type=Path,
        default=DEFAULT_ROOT,
        help="cache folder; each set goes to <root>/<name>/",
    )
    ap.add_argument(
        "--mirror-root",
        type=Path,
        default=MIRROR_ROOT,
        help="where fetched repositories lie",
    )
    ap.add_argument(
        "--deepforest-data",
        type=Path,
        default=DEEPFOREST_DATA,
        help="the wheel's deepforest/data/",
    )
    ap.add_argument(
        "--max-side",
        type=int,
        default=1024,
        help="chess / balloon images scaled to this longer side",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in names if s not in BUILDERS]
    if unknown:
        print(
            f"error: --sets: unknown set(s) {', '.join(unknown)} (known: {', '.join(BUILDERS)})",
            file=sys.stderr,
        )
        return 2
    for name in names:
        try:
            if name == "trees":
                records = build_trees(args.root, args.deepforest_data, args.seed)
            elif name in ("chess", "balloon"):
                kw = {"seed": args.seed} if name == "balloon" else {}
                records = BUILDERS[name](
                    args.root, args.mirror_root, args.max_side, **kw
                )
            else:
                records = build_facemask(args.root, args.mirror_root, args.seed)
        except SourceMissing as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 2
        classes = {
            "trees": ["Tree"],
            "chess": CHESS_CLASSES,
            "facemask": FACEMASK_CLASSES,
            "balloon": ["balloon"],
        }[name]
        print(f"{name}: written to {args.root / name}")
        describe(name, records, classes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
