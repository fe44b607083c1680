"""Object-detection annotation formats: Pascal VOC, COCO and YOLO readers and writers, and conversion.

Every reader returns ``(records, classes)``: one :class:`DetectionRecord` per image and the class
names, user class ids ``0 .. K-1`` (no background). Boxes are continuous ``x1, y1, x2, y2`` in
pixels (pixel edges, as :func:`~convision.data.synthetic.make_scene`: a box covering columns 3..9
is ``x1=3, x2=10``). Images without objects are kept as negatives.

Format notes:

``voc``
    ``Annotations/<id>.xml``, ``JPEGImages/<filename>``, ``ImageSets/Main/<split>.txt``. VOC pixel
    coordinates are 1-based and inclusive, so ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax,
    y2 = ymax`` (the writer does the reverse). ``difficult`` is kept. Default classes: the sorted
    names found in the split's XML files and per-class lists ``ImageSets/Main/<class>_<split>.txt``
    (for VOC itself: its 20 classes in the usual alphabetical order).
``coco``
    One JSON file (``images``, ``annotations``, ``categories``). Class ids are the categories in
    category-id order; ``bbox`` is ``[x, y, w, h]``; ``iscrowd`` (or ``ignore``) becomes
    ``difficult``. Images are looked up in ``image_root`` (default: the JSON's folder, then its
    ``images/`` subfolder).
``yolo``
    ``images/`` and ``labels/`` (or Ultralytics' ``images/<split>/``, ``labels/<split>/``), one
    ``cls cx cy w h`` line per box, normalised by the image size (read from the image header
    without decoding). Class names from ``classes.txt`` / ``names.txt`` (one per line) or
    ``data.yaml``'s ``names`` (list or ``{id: name}``). A missing label file is a negative image.
    YOLO has no ``difficult`` flag: the writer writes such boxes as ordinary ones.

Checks (the first bad entry raises a one-line :class:`~convision.errors.DataError` naming the
file, and the object / line / annotation index): non-numeric or non-finite coordinates, zero or
negative width or height, boxes outside the image by more than the tolerance, unknown class
names (when ``classes`` is given), class ids out of range, missing images, malformed XML / JSON /
text. Tolerance: a box may stick out of the image by at most ``max(2 px, 1 % of the side)``
(:func:`clip_tolerance`); such boxes are clipped to the image (annotation tools often write 0-based
VOC or YOLO centres a hair outside ``[0, 1]``), and :func:`read_detection` reports them in one
warning per data set ("clipped 27 box(es) in 19 file(s)"), each file on the ``convision.data``
logger at DEBUG level; excursions under ``ROUNDOFF_PX`` (1e-3 px, float round-off of normalised
coordinates) are clipped silently.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import shutil
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from convision.errors import ConfigError, DataError

FORMATS = ("voc", "coco", "yolo")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CLIP_TOLERANCE_PX = 2.0
CLIP_TOLERANCE_FRACTION = 0.01
ROUNDOFF_PX = 1e-3
"""Excursions below this are float round-off (YOLO's normalised text), clipped without a warning."""

log = logging.getLogger("convision.data")
_clip_log: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "clip_log", default=None
)


@dataclass
class DetectionRecord:
    """One image and its objects.

    ``boxes`` float32 ``N x 4`` continuous xyxy pixels, ``labels`` int64 ``N`` in ``0..K-1``,
    ``difficult`` bool ``N``. ``image`` is the file, or None for a built-in scene, which is then
    described by ``scene = (index, seed, (h, w), num_classes, max_objects)`` (see
    :func:`load_record_image`).
    """

    image: Path | None
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    image_id: int
    scene: tuple[int, int, tuple[int, int], int, int] | None = field(
        default=None, repr=False
    )
    masks: Any = field(default=None, repr=False)
    """Where the instance masks come from (:mod:`convision.data.instance_masks`), None if unknown."""

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if not len(self.boxes) == len(self.labels) == len(self.difficult):
            raise ValueError(
                f"boxes, labels and difficult differ in length: {len(self.boxes)}, "
                f"{len(self.labels)}, {len(self.difficult)}"
            )

    @property
    def name(self) -> str:
        """File name, or ``scene_000123`` for a built-in scene."""
        if self.image is not None:
            return self.image.name
        index = self.scene[0] if self.scene is not None else self.image_id
        return f"scene_{index:06d}"


