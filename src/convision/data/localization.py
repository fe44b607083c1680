"""Single-object localization data: the built-in scenes with one shape, or an annotation file.

Every data set returns ``(image, target)`` with ``target = {"box": BoundingBoxes [1,4] xyxy in
pixels, "label": int}``; without transforms ``image`` is a ``tv_tensors.Image`` uint8 ``[3,H,W]``
(RGB). With :func:`localization_train_transforms` / :func:`localization_eval_transforms` a sample
is ``(image float32 normalised [3,S,S], box float32 [4] normalised xyxy in [0,1], label)``.
Attributes: ``classes``, ``targets`` (labels), ``name(i)``, ``load(i) -> HxWx3 uint8``,
``annotation(i) -> (box xyxy pixels, label)``, ``validate()``, ``select(indices)``.

Box convention: ``(x1, y1, x2, y2)`` in pixel edges (continuous coordinates, ``x2``/``y2``
exclusive as in :func:`~convision.data.synthetic.make_scene`): a box covering columns 3..9 is
``x1=3, x2=10``. A valid box has ``0 <= x1 < x2 <= W`` and ``0 <= y1 < y2 <= H``.

Sources (:func:`build_localization_dataset` picks from ``data``):

``synthetic``
    :func:`~convision.data.synthetic.make_scene` with ``max_objects=1``: every scene then draws
    exactly one shape (checked: the first 2000 64x64 scenes all keep it visible). Should a shape
    ever vanish (fewer than 4 visible pixels), the scene is replaced by one from a reserved index
    range as in classification; if a scene ever held several shapes, the largest visible one
    (``scene.label``) would be the target. Classes are the shapes, without "background".
``file.csv``
    ``path,class,x1,y1,x2,y2`` rows (optional header with those names), paths relative to the CSV.
``file.json``
    A list of ``{"image": path, "class": name, "box": [x1, y1, x2, y2]}``, paths relative to the file.

Box format of the files (``box_format``, ``--box-format``): ``xyxy`` (the two corners, default),
``xywh`` (top-left corner, width, height: the lecture notes' ``(x, y, w, h)``) or ``cxcywh``
(centre, width, height), in pixels. Boxes are converted to ``xyxy`` on reading
(``torchvision.ops.box_convert``), so everything after the reader sees corners; the checks below
apply to the converted box.

For files, classes are the sorted class names of the training file (or the model's / training
split's when given). Every entry is checked when the file is read (image present, class known,
positive width and height, box inside the image read from the image header); the first bad one
raises a one-line DataError naming the file and the line (CSV, 1-based) or entry (JSON, 0-based).
Without ``val_data`` the validation split is a stratified hold-out of ``val_fraction``.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2

from convision.data.classification import (
    VAL_INDEX_OFFSET,
    check_synthetic_settings,
    holdout_split,
)
from convision.data.images import to_image
from convision.data.io import is_header, read_image
from convision.data.synthetic import make_scene, synthetic_classes
from convision.errors import ConfigError, DataError

SPLITS = ("train", "val")
_RESERVE = 500_000_000
CSV_HEADER = ["path", "class", "x1", "y1", "x2", "y2"]
#: box formats of annotation files -> the names of their four numbers
BOX_FORMATS: dict[str, tuple[str, str, str, str]] = {
    "xyxy": ("x1", "y1", "x2", "y2"),
    "xywh": ("x", "y", "w", "h"),
    "cxcywh": ("cx", "cy", "w", "h"),
}


def check_box_format(box_format: str) -> str:
    """``box_format`` if it is one of :data:`BOX_FORMATS`, else a one-line ConfigError."""
    if box_format not in BOX_FORMATS:
        raise ConfigError(
            f"box_format: unknown {box_format!r} (expected {' | '.join(BOX_FORMATS)})"
        )
    return box_format


def to_xyxy(
    boxes: Sequence[Sequence[float]] | torch.Tensor, box_format: str
) -> torch.Tensor:
    """``[N, 4]`` boxes in ``box_format`` -> ``[N, 4]`` float64 corners ``(x1, y1, x2, y2)``."""
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    fmt = check_box_format(box_format)
    return b if fmt == "xyxy" else box_convert(b, fmt, "xyxy")


def from_xyxy(
    boxes: Sequence[Sequence[float]] | torch.Tensor, box_format: str
) -> torch.Tensor:
    """``[N, 4]`` corners -> ``[N, 4]`` float64 boxes in ``box_format`` (inverse of :func:`to_xyxy`)."""
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    fmt = check_box_format(box_format)
    return b if fmt == "xyxy" else box_convert(b, "xyxy", fmt)


class LocalizationDataset(Dataset):
    """Common interface; subclasses set ``classes`` and implement ``__len__``, ``load``, ``annotation``, ``name``."""

    classes: list[str]
    transforms: Callable | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def annotation(self, i: int) -> tuple[list[float], int]:
        raise NotImplementedError

    def name(self, i: int) -> str:
        raise NotImplementedError

    @property
    def targets(self) -> list[int]:
        return [self.annotation(i)[1] for i in range(len(self))]

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        image = to_image(self.load(i))
        box, label = self.annotation(i)
        h, w = image.shape[-2:]
        target = {
            "box": tv_tensors.BoundingBoxes(
                torch.tensor([box], dtype=torch.float32),
                format="XYXY",
                canvas_size=(h, w),
            ),
            "label": int(label),
        }
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target

    def validate(self, progress: bool = False) -> None:
        for i in range(len(self)):
            self.load(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.num_classes} classes)"


class SyntheticLocalization(LocalizationDataset):
    """The built-in scenes with one shape each (see the module notes); labels ``scene.label - 1``."""

    def __init__(
        self,
        split: str = "train",
        num_images: int = 400,
        image_size: int | tuple[int, int] = 64,
        num_classes: int = 6,
        seed: int = 0,
        transforms: Callable | None = None,
    ) -> None:
        self.image_size = check_synthetic_settings(
            "localization", split, num_images, image_size, num_classes, seed
        )
        self.split, self.seed, self.scene_classes = split, int(seed), int(num_classes)
        self.classes = synthetic_classes(num_classes)[1:]
        self.offset = 0 if split == "train" else VAL_INDEX_OFFSET
        self.items = list(range(int(num_images)))
        self._cache: dict[int, int] = {}
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.items)

    def _make(self, index: int):
        return make_scene(
            index,
            seed=self.seed,
            image_size=self.image_size,
            num_classes=self.scene_classes,
            max_objects=1,
        )

    def _index(self, k: int) -> int:
        if k not in self._cache:
            index, t = self.offset + k, 0
            while (
                self._make(index).label == 0
            ):  # no visible shape: reserved replacement
                index, t = self.offset + _RESERVE + k * 1000 + t, t + 1
            self._cache[k] = index
        return self._cache[k]

    def scene(self, i: int):
        return self._make(self._index(self.items[i]))

    def load(self, i: int) -> np.ndarray:
        return self.scene(i).image

    def annotation(self, i: int) -> tuple[list[float], int]:
        s = self.scene(i)
        k = 0 if len(s.labels) == 1 else _largest(s)
        return [float(v) for v in s.boxes[k]], int(s.labels[k]) - 1

    def __getitem__(self, i: int) -> tuple[Any, Any]:  # one scene generation per sample
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        s = self.scene(i % len(self))
        k = 0 if len(s.labels) == 1 else _largest(s)
        image = to_image(s.image)
        h, w = image.shape[-2:]
        target = {
            "box": tv_tensors.BoundingBoxes(
                torch.from_numpy(s.boxes[k : k + 1].copy()),
                format="XYXY",
                canvas_size=(h, w),
            ),
            "label": int(s.labels[k]) - 1,
        }
        return (
            self.transforms(image, target)
            if self.transforms is not None
            else (image, target)
        )

    def select(self, indices: Sequence[int]) -> "SyntheticLocalization":
        out = copy.copy(self)
        out.items = [self.items[i] for i in indices]
        return out

    def name(self, i: int) -> str:
        return f"synthetic/{self.split}/{self.items[i]:06d}"

    def validate(self, progress: bool = False) -> None:
        """Generated data cannot be malformed; the first scene is generated as a check."""
        self.load(0)


def _largest(scene) -> int:
    counts = np.bincount(scene.instances.ravel(), minlength=len(scene.labels) + 1)[1:]
    return int(np.argmax(counts))


class AnnotatedLocalization(LocalizationDataset):
    """Images listed in a CSV or JSON annotation file (see the module notes), boxes in
    ``box_format``; everything is checked on reading."""

    def __init__(
        self,
        path: str | Path,
        transforms: Callable | None = None,
        classes: Sequence[str] | None = None,
        box_format: str = "xyxy",
    ) -> None:
        self.path = Path(path).expanduser()
        self.box_format = check_box_format(box_format)
        if not self.path.is_file():
            raise DataError(f"{self.path}: annotation file not found")
        names = BOX_FORMATS[self.box_format]
        entries = (
            _read_json(self.path, names)
            if self.path.suffix.lower() == ".json"
            else _read_csv(self.path, names)
        )
        if not entries:
            raise DataError(f"{self.path}: no annotations")
        self.classes = (
            list(classes)
            if classes is not None
            else sorted({c for _, _, c, _ in entries})
        )
        index = {c: k for k, c in enumerate(self.classes)}
        base = self.path.parent
        self.files: list[Path] = []
        self.boxes: list[list[float]] = []
        self.labels: list[int] = []
        for where, file, cls, box in entries:
            at = f"{self.path} {where}"
            if cls not in index:
                raise DataError(
                    f"{at}: unknown class {cls!r} (classes: {', '.join(self.classes)})"
                )
            given = (
                ""
                if self.box_format == "xyxy"
                else f" (read as {self.box_format} {box})"
            )
            box = to_xyxy(box, self.box_format)[0].tolist()
            x1, y1, x2, y2 = box
            if not x2 > x1 or not y2 > y1:
                raise DataError(
                    f"{at}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}]{given} has zero or negative width/height (expected x1 < x2, y1 < y2)"
                )
            p = Path(file).expanduser()
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                raise DataError(f"{at}: {file}: image file not found")
            try:
                with Image.open(p) as im:
                    w, h = im.size
            except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault
                raise DataError(
                    f"{at}: {file}: cannot be read as an image ({' '.join(str(e).split())})"
                ) from None
            if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
                raise DataError(
                    f"{at}: box [{x1:g}, {y1:g}, {x2:g}, {y2:g}]{given} is outside the {w}x{h} image {file}"
                )
            self.files.append(p)
            self.boxes.append([float(v) for v in box])
            self.labels.append(index[cls])
        self.items = list(range(len(self.files)))
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> np.ndarray:
        return read_image(self.files[self.items[i]])

    def annotation(self, i: int) -> tuple[list[float], int]:
        k = self.items[i]
        return list(self.boxes[k]), self.labels[k]

    @property
    def targets(self) -> list[int]:
        return [self.labels[k] for k in self.items]

    def select(self, indices: Sequence[int]) -> "AnnotatedLocalization":
        out = copy.copy(self)
        out.items = [self.items[i] for i in indices]
        return out

    def name(self, i: int) -> str:
        return str(self.files[self.items[i]])


def _number(text: Any, where: str, what: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} is not a number: {text!r}") from None
    if not math.isfinite(v):
        raise DataError(f"{where}: {what} is not finite: {text!r}")
    return v


def _read_csv(
    path: Path, names: Sequence[str] = BOX_FORMATS["xyxy"]
) -> list[tuple[str, str, str, list[float]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [
                (n, r)
                for n, r in enumerate(csv.reader(f), start=1)
                if r and any(c.strip() for c in r)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(
            f"{path}: cannot be read as CSV ({' '.join(str(e).split())})"
        ) from None
    if rows and is_header(rows[0][1]):
        rows = rows[1:]
    out = []
    for n, row in rows:
        where = f"line {n}"
        if len(row) != 6:
            raise DataError(
                f"{path} {where}: expected 6 columns 'path,class,{','.join(names)}', got {len(row)}"
            )
        file, cls = row[0].strip(), row[1].strip()
        if not file or not cls:
            raise DataError(f"{path} {where}: empty path or class")
        box = [
            _number(v.strip(), f"{path} {where}", name)
            for v, name in zip(row[2:], names)
        ]
        out.append((where, file, cls, box))
    return out


def _read_json(
    path: Path, names: Sequence[str] = BOX_FORMATS["xyxy"]
) -> list[tuple[str, str, str, list[float]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"{path}: cannot be read as JSON ({' '.join(str(e).split())})"
        ) from None
    if not isinstance(data, list):
        raise DataError(
            f'{path}: expected a list of {{"image", "class", "box"}} entries, got {type(data).__name__}'
        )
    out = []
    for k, e in enumerate(data):
        where = f"entry {k}"
        if not isinstance(e, dict) or not {"image", "class", "box"} <= set(e):
            raise DataError(
                f"{path} {where}: expected an object with 'image', 'class' and 'box'"
            )
        box = e["box"]
        if not isinstance(box, list) or len(box) != 4:
            raise DataError(
                f"{path} {where}: 'box' must be [{', '.join(names)}], got {box!r}"
            )
        box = [_number(v, f"{path} {where}", name) for v, name in zip(box, names)]
        if not isinstance(e["image"], str) or not e["image"].strip():
            raise DataError(f"{path} {where}: 'image' must be a path")
        out.append((where, e["image"].strip(), str(e["class"]).strip(), box))
    return out


# ------------------------------------------------------------------------------------------ transforms


class LocalizationTransform:
    """A picklable v2 pipeline on ``(Image, {"box": BoundingBoxes, "label"})`` ending in
    ``(image float [3,S,S], box [4] normalised xyxy, label)``."""

    def __init__(self, steps: Sequence[Callable]) -> None:
        self.pipeline = v2.Compose(list(steps))

    def __call__(
        self, image: Any, target: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        img, box = self.pipeline(image, target["box"])
        h, w = img.shape[-2:]
        b = box.as_subclass(torch.Tensor).reshape(4).float() / torch.tensor(
            [w, h, w, h], dtype=torch.float32
        )
        return img.as_subclass(torch.Tensor), b.clamp(0.0, 1.0), int(target["label"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline!r})"


def _tail(mean: Sequence[float], std: Sequence[float]) -> list[Callable]:
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def localization_eval_transforms(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> LocalizationTransform:
    """Resize the whole image to ``image_size x image_size`` (no crop, so no object is cut), float, normalise."""
    s = int(image_size)
    return LocalizationTransform([v2.Resize((s, s), antialias=True)] + _tail(mean, std))


def localization_train_transforms(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    hflip: bool = True,
    color_jitter: float = 0.0,
) -> LocalizationTransform:
    """Resize to ``image_size x image_size`` -> random horizontal flip (box flipped too) -> colour jitter -> float -> normalise."""
    s = int(image_size)
    steps: list[Callable] = [v2.Resize((s, s), antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if color_jitter > 0:
        steps.append(
            v2.ColorJitter(
                brightness=color_jitter, contrast=color_jitter, saturation=color_jitter
            )
        )
    return LocalizationTransform(steps + _tail(mean, std))


def localization_collate(
    batch: list,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[(image, box, label)] -> (images [N,3,S,S], boxes [N,4], labels [N])``."""
    return (
        torch.stack([b[0] for b in batch]),
        torch.stack([b[1] for b in batch]),
        torch.tensor([int(b[2]) for b in batch], dtype=torch.int64),
    )


