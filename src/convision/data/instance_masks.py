"""Instance masks for Mask R-CNN: where a :class:`~convision.data.detection_formats.DetectionRecord`'s
masks come from, their decoding and their checks.

``record.masks`` (None for box-only data) is one of

* ``("array", N x H x W uint8)``: the masks themselves (the built-in scenes: ``instances == k``;
  the generator knows every shape, so the masks, boxes and labels agree exactly);
* ``("coco", [segmentation, ...])``: one COCO ``segmentation`` per object, polygons (a list of
  ``[x1, y1, x2, y2, ...]`` rings in pixel coordinates) or RLE (``{"size": [h, w], "counts": ...}``,
  compressed string or uncompressed list), decoded with pycocotools;
* ``("png", path, [id, ...])``: an instance-id PNG (Pascal VOC ``SegmentationObject``, or the folder
  format's ``instances/<stem>.png``, :func:`read_instance_folder`) and the pixel value of each object.

Checks (one-line :class:`~convision.errors.DataError` naming the file and the object): a polygon
point outside the image by more than the box tolerance, a polygon with fewer than 3 points, an RLE
whose size is not the image's, an object whose mask is empty, an instance id without a class.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from convision.data.segmentation import VOC_CLASSES as _VOC_WITH_BACKGROUND
from convision.errors import DataError

__all__ = [
    "check_coco_segmentation",
    "decode_rles",
    "decode_masks",
    "instance_boxes",
    "instances_from_png",
    "read_voc_instances",
    "read_instance_folder",
    "VOC_CLASSES",
]


def decode_rles(rles: Any) -> np.ndarray:
    """``pycocotools.mask.decode`` (``H x W`` for one RLE, ``H x W x N`` for a list) without numpy 2's
    DeprecationWarning about pycocotools' ``__array__`` (a warning the user cannot act on)."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rles)


def _rle(seg: Any, h: int, w: int) -> Any:
    """One COCO segmentation as a single compressed RLE (pycocotools)."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, h, w)
    counts = seg["counts"]
    return {
        "size": seg["size"],
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }


def check_coco_segmentation(
    seg: Any, w: int, h: int, where: str, tolerance: float
) -> None:
    """DataError unless ``seg`` is a valid, non-empty polygon list or RLE inside a ``w x h`` image."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        if not seg:
            raise DataError(f"{where}: empty segmentation (no polygon)")
        for ring in seg:
            if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2:
                raise DataError(
                    f"{where}: a polygon needs at least 3 x, y points, got {str(ring)[:60]}"
                )
            try:
                xy = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
            except (TypeError, ValueError):
                raise DataError(f"{where}: non-numeric polygon coordinates") from None
            if not np.isfinite(xy).all():
                raise DataError(f"{where}: non-finite polygon coordinates")
            bad = (
                (xy[:, 0] < -tolerance)
                | (xy[:, 0] > w + tolerance)
                | (xy[:, 1] < -tolerance)
                | (xy[:, 1] > h + tolerance)
            )
            if bad.any():
                x, y = xy[int(np.argmax(bad))]
                raise DataError(
                    f"{where}: polygon point ({x:g}, {y:g}) is outside the {w}x{h} image"
                )
    elif isinstance(seg, dict):
        if "size" not in seg or "counts" not in seg:
            raise DataError(f"{where}: an RLE segmentation needs 'size' and 'counts'")
        if [int(v) for v in seg["size"]] != [h, w]:
            raise DataError(
                f"{where}: RLE size {seg['size']} is not the image's [height, width] [{h}, {w}]"
            )
    else:
        raise DataError(
            f"{where}: segmentation must be a polygon list or an RLE object, got {type(seg).__name__}"
        )
    try:
        area = float(mask_utils.area(_rle(seg, h, w)))
    except Exception as e:  # pycocotools raises bare exceptions on malformed counts
        raise DataError(f"{where}: cannot decode the segmentation ({e})") from None
    if area <= 0:
        raise DataError(f"{where}: the segmentation covers no pixel (empty mask)")