def load_record_image(record: DetectionRecord) -> np.ndarray:
    """The record's pixels as ``H x W x 3`` uint8 RGB (the file decoded, or the scene regenerated)."""
    if record.image is not None:
        from convision.data.io import read_image

        return read_image(record.image)
    if record.scene is None:
        raise ValueError("a DetectionRecord needs an image path or a scene")
    from convision.data.synthetic import make_scene

    index, seed, size, num_classes, max_objects = record.scene
    return make_scene(
        index,
        seed=seed,
        image_size=size,
        num_classes=num_classes,
        max_objects=max_objects,
    ).image


def synthetic_records(
    num_images: int,
    image_size: int | tuple[int, int] = 128,
    num_classes: int = 6,
    seed: int = 0,
    max_objects: int = 6,
    offset: int = 0,
) -> tuple[list[DetectionRecord], list[str]]:
    """Records of the built-in scenes ``offset .. offset + num_images - 1`` (labels ``scene.labels - 1``)."""
    from convision.data.synthetic import image_hw, make_scene, synthetic_classes

    h, w = image_hw(image_size)
    records = []
    for k in range(int(num_images)):
        index = int(offset) + k
        s = make_scene(
            index,
            seed=seed,
            image_size=(h, w),
            num_classes=num_classes,
            max_objects=max_objects,
        )
        records.append(
            DetectionRecord(
                None,
                w,
                h,
                s.boxes,
                s.labels - 1,
                np.zeros(len(s.labels), bool),
                index,
                scene=(index, int(seed), (h, w), int(num_classes), int(max_objects)),
            )
        )
    return records, synthetic_classes(num_classes)[1:]


# ------------------------------------------------------------------------------------------ checks


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def clip_tolerance(side: int) -> float:
    """How far (pixels) a box may stick out of an image side of ``side`` pixels before it is an error."""
    return max(CLIP_TOLERANCE_PX, CLIP_TOLERANCE_FRACTION * side)


def _number(text: Any, where: str, what: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} is not a number: {text!r}") from None
    if not math.isfinite(v):
        raise DataError(f"{where}: {what} is not finite: {text!r}")
    return v