# ------------------------------------------------------------------------------------------ factory


def detect_format(data: str) -> str:
    if data == "synthetic":
        return "synthetic"
    suffix = Path(data).suffix.lower()
    if suffix in (".csv", ".json"):
        return suffix[1:]
    raise DataError(f"{data}: expected 'synthetic', a .csv or a .json annotation file")


def build_localization_dataset(
    cfg: Any,
    split: str,
    transforms: Callable | None = None,
    classes: Sequence[str] | None = None,
) -> LocalizationDataset:
    """The ``split`` of the data ``cfg`` (a LocalizeDataConfig-like object) describes."""
    if split not in SPLITS:
        raise ConfigError(f"split: expected 'train' or 'val', got {split!r}")
    box_format = check_box_format(getattr(cfg, "box_format", "xyxy"))
    fmt = detect_format(cfg.data)
    if fmt == "synthetic":
        n = cfg.num_train if split == "train" else cfg.num_val
        ds: LocalizationDataset = SyntheticLocalization(
            split, n, cfg.scene_size, cfg.num_classes, int(cfg.data_seed)
        )
    elif split == "val" and cfg.val_data:
        detect_format(cfg.val_data)
        ds = AnnotatedLocalization(
            cfg.val_data,
            classes=classes
            or AnnotatedLocalization(cfg.data, box_format=box_format).classes,
            box_format=box_format,
        )
    else:
        ds = AnnotatedLocalization(cfg.data, classes=classes, box_format=box_format)
        if not cfg.val_data:
            train_idx, val_idx = holdout_split(
                ds.targets, cfg.val_fraction, int(cfg.data_seed)
            )
            ds = ds.select(train_idx if split == "train" else val_idx)  # type: ignore[attr-defined]
    ds.transforms = transforms
    return ds