def instances_from_png(
    path: Path, where: str, class_png: Path | None = None
) -> tuple[np.ndarray, list[int], list[int]]:
    """An instance-id PNG: ``(id map, ids, classes)``. Ids are the pixel values other than 0
    (background) and 255 (VOC's "void" border); with ``class_png`` (VOC ``SegmentationClass``) each
    id's class is the class index most of its pixels have there (``1..``), DataError if none."""
    from convision.data.io import read_mask

    ids_map = read_mask(path)
    ids = [int(v) for v in np.unique(ids_map) if v not in (0, 255)]
    classes: list[int] = []
    if class_png is not None:
        cls_map = read_mask(class_png)
        if cls_map.shape != ids_map.shape:
            raise DataError(
                f"{where}: {class_png.name} is {cls_map.shape[1]}x{cls_map.shape[0]} but "
                f"{path.name} is {ids_map.shape[1]}x{ids_map.shape[0]}"
            )
        for i in ids:
            values = cls_map[ids_map == i]
            values = values[(values != 0) & (values != 255)]
            if values.size == 0:
                raise DataError(
                    f"{where}: instance id {i} of {path.name} has no class in {class_png.name}"
                )
            classes.append(int(np.bincount(values).argmax()))
    return ids_map, ids, classes


def instance_boxes(ids_map: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """``N x 4`` float32 boxes (pixel edges: x2, y2 exclusive) of each id's pixels."""
    boxes = np.zeros((len(ids), 4), dtype=np.float32)
    for k, i in enumerate(ids):
        ys, xs = np.nonzero(ids_map == i)
        boxes[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


def decode_masks(record: Any) -> np.ndarray:
    """``N x H x W`` uint8 {0, 1} masks of ``record`` (``record.masks``, module notes)."""
    source = record.masks
    n, h, w = len(record.labels), record.height, record.width
    if source is None:
        raise DataError(
            f"{record.name}: no instance masks (Mask R-CNN needs COCO segmentations, VOC "
            "SegmentationObject PNGs, the folder format or the built-in scenes)"
        )
    kind = source[0]
    if kind == "array":
        return np.asarray(source[1], dtype=np.uint8).reshape(n, h, w)
    if kind == "coco":
        out = np.zeros((n, h, w), dtype=np.uint8)
        for k, seg in enumerate(source[1]):
            out[k] = decode_rles(_rle(seg, h, w))
        return out
    if kind == "png":
        from convision.data.io import read_mask

        ids_map = read_mask(Path(source[1]))
        out = np.zeros((n, h, w), dtype=np.uint8)
        for k, i in enumerate(source[2]):
            out[k] = ids_map == i
        return out
    raise ValueError(f"unknown mask source {kind!r}")


VOC_CLASSES = _VOC_WITH_BACKGROUND[1:]
"""Pascal VOC's classes in the order of their ``SegmentationClass`` indices ``1..20``."""


def read_voc_instances(
    root: str | Path, split: str | None = None
) -> tuple[list, list[str]]:
    """Pascal VOC instance segmentation: ``SegmentationObject/<id>.png`` (instance ids),
    ``SegmentationClass/<id>.png`` (class indices ``1..K``; 0 background, 255 void),
    ``JPEGImages/<id>.jpg``; the ids of ``ImageSets/Segmentation/<split>.txt`` (else
    ``ImageSets/Main/<split>.txt``, else every ``SegmentationObject`` PNG). Boxes are the instances'
    pixel extents, class names VOC's 20 (or ``classes.txt`` in ``root``, one per line, index 1 first)."""
    from convision.data.detection_formats import DetectionRecord

    root = Path(root).expanduser()
    objects = root / "SegmentationObject"
    if not objects.is_dir():
        raise DataError(f"{root}: no SegmentationObject/ folder (VOC instance masks)")
    names_file = root / "classes.txt"
    classes = (
        [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
        if names_file.is_file()
        else list(VOC_CLASSES)
    )
    lists = [
        root / "ImageSets" / sub / f"{split}.txt" for sub in ("Segmentation", "Main")
    ]
    listed = next((p for p in lists if split and p.is_file()), None)
    if listed is not None:
        ids = [ln.split()[0] for ln in listed.read_text().splitlines() if ln.strip()]
        ids = [i for i in ids if (objects / f"{i}.png").is_file()]
    else:
        ids = sorted(p.stem for p in objects.glob("*.png"))
    records = []
    for n, stem in enumerate(ids):
        where = f"{objects / stem}.png"
        class_png = root / "SegmentationClass" / f"{stem}.png"
        if not class_png.is_file():
            raise DataError(f"{where}: no SegmentationClass/{stem}.png for its classes")
        image = next(
            (
                p
                for p in (root / "JPEGImages" / f"{stem}{e}" for e in (".jpg", ".png"))
                if p.is_file()
            ),
            None,
        )
        if image is None:
            raise DataError(f"{where}: image JPEGImages/{stem}.jpg not found")
        ids_map, inst, cls = instances_from_png(
            objects / f"{stem}.png", where, class_png
        )
        bad = [c for c in cls if c > len(classes)]
        if bad:
            raise DataError(
                f"{where}: class index {bad[0]} has no name ({len(classes)} classes)"
            )
        h, w = ids_map.shape
        records.append(
            DetectionRecord(
                image,
                w,
                h,
                instance_boxes(ids_map, inst),
                np.asarray(cls, dtype=np.int64) - 1,
                np.zeros(len(inst), bool),
                n,
                masks=("png", objects / f"{stem}.png", inst),
            )
        )
    return records, classes


def read_instance_folder(
    root: str | Path, split: str | None = None
) -> tuple[list, list[str]]:
    """The folder format: ``images/<stem>.<jpg|png>``, ``instances/<stem>.png`` (one instance id per
    pixel, 0 = background; 8 or 16 bit) and ``instances/<stem>.json`` (``{"<id>": "<class name>"}``
    for every id of the PNG); with ``split``, those under ``images/<split>/`` and
    ``instances/<split>/``. Class names: ``classes.txt`` in ``root`` (one per line) or the sorted
    names found. An image without its PNG is a negative image."""
    import json

    from convision.data.detection_formats import DetectionRecord

    root = Path(root).expanduser()
    images_dir, inst_dir = root / "images", root / "instances"
    if split:
        images_dir, inst_dir = images_dir / split, inst_dir / split
    if not images_dir.is_dir():
        raise DataError(f"{root}: no {images_dir.relative_to(root)}/ folder")
    files = sorted(
        p
        for p in images_dir.iterdir()
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")
    )
    found: list[tuple[Path, Path | None, list[int], list[str]]] = []
    for image in files:
        png = inst_dir / f"{image.stem}.png"
        if not png.is_file():
            found.append((image, None, [], []))
            continue
        where = str(png)
        names_file = png.with_suffix(".json")
        if not names_file.is_file():
            raise DataError(
                f"{where}: no {names_file.name} naming the class of each instance id"
            )
        try:
            names = json.loads(names_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{names_file}: cannot be read as JSON ({e})") from None
        if not isinstance(names, dict):
            raise DataError(f'{names_file}: expected {{"<id>": "<class>"}}')
        ids_map, ids, _ = instances_from_png(png, where)
        missing = [i for i in ids if str(i) not in names]
        if missing:
            raise DataError(
                f"{where}: instance id {missing[0]} has no class in {names_file.name}"
            )
        found.append((image, png, ids, [str(names[str(i)]) for i in ids]))
    names_txt = root / "classes.txt"
    classes = (
        [ln.strip() for ln in names_txt.read_text().splitlines() if ln.strip()]
        if names_txt.is_file()
        else sorted({c for *_, cs in found for c in cs})
    )
    index = {c: k for k, c in enumerate(classes)}
    records = []
    for n, (image, png, ids, cs) in enumerate(found):
        unknown = [c for c in cs if c not in index]
        if unknown:
            raise DataError(
                f"{png}: class {unknown[0]!r} is not in classes.txt ({', '.join(classes)})"
            )
        if png is None:
            from convision.data.detection_formats import image_size

            w, h = image_size(image, str(image))
            boxes = np.zeros((0, 4), np.float32)
        else:
            from convision.data.io import read_mask

            ids_map = read_mask(png)
            h, w = ids_map.shape
            boxes = instance_boxes(ids_map, ids)
        records.append(
            DetectionRecord(
                image,
                w,
                h,
                boxes,
                [index[c] for c in cs],
                np.zeros(len(ids), bool),
                n,
                masks=("png", png, ids)
                if png is not None
                else ("array", np.zeros((0, h, w), np.uint8)),
            )
        )
    return records, classes