def check_boxes(
    boxes: np.ndarray,
    width: int,
    height: int,
    file: str | Path,
    what: str = "object",
    places: Sequence[str] | None = None,
) -> np.ndarray:
    """Check ``N x 4`` xyxy ``boxes`` against a ``width x height`` image; returns them clipped.

    Zero / negative size or sticking out by more than :func:`clip_tolerance` raise a DataError
    ``"<file> <what> <k>: ..."`` (or ``"<file> <places[k]>: ..."``, e.g. a label file's line);
    smaller excursions are clipped with a warning.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    tx, ty = clip_tolerance(width), clip_tolerance(height)
    clipped = 0
    for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        shown = f"[{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        at = places[k] if places is not None else f"{what} {k}"
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise DataError(f"{file} {at}: box {shown} is not finite")
        if not (x2 > x1 and y2 > y1):
            raise DataError(
                f"{file} {at}: box {shown} has zero or negative width/height (expected x1 < x2, y1 < y2)"
            )
        if x1 < -tx or y1 < -ty or x2 > width + tx or y2 > height + ty:
            raise DataError(
                f"{file} {at}: box {shown} is outside the {width}x{height} image"
            )
        if (
            x1 < -ROUNDOFF_PX
            or y1 < -ROUNDOFF_PX
            or x2 > width + ROUNDOFF_PX
            or y2 > height + ROUNDOFF_PX
        ):
            cx1, cy1, cx2, cy2 = (
                max(x1, 0.0),
                max(y1, 0.0),
                min(x2, float(width)),
                min(y2, float(height)),
            )
            if not (cx2 > cx1 and cy2 > cy1):
                raise DataError(
                    f"{file} {at}: box {shown} lies outside the {width}x{height} image"
                )
            boxes[k] = (cx1, cy1, cx2, cy2)
            clipped += 1
    np.clip(
        boxes, 0.0, [width, height, width, height], out=boxes
    )  # round-off (< ROUNDOFF_PX): silently
    if clipped:
        text = (
            f"{file}: clipped {clipped} box(es) sticking out of the {width}x{height} image by at most "
            f"max({CLIP_TOLERANCE_PX:g} px, {CLIP_TOLERANCE_FRACTION:.0%} of the side)"
        )
        counts = _clip_log.get()
        if counts is None:  # called on its own: report now
            warnings.warn(text, stacklevel=2)
        else:  # inside read_detection: summarised there
            counts.append(clipped)
            log.debug(text)
    return boxes


def image_size(path: Path, where: str) -> tuple[int, int]:
    """``(width, height)`` from the image header (no decoding); DataError if missing or unreadable."""
    if not path.is_file():
        raise DataError(f"{where}: image {path} not found")
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault
        raise DataError(
            f"{where}: image {path} cannot be read ({_one_line(e) or type(e).__name__})"
        ) from None


def _read_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({_one_line(e)})") from None
    return [
        (n, line.strip())
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def _class_index(classes: Sequence[str], where: str) -> dict[str, int]:
    names = [str(c) for c in classes]
    if not names:
        raise DataError(f"{where}: no classes")
    if len(set(names)) != len(names):
        dup = next(c for c in names if names.count(c) > 1)
        raise DataError(f"{where}: class {dup!r} is listed twice")
    return {c: k for k, c in enumerate(names)}


def remap_labels(
    records: list[DetectionRecord],
    found: Sequence[str],
    classes: Sequence[str],
    where: str,
) -> list[DetectionRecord]:
    """Relabel ``records`` (labelled by ``found``) to ``classes`` by name; DataError on a name ``classes`` lacks."""
    index = _class_index(classes, where)
    missing = [c for c in found if c not in index]
    if missing:
        raise DataError(
            f"{where}: unknown class {missing[0]!r} (classes: {', '.join(classes)})"
        )
    lut = np.array([index[c] for c in found], dtype=np.int64)
    for r in records:
        r.labels = lut[r.labels] if len(r.labels) else r.labels
    return records


# ------------------------------------------------------------------------------------------ VOC


def _xml_text(
    node: ET.Element, path: str, where: str, required: bool = True
) -> str | None:
    child = node.find(path)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise DataError(f"{where}: missing <{path}>")
        return None
    return child.text.strip()


def _voc_ids(root: Path, split: str | None) -> list[str]:
    if split is None:
        return sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        have = sorted(
            p.stem
            for p in (root / "ImageSets" / "Main").glob("*.txt")
            if "_" not in p.stem
        )
        raise DataError(
            f"{path}: split file not found (splits: {', '.join(have) or 'none'})"
        )
    return [line.split()[0] for _, line in _read_lines(path)]


def read_voc(
    root: str | Path, split: str | None = "train", classes: Sequence[str] | None = None
) -> tuple[list[DetectionRecord], list[str]]:
    """Pascal VOC ``root`` (with ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``); ``split=None``: every XML."""
    root = Path(root).expanduser()
    if not (root / "Annotations").is_dir():
        raise DataError(f"{root}: not a Pascal VOC folder (no Annotations/)")
    ids = _voc_ids(root, split)
    parsed = []
    for image_id, stem in enumerate(ids):
        xml = root / "Annotations" / f"{stem}.xml"
        if not xml.is_file():
            raise DataError(
                f"{xml}: annotation file not found (listed in split {split!r})"
            )
        try:
            tree = ET.parse(xml).getroot()
        except (ET.ParseError, OSError) as e:
            raise DataError(f"{xml}: cannot be read as XML ({_one_line(e)})") from None
        filename = (
            _xml_text(tree, "filename", str(xml), required=False) or f"{stem}.jpg"
        )
        image = root / "JPEGImages" / filename
        if not image.is_file():
            raise DataError(f"{xml}: image {image} not found")
        w_text, h_text = (
            _xml_text(tree, "size/width", str(xml), False),
            _xml_text(tree, "size/height", str(xml), False),
        )
        w = int(_number(w_text, str(xml), "width")) if w_text is not None else 0
        h = int(_number(h_text, str(xml), "height")) if h_text is not None else 0
        if (
            w <= 0 or h <= 0
        ):  # some tools write no or a zero <size>: the image header has it
            w, h = image_size(image, str(xml))
        objects = []
        for k, obj in enumerate(tree.findall("object")):
            where = f"{xml} object {k}"
            name = _xml_text(obj, "name", where)
            diff = _xml_text(obj, "difficult", where, required=False)
            box = [
                _number(_xml_text(obj, f"bndbox/{t}", where), where, t)
                for t in ("xmin", "ymin", "xmax", "ymax")
            ]
            objects.append(
                (
                    name,
                    box[0] - 1.0,
                    box[1] - 1.0,
                    box[2],
                    box[3],
                    diff not in (None, "0"),
                )
            )
        parsed.append((xml, image, w, h, image_id, objects))
    if classes is not None:
        names = list(classes)
    else:  # names found, plus those of VOC's per-class split lists (<class>_<split>.txt) for absent classes
        listed = (
            {
                f.stem[: -len(split) - 1]
                for f in (root / "ImageSets" / "Main").glob(f"*_{split}.txt")
            }
            if split
            else set()
        )
        found = {o[0] for p in parsed for o in p[5]}
        unlisted = sorted(found - listed) if listed else []
        if unlisted:
            warnings.warn(
                f"{root}: class {unlisted[0]!r} ({len(unlisted)} class(es) in all) is in Annotations/ but has no "
                f"ImageSets/Main/{unlisted[0]}_{split}.txt list; it becomes a class of its own (list it, or "
                "fix the object names)",
                stacklevel=2,
            )
        names = sorted(found | listed)
    index = _class_index(names, str(root)) if names else {}
    records = []
    for xml, image, w, h, image_id, objects in parsed:
        for k, o in enumerate(objects):
            if o[0] not in index:
                raise DataError(
                    f"{xml} object {k}: unknown class {o[0]!r} (classes: {', '.join(names)})"
                )
        boxes = check_boxes(
            np.array([o[1:5] for o in objects], dtype=np.float32), w, h, xml
        )
        records.append(
            DetectionRecord(
                image,
                w,
                h,
                boxes,
                [index[o[0]] for o in objects],
                [o[5] for o in objects],
                image_id,
            )
        )
    return records, names


def _fmt(v: float) -> str:
    r = round(float(v))
    return (
        str(r)
        if abs(float(v) - r) < 1e-4
        else f"{float(v):.4f}".rstrip("0").rstrip(".")
    )


def _output_names(records: Sequence[DetectionRecord]) -> list[str]:
    """File names for exported images: the source names when their stems are unique, else ``<image_id>``."""
    names = [r.name if r.image is not None else r.name + ".png" for r in records]
    stems = [Path(n).stem for n in names]
    if len(set(stems)) == len(stems):
        return names
    return [f"{r.image_id:08d}{Path(n).suffix}" for r, n in zip(records, names)]


def _export_image(record: DetectionRecord, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if record.image is not None:
        if record.image.resolve() != dest.resolve():
            shutil.copyfile(record.image, dest)
    else:
        Image.fromarray(load_record_image(record)).save(dest)


def _check_writable(records: Sequence[DetectionRecord], classes: Sequence[str]) -> None:
    k = len(classes)
    for r in records:
        if len(r.labels) and (r.labels.min() < 0 or r.labels.max() >= k):
            raise ValueError(
                f"{r.name}: label {int(r.labels.max())} out of range for {k} classes"
            )


def write_voc(
    records: Sequence[DetectionRecord],
    classes: Sequence[str],
    out: str | Path,
    split: str = "train",
) -> Path:
    """Write a Pascal VOC folder: ``Annotations/*.xml``, ``JPEGImages/`` (images copied),
    ``ImageSets/Main/<split>.txt`` and the per-class ``<class>_<split>.txt`` lists (replaced; they keep
    the class list, also for classes without objects). Returns ``out``."""
    out = Path(out).expanduser()
    _check_writable(records, classes)
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out / d).mkdir(parents=True, exist_ok=True)
    stems = []
    for r, name in zip(records, _output_names(records)):
        _export_image(r, out / "JPEGImages" / name)
        ann = ET.Element("annotation")
        ET.SubElement(ann, "folder").text = out.name
        ET.SubElement(ann, "filename").text = name
        size = ET.SubElement(ann, "size")
        for tag, v in (("width", r.width), ("height", r.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(int(v))
        ET.SubElement(ann, "segmented").text = "0"
        for (x1, y1, x2, y2), label, diff in zip(
            r.boxes.tolist(), r.labels.tolist(), r.difficult.tolist()
        ):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = classes[label]
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = "1" if diff else "0"
            bb = ET.SubElement(obj, "bndbox")
            for tag, v in (
                ("xmin", x1 + 1),
                ("ymin", y1 + 1),
                ("xmax", x2),
                ("ymax", y2),
            ):
                ET.SubElement(bb, tag).text = _fmt(v)
        ET.indent(ann)
        ET.ElementTree(ann).write(
            out / "Annotations" / f"{Path(name).stem}.xml", encoding="utf-8"
        )
        stems.append(Path(name).stem)
    main = out / "ImageSets" / "Main"
    (main / f"{split}.txt").write_text(
        "".join(s + "\n" for s in stems), encoding="utf-8"
    )
    for k, c in enumerate(
        classes
    ):  # VOC's per-class lists: 1 present, 0 only difficult, -1 absent
        flags = [
            1
            if (r.labels[~r.difficult] == k).any()
            else 0
            if (r.labels == k).any()
            else -1
            for r in records
        ]
        (main / f"{c}_{split}.txt").write_text(
            "".join(f"{s} {f:2d}\n" for s, f in zip(stems, flags)), encoding="utf-8"
        )
    return out


# ------------------------------------------------------------------------------------------ COCO


def _need(d: Any, keys: Iterable[str], where: str) -> None:
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected an object, got {type(d).__name__}")
    for key in keys:
        if key not in d:
            raise DataError(f"{where}: missing {key!r}")


def read_coco(
    json_path: str | Path, image_root: str | Path | None = None, masks: bool = False
) -> tuple[list[DetectionRecord], list[str]]:
    """A COCO detection JSON; images under ``image_root`` (default: the JSON's folder, then its
    ``images/``). With ``masks``, every annotation needs a valid ``segmentation`` (polygons or RLE,
    :func:`~convision.data.instance_masks.check_coco_segmentation`), kept in ``record.masks``."""
    path = Path(json_path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot be read as JSON ({_one_line(e)})") from None
    _need(data, ("images", "categories"), str(path))
    if not isinstance(data["images"], list) or not isinstance(data["categories"], list):
        raise DataError(f"{path}: 'images' and 'categories' must be lists")
    cats = []
    for k, c in enumerate(data["categories"]):
        _need(c, ("id", "name"), f"{path} category {k}")
        cats.append(
            (int(_number(c["id"], f"{path} category {k}", "id")), str(c["name"]))
        )
    cats.sort()
    if len({c for c, _ in cats}) != len(cats):
        raise DataError(f"{path}: duplicate category ids")
    classes = [n for _, n in cats]
    _class_index(classes, str(path))
    cat_index = {c: k for k, (c, _) in enumerate(cats)}
    roots = (
        [Path(image_root).expanduser()]
        if image_root is not None
        else [path.parent, path.parent / "images"]
    )
    images: dict[int, dict[str, Any]] = {}
    for k, im in enumerate(data["images"]):
        where = f"{path} image {k}"
        _need(im, ("id", "file_name"), where)
        image_id = int(_number(im["id"], where, "id"))
        if image_id in images:
            raise DataError(f"{where}: duplicate image id {image_id}")
        file = next(
            (r / im["file_name"] for r in roots if (r / im["file_name"]).is_file()),
            roots[0] / im["file_name"],
        )
        if "width" in im and "height" in im:
            w, h = (
                int(_number(im["width"], where, "width")),
                int(_number(im["height"], where, "height")),
            )
            if not file.is_file():
                raise DataError(f"{where}: image {file} not found")
        else:
            w, h = image_size(file, where)
        images[image_id] = {
            "file": file,
            "w": w,
            "h": h,
            "boxes": [],
            "labels": [],
            "difficult": [],
            "segs": [],
            "where": where,
        }
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise DataError(f"{path}: 'annotations' must be a list")
    for k, a in enumerate(anns):
        where = f"{path} annotation {k}"
        _need(a, ("image_id", "category_id", "bbox"), where)
        rec = images.get(a["image_id"])
        if rec is None:
            raise DataError(f"{where}: unknown image_id {a['image_id']!r}")
        if a["category_id"] not in cat_index:
            raise DataError(f"{where}: unknown category_id {a['category_id']!r}")
        bbox = a["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{where}: 'bbox' must be [x, y, w, h], got {bbox!r}")
        x, y, w, h = (_number(v, where, n) for v, n in zip(bbox, ("x", "y", "w", "h")))
        if w <= 0 or h <= 0:
            raise DataError(f"{where}: bbox {bbox} has zero or negative width/height")
        rec["boxes"].append(
            check_boxes(
                np.array([[x, y, x + w, y + h]]), rec["w"], rec["h"], where, "box"
            )[0]
        )
        if masks:
            from convision.data.instance_masks import check_coco_segmentation

            if "segmentation" not in a:
                raise DataError(
                    f"{where}: missing 'segmentation' (Mask R-CNN needs masks)"
                )
            tol = clip_tolerance(max(rec["w"], rec["h"]))
            check_coco_segmentation(a["segmentation"], rec["w"], rec["h"], where, tol)
            rec["segs"].append(a["segmentation"])
        rec["labels"].append(cat_index[a["category_id"]])
        rec["difficult"].append(bool(a.get("iscrowd", 0)) or bool(a.get("ignore", 0)))
    records = [
        DetectionRecord(
            r["file"],
            r["w"],
            r["h"],
            np.array(r["boxes"], dtype=np.float32).reshape(-1, 4),
            r["labels"],
            r["difficult"],
            image_id,
            masks=("coco", r["segs"]) if masks else None,
        )
        for image_id, r in images.items()
    ]
    return records, classes


def write_coco(
    records: Sequence[DetectionRecord], classes: Sequence[str], out_json: str | Path
) -> Path:
    """Write a COCO JSON (category ids ``1..K``, ``difficult`` as ``iscrowd``) with the images copied to
    ``<json folder>/images/``. Returns the JSON path."""
    out_json = Path(out_json).expanduser()
    _check_writable(records, classes)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        ids = list(range(1, len(records) + 1))
    images, anns = [], []
    for r, image_id, name in zip(records, ids, _output_names(records)):
        _export_image(r, out_json.parent / "images" / name)
        images.append(
            {
                "id": int(image_id),
                "file_name": name,
                "width": int(r.width),
                "height": int(r.height),
            }
        )
        for (x1, y1, x2, y2), label, diff in zip(
            r.boxes.tolist(), r.labels.tolist(), r.difficult.tolist()
        ):
            w, h = x2 - x1, y2 - y1
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": int(image_id),
                    "category_id": int(label) + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": int(diff),
                }
            )
    cats = [
        {"id": k + 1, "name": c, "supercategory": "none"} for k, c in enumerate(classes)
    ]
    out_json.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}),
        encoding="utf-8",
    )
    return out_json


# ------------------------------------------------------------------------------------------ YOLO


def _yaml(root: Path) -> dict[str, Any] | None:
    for name in ("data.yaml", "dataset.yaml"):
        p = root / name
        if p.is_file():
            import yaml

            try:
                data = yaml.safe_load(p.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
                raise DataError(
                    f"{p}: cannot be read as YAML ({_one_line(e)})"
                ) from None
            if not isinstance(data, dict):
                raise DataError(f"{p}: expected a mapping with 'names'")
            data["__path__"] = p
            return data
    return None


def _yolo_names(root: Path) -> list[str] | None:
    for name in ("classes.txt", "names.txt"):
        p = root / name
        if p.is_file():
            return [line for _, line in _read_lines(p)]
    data = _yaml(root)
    if data is None or "names" not in data:
        return None
    names = data["names"]
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DataError(
                f"{data['__path__']}: 'names' keys must be class ids 0..K-1"
            ) from None
        if keys != list(range(len(keys))):
            raise DataError(
                f"{data['__path__']}: 'names' keys must be 0..{len(keys) - 1}, got {keys}"
            )
        by_id = {int(k): v for k, v in names.items()}
        return [str(by_id[k]) for k in keys]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise DataError(
        f"{data['__path__']}: 'names' must be a list or a {{id: name}} mapping"
    )


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


def _yolo_dirs(root: Path, split: str | None) -> tuple[Path, Path]:
    images = root / "images"
    if split is None:
        if not images.is_dir():
            raise DataError(f"{root}: not a YOLO folder (no images/)")
        if not any(_is_image(p) for p in images.iterdir()):
            subs = sorted(p.name for p in images.iterdir() if p.is_dir())
            if subs:
                raise DataError(
                    f"{images}: holds splits {', '.join(subs)}; pass a split"
                )
        return images, root / "labels"
    if (images / split).is_dir():
        return images / split, root / "labels" / split
    data = _yaml(root)
    entry = data.get(split) if data else None
    if isinstance(entry, str):
        base = Path(data.get("path") or root)
        base = base if base.is_absolute() else root / base
        d = Path(entry) if Path(entry).is_absolute() else base / entry
        if d.is_dir():
            parts = list(d.parts)
            if "images" in parts:
                i = len(parts) - 1 - parts[::-1].index("images")
                parts[i] = "labels"
            return d, Path(*parts)
    raise DataError(
        f"{root}: YOLO split {split!r} not found (expected images/{split}/)"
    )


def read_yolo(
    root: str | Path, split: str | None = None
) -> tuple[list[DetectionRecord], list[str]]:
    """A YOLO folder: ``images/`` + ``labels/``, or ``images/<split>/`` + ``labels/<split>/`` (see the module notes).

    ``root`` may also be the ``data.yaml`` file. Without a names file the classes are ``"0" .. "<max id>"``
    (with a warning).
    """
    root = Path(root).expanduser()
    if root.is_file() and root.suffix.lower() in (".yaml", ".yml"):
        root = root.parent
    if not root.is_dir():
        raise DataError(f"{root}: YOLO folder not found")
    image_dir, label_dir = _yolo_dirs(root, split)
    names = _yolo_names(root)
    files = sorted(p for p in image_dir.iterdir() if _is_image(p))
    stems = {p.stem for p in files}
    if label_dir.is_dir():
        for lab in sorted(label_dir.glob("*.txt")):
            if lab.stem not in stems and lab.name != "classes.txt":
                raise DataError(f"{lab}: label file without an image in {image_dir}")
    raw = []
    for image_id, file in enumerate(files):
        lab = label_dir / f"{file.stem}.txt"
        rows: list[list[float]] = []
        cls: list[int] = []
        places: list[str] = []
        if lab.is_file():
            w, h = image_size(file, str(lab))
            for n, line in _read_lines(lab):
                where = f"{lab} line {n}"
                parts = line.split()
                if len(parts) != 5:
                    raise DataError(
                        f"{where}: expected 'class cx cy w h' (5 values), got {len(parts)}"
                    )
                c = _number(parts[0], where, "class id")
                if c != int(c) or c < 0 or (names is not None and c >= len(names)):
                    k = len(names) if names is not None else 0
                    raise DataError(
                        f"{where}: class id {parts[0]} out of range (0..{k - 1})"
                    )
                cx, cy, bw, bh = (
                    _number(v, where, t)
                    for v, t in zip(parts[1:], ("cx", "cy", "w", "h"))
                )
                rows.append(
                    [
                        (cx - bw / 2) * w,
                        (cy - bh / 2) * h,
                        (cx + bw / 2) * w,
                        (cy + bh / 2) * h,
                    ]
                )
                cls.append(int(c))
                places.append(f"line {n}")
        else:
            w, h = image_size(file, str(image_dir))
        raw.append((file, lab, w, h, rows, cls, image_id, places))
    if names is None:
        top = max((c for r in raw for c in r[5]), default=0)
        names = [str(k) for k in range(top + 1)]
        warnings.warn(
            f"{root}: no classes.txt, names.txt or data.yaml names; classes are the ids 0..{top}",
            stacklevel=2,
        )
    records = []
    for file, lab, w, h, rows, cls, image_id, places in raw:
        boxes = check_boxes(np.array(rows, dtype=np.float32), w, h, lab, places=places)
        records.append(
            DetectionRecord(file, w, h, boxes, cls, np.zeros(len(cls), bool), image_id)
        )
    return records, names


def write_yolo(
    records: Sequence[DetectionRecord],
    classes: Sequence[str],
    out: str | Path,
    split: str | None = None,
) -> Path:
    """Write a YOLO folder: ``images/``, ``labels/`` (``images/<split>/``, ``labels/<split>/`` with a split),
    ``classes.txt`` and ``data.yaml``. Normalised coordinates with 7 decimals; every record gets a label
    file (empty for negatives); ``difficult`` is not kept. Returns ``out``."""
    out = Path(out).expanduser()
    _check_writable(records, classes)
    sub = Path(split) if split else Path()
    (out / "images" / sub).mkdir(parents=True, exist_ok=True)
    (out / "labels" / sub).mkdir(parents=True, exist_ok=True)
    for r, name in zip(records, _output_names(records)):
        _export_image(r, out / "images" / sub / name)
        lines = []
        for (x1, y1, x2, y2), label in zip(r.boxes.tolist(), r.labels.tolist()):
            cx, cy = (x1 + x2) / 2 / r.width, (y1 + y2) / 2 / r.height
            bw, bh = (x2 - x1) / r.width, (y2 - y1) / r.height
            lines.append(f"{label} {cx:.7f} {cy:.7f} {bw:.7f} {bh:.7f}\n")
        (out / "labels" / sub / f"{Path(name).stem}.txt").write_text(
            "".join(lines), encoding="utf-8"
        )
    (out / "classes.txt").write_text(
        "".join(f"{c}\n" for c in classes), encoding="utf-8"
    )
    import yaml

    meta = _yaml(out) or {}
    meta.pop("__path__", None)
    meta.update(
        {
            "path": ".",
            "names": {k: c for k, c in enumerate(classes)},
            "nc": len(classes),
        }
    )
    if split:
        meta[split] = f"images/{split}"
    else:
        meta.setdefault("train", "images")
        meta.setdefault("val", "images")
    (out / "data.yaml").write_text(
        yaml.safe_dump(meta, sort_keys=False), encoding="utf-8"
    )
    return out


# ------------------------------------------------------------------------------------------ conversion


def detect_format(path: str | Path) -> str:
    """``"voc"`` (a folder with ``Annotations/`` or ``SegmentationObject/``), ``"coco"`` (a ``.json``
    file), ``"instances"`` (a folder with ``images/`` and ``instances/``: instance-id PNGs,
    :func:`~convision.data.instance_masks.read_instance_folder`) or ``"yolo"`` (a folder with
    ``images/``, or its ``data.yaml``); DataError otherwise."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: not found")
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "coco"
        if p.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
    elif (p / "Annotations").is_dir() or (p / "SegmentationObject").is_dir():
        return "voc"
    elif (p / "images").is_dir() and (p / "instances").is_dir():
        return "instances"
    elif (p / "images").is_dir():
        return "yolo"
    raise DataError(
        f"{p}: unknown detection data format (expected a VOC folder with Annotations/, "
        f"a COCO .json file, or a YOLO folder with images/ and labels/)"
    )


def read_detection(
    path: str | Path,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    masks: bool = False,
) -> tuple[list[DetectionRecord], list[str]]:
    """Read any of the formats (:func:`detect_format`); with ``classes``, labels are mapped to them by name.
    Boxes clipped to their image are reported in one warning (module notes). With ``masks`` the
    records carry instance masks (COCO segmentations, VOC ``SegmentationObject``; YOLO has none)."""
    fmt = detect_format(path)
    counts: list[int] = []
    token = _clip_log.set(counts)
    try:
        if fmt == "voc" and masks:
            from convision.data.instance_masks import read_voc_instances

            records, found = read_voc_instances(path, split)
        elif fmt == "voc":
            records, found = read_voc(path, split, classes)
        elif fmt == "instances":
            from convision.data.instance_masks import read_instance_folder

            records, found = read_instance_folder(path, split)
        elif fmt == "yolo" and masks:
            raise DataError(
                f"{path}: YOLO box labels have no instance masks (use COCO segmentations or VOC "
                "SegmentationObject)"
            )
        else:
            records, found = (
                read_coco(path, masks=masks)
                if fmt == "coco"
                else read_yolo(path, split)
            )
        remap = fmt != "voc" or masks  # read_voc maps to classes itself
        if remap and classes is not None and list(classes) != list(found):
            records = remap_labels(records, found, classes, str(path))
            found = list(classes)
    finally:
        _clip_log.reset(token)
    if counts:
        where = f"{path}" + (f" ({split})" if split else "")
        warnings.warn(
            f"{where}: clipped {sum(counts)} box(es) in {len(counts)} file(s) sticking out of their image by at "
            f"most max({CLIP_TOLERANCE_PX:g} px, {CLIP_TOLERANCE_FRACTION:.0%} of the side); see --debug for "
            "the files",
            stacklevel=2,
        )
    return records, list(found)


def convert(
    src: str | Path,
    dst: str | Path,
    to: str,
    split: str | None = None,
    *,
    num_images: int = 100,
    image_size: int | tuple[int, int] = 128,
    num_classes: int = 6,
    seed: int = 0,
) -> Path:
    """Convert the detection data at ``src`` (format auto-detected, or ``"synthetic"`` for the built-in
    scenes: ``num_images`` scenes of ``image_size`` with ``num_classes`` classes, background included,
    validation scenes when ``split == "val"``) to ``to`` (``voc``, ``coco`` or ``yolo``) at ``dst``.

    ``split`` selects the source split (VOC ``ImageSets/Main/<split>.txt``, YOLO ``images/<split>/``)
    and names the written one (VOC split file, YOLO subfolders, COCO ``<split>.json`` when ``dst`` is
    a folder). Returns the written folder or JSON file.
    """
    if to not in FORMATS:
        raise ConfigError(f"to: expected one of {', '.join(FORMATS)}, got {to!r}")
    if str(src) == "synthetic":
        from convision.data.segmentation import VAL_INDEX_OFFSET

        records, classes = synthetic_records(
            num_images,
            image_size,
            num_classes,
            seed,
            offset=VAL_INDEX_OFFSET if split == "val" else 0,
        )
    else:
        records, classes = read_detection(src, split)
    dst = Path(dst).expanduser()
    folder = dst if not (to == "coco" and dst.suffix.lower() == ".json") else dst.parent
    for p in (folder, *folder.parents):
        if p.exists() and not p.is_dir():
            raise ConfigError(f"dst: {p} is a file, not a folder")
    if to == "coco" and dst.suffix.lower() == ".json" and dst.is_dir():
        raise ConfigError(f"dst: {dst} is a folder, not a .json file")
    if to == "voc":
        return write_voc(records, classes, dst, split or "train")
    if to == "yolo":
        return write_yolo(records, classes, dst, split)
    out_json = (
        dst if dst.suffix.lower() == ".json" else dst / f"{split or 'annotations'}.json"
    )
    return write_coco(records, classes, out_json)
