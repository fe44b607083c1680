"""Segmentation data sets: the built-in synthetic scenes, a plain image/mask folder, Pascal VOC 2012.

Every data set returns ``(image, mask)``: without transforms a ``tv_tensors.Image`` uint8
``[3,H,W]`` (RGB) and a ``tv_tensors.Mask`` int64 ``[H,W]`` (255 = ignore); with ``transforms``
whatever ``transforms(image, mask)`` returns. Each has ``classes``, ``colors``, ``name(i)`` and
``validate()``, which reads every sample once so that bad files are reported before training.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from convision.data.io import IGNORE_INDEX, read_image, read_mask
from convision.data.synthetic import (
    MAX_SYNTHETIC_CLASSES,
    image_hw,
    make_scene,
    synthetic_classes,
    synthetic_colors,
)
from convision.errors import ConfigError, DataError
from convision.viz import voc_palette

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "val")
VAL_INDEX_OFFSET = 1_000_000
"""Synthetic validation scenes use indices ``VAL_INDEX_OFFSET + i``: never the training scenes."""

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def _to_tv(
    image: np.ndarray, mask: np.ndarray
) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    img = tv_tensors.Image(
        torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    )
    return img, tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64, copy=False)))


def _progress(it: Any, total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="img")


class SegmentationDataset(Dataset):
    """Common interface; subclasses implement ``__len__``, ``load(i) -> (HxWx3 uint8, HxW int)`` and ``name``."""

    classes: list[str]
    colors: list[tuple[int, int, int]]
    transforms: Callable | None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def name(self, i: int) -> str:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Any:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        image, mask = _to_tv(*self.load(i % len(self)))
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask

    def validate(self, progress: bool = False) -> None:
        """Read every sample once (image, mask, sizes, value range); raise the first DataError."""
        for i in _progress(range(len(self)), len(self), progress, "checking data"):
            self.load(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.num_classes} classes)"


class SyntheticSegmentation(SegmentationDataset):
    """The built-in synthetic scenes (:mod:`convision.data.synthetic`), generated on the fly.

    ``train`` uses scene indices ``0..num_images-1``, ``val`` uses
    ``VAL_INDEX_OFFSET + 0..num_images-1``: the splits never share a scene.
    """

    def __init__(
        self,
        split: str = "train",
        num_images: int = 400,
        image_size: int | tuple[int, int] = 128,
        num_classes: int = 6,
        seed: int = 0,
        transforms: Callable | None = None,
        max_objects: int = 6,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split: expected 'train' or 'val', got {split!r}")
        if not 2 <= num_classes <= MAX_SYNTHETIC_CLASSES:
            raise ConfigError(
                f"num_classes: synthetic scenes have 2..{MAX_SYNTHETIC_CLASSES} classes, got {num_classes}"
            )
        if num_images < 1:
            raise ConfigError(
                f"num_{split}: need at least 1 synthetic image, got {num_images}"
            )
        try:
            self.image_size = image_hw(image_size)
        except ValueError as e:
            raise ConfigError(f"image_size: {e}") from None
        if seed < 0:
            raise ConfigError(f"data_seed: must be non-negative, got {seed}")
        self.split, self.num_images, self.seed = split, int(num_images), int(seed)
        self.max_objects = int(max_objects)
        self.classes = synthetic_classes(num_classes)
        self.colors = synthetic_colors(num_classes)
        self.transforms = transforms
        self.offset = 0 if split == "train" else VAL_INDEX_OFFSET

    def __len__(self) -> int:
        return self.num_images

    def scene(self, i: int):
        """The full :class:`~convision.data.synthetic.Scene` (instances, boxes, labels) of sample ``i``."""
        return make_scene(
            self.offset + i,
            seed=self.seed,
            image_size=self.image_size,
            num_classes=self.num_classes,
            max_objects=self.max_objects,
        )

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.scene(i)
        return s.image, s.mask

    def name(self, i: int) -> str:
        return f"synthetic/{self.split}/{i:06d}"

    def validate(self, progress: bool = False) -> None:
        """Generated data cannot be malformed; only the first scene is generated as a check."""
        self.load(0)


class _PairedFiles(SegmentationDataset):
    """Image files with one mask file each."""

    images: list[Path]
    masks: list[Path]

    def __len__(self) -> int:
        return len(self.images)

    def name(self, i: int) -> str:
        return str(self.images[i])

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(self.images[i])
        mask = read_mask(self.masks[i], num_classes=self.num_classes)
        if image.shape[:2] != mask.shape:
            (h, w), (mh, mw) = image.shape[:2], mask.shape
            raise DataError(
                f"{self.masks[i]}: mask is {mw}x{mh} (WxH) but its image {self.images[i].name} is {w}x{h}"
            )
        return image, mask


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty, non-comment lines with their 1-based line numbers."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({' '.join(str(e).split())})") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((n, line))
    return out


def read_classes_file(path: str | Path) -> tuple[list[str], list[tuple[int, int, int]]]:
    """``classes.txt``: one class per line, ``name`` or ``name r g b`` (VOC palette colour when absent)."""
    path = Path(path)
    names: list[str] = []
    colors: list[tuple[int, int, int] | None] = []
    for n, line in _read_lines(path):
        parts = line.split()
        if len(parts) == 1:
            names.append(parts[0])
            colors.append(None)
            continue
        if len(parts) == 4:
            try:
                rgb = tuple(int(v) for v in parts[1:])
            except ValueError:
                rgb = None
            if rgb is not None and all(0 <= v <= 255 for v in rgb):
                names.append(parts[0])
                colors.append(rgb)  # type: ignore[arg-type]
                continue
        raise DataError(
            f"{path} line {n}: expected 'name' or 'name r g b' (0..255), got {line!r}"
        )
    if len(names) < 2:
        raise DataError(
            f"{path}: need at least 2 classes (background and one more), found {len(names)}"
        )
    if len(set(names)) != len(names):
        dup = next(c for c in names if names.count(c) > 1)
        raise DataError(f"{path}: class {dup!r} is listed twice")
    if len(names) > IGNORE_INDEX:
        raise DataError(
            f"{path}: at most {IGNORE_INDEX} classes (255 means ignore), found {len(names)}"
        )
    palette = voc_palette(len(names))
    return names, [c if c is not None else palette[i] for i, c in enumerate(colors)]


class SegmentationFolder(_PairedFiles):
    """A folder of images and class-index masks::

        root/images/<stem>.{jpg,jpeg,png,bmp,tif,tiff}
        root/masks/<stem>.png         class indices (8-bit grey or palette PNG), 255 = ignore
        root/train.txt, root/val.txt  optional: one stem per line
        root/classes.txt              optional: one class per line, 'name' or 'name r g b'

    Splits: with ``<split>.txt`` the listed stems. If only the other split's file exists, this
    split is every image not listed there. With neither file, the sorted stems are split 80/20:
    every fifth stem (the 5th, 10th, ...) is ``val`` (at least one when there are 2+ images).

    Classes: from ``classes.txt``; without it ``class_0..class_{K-1}`` with K = the largest mask
    value (255 excluded) + 1 over the masks of both splits, coloured with the VOC palette (this
    reads every mask once at start-up; a ``classes.txt`` avoids it).
    """

    def __init__(
        self, root: str | Path, split: str = "train", transforms: Callable | None = None
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split: expected 'train' or 'val', got {split!r}")
        self.root = root = Path(root)
        self.split = split
        self.transforms = transforms
        if not root.is_dir():
            raise DataError(f"{root}: data folder not found")
        image_dir, mask_dir = root / "images", root / "masks"
        for d in (image_dir, mask_dir):
            if not d.is_dir():
                raise DataError(
                    f"{d}: folder not found (a data folder holds images/ and masks/, or is a Pascal VOC folder)"
                )

        by_stem: dict[str, Path] = {}
        for p in sorted(image_dir.iterdir()):
            if (
                p.name.startswith(".")
                or p.suffix.lower() not in IMAGE_EXTENSIONS
                or not p.is_file()
            ):
                continue
            if p.stem in by_stem:
                raise DataError(
                    f"{p}: two images with the stem {p.stem!r} ({by_stem[p.stem].name} and {p.name})"
                )
            by_stem[p.stem] = p
        if not by_stem:
            raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")

        stems, split_file = self._split_stems(root, split, by_stem)
        self.images = [by_stem[s] for s in stems]
        self.masks = [mask_dir / f"{s}.png" for s in stems]
        for img, mask in zip(self.images, self.masks):
            if not mask.is_file():
                raise DataError(f"{img}: no mask for this image (expected {mask})")
        if not self.images:
            if split_file is not None:
                raise DataError(
                    f"{split_file}: no images for split {split!r} in {split_file.name}"
                )
            raise DataError(
                f"{root}: no images for split {split!r} ({len(by_stem)} image(s) in images/; "
                "add images or list the stems in train.txt and val.txt)"
            )

        classes_file = root / "classes.txt"
        if classes_file.is_file():
            self.classes, self.colors = read_classes_file(classes_file)
        else:
            k = self._infer_num_classes(root, by_stem, mask_dir)
            self.classes = [f"class_{i}" for i in range(k)]
            self.colors = voc_palette(k)

    @staticmethod
    def _listed(path: Path, by_stem: dict[str, Path]) -> list[str]:
        stems = []
        for n, entry in _read_lines(path):
            stem = entry
            if Path(entry).suffix.lower() in IMAGE_EXTENSIONS:
                stem = Path(entry).stem
            if stem not in by_stem:
                raise DataError(
                    f"{path} line {n}: image {entry!r} not found in {path.parent / 'images'}"
                )
            stems.append(stem)
        return stems

    def _split_stems(
        self, root: Path, split: str, by_stem: dict[str, Path]
    ) -> tuple[list[str], Path | None]:
        own, other = (
            root / f"{split}.txt",
            root / f"{'val' if split == 'train' else 'train'}.txt",
        )
        if own.is_file():
            return self._listed(own, by_stem), own
        if other.is_file():
            listed = set(self._listed(other, by_stem))
            return [s for s in sorted(by_stem) if s not in listed], None
        return default_split(sorted(by_stem), split), None

    def _all_mask_paths(
        self, root: Path, by_stem: dict[str, Path], mask_dir: Path
    ) -> list[Path]:
        stems: set[str] = set()
        for s in SPLITS:
            if (root / f"{s}.txt").is_file():
                stems.update(self._listed(root / f"{s}.txt", by_stem))
        if not stems or not all((root / f"{s}.txt").is_file() for s in SPLITS):
            stems = set(by_stem)
        paths = []
        for s in sorted(stems):
            p = mask_dir / f"{s}.png"
            if not p.is_file():
                raise DataError(f"{by_stem[s]}: no mask for this image (expected {p})")
            paths.append(p)
        return paths

    def _infer_num_classes(
        self, root: Path, by_stem: dict[str, Path], mask_dir: Path
    ) -> int:
        first: dict[int, Path] = {}  # each mask value -> the first mask holding it
        for p in self._all_mask_paths(root, by_stem, mask_dir):
            m = read_mask(p)
            for v in np.unique(m[m != IGNORE_INDEX]).tolist():
                first.setdefault(int(v), p)
        top = max(first, default=0)
        absent = [v for v in range(top + 1) if v not in first]
        if absent and top > 0:
            warnings.warn(
                f"{mask_dir}: no classes.txt, so the classes are the mask values 0..{top} ({top + 1} classes), "
                f"but {len(absent)} of them never occur (first: {absent[0]}; value {top} first in {first[top]}); "
                "add a classes.txt if that is not meant",
                stacklevel=2,
            )
        if top + 1 > IGNORE_INDEX:
            raise DataError(
                f"{mask_dir}: mask values reach {top}; at most 254 classes (255 means ignore)"
            )
        if top == 0:
            raise DataError(
                f"{mask_dir}: masks hold only class 0 (and 255 = ignore); objects need values 1, 2, ... "
                "(if 255 marks objects, store them as 1), or list the classes in classes.txt"
            )
        return top + 1


#: training crop side for real data when the images are larger (``crop_size: 0``)
DEFAULT_CROP = 320


def largest_image_size(dataset: SegmentationDataset) -> tuple[int, int]:
    """``(height, width)``: the largest height and width over the data set's images (file headers
    only for image files; generated data reports its own size)."""
    if isinstance(dataset, SyntheticSegmentation):
        return dataset.image_size
    from PIL import Image

    height = width = 0
    for path in getattr(dataset, "images", []):
        try:
            with Image.open(path) as im:
                w, h = im.size
        except OSError as e:
            raise DataError(
                f"{path}: cannot read image ({' '.join(str(e).split())})"
            ) from None
        height, width = max(height, h), max(width, w)
    if not height:
        raise DataError(f"{dataset!r}: no images")
    return height, width


def default_crop_size(
    dataset: SegmentationDataset, limit: int = DEFAULT_CROP
) -> tuple[int, int]:
    """The training crop when none is set: the data's own size, each side capped at ``limit``.

    Images smaller than the crop would otherwise be padded (with ignored labels) to ``limit``:
    160x160 photographs trained at 320x320 spend three quarters of every batch on padding.
    """
    height, width = largest_image_size(dataset)
    return min(height, limit), min(width, limit)


def default_split(stems: list[str], split: str) -> list[str]:
    """Deterministic 80/20 split of sorted ``stems``: every fifth is ``val`` (at least one of 2+)."""
    val_idx = {i for i in range(len(stems)) if i % 5 == 4}
    if not val_idx and len(stems) >= 2:
        val_idx = {len(stems) - 1}
    return [s for i, s in enumerate(stems) if (i in val_idx) == (split == "val")]


def _voc_root(root: Path) -> Path | None:
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "SegmentationClass").is_dir():
            return cand
    return None


class VOCSegmentation(_PairedFiles):
    """Pascal VOC 2012 segmentation (Everingham et al.; the data set of the FCN paper).

    ``root`` is the ``VOC2012`` folder or a folder holding ``VOCdevkit/VOC2012``. Uses
    ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs whose indices are the
    classes; 255 marks object boundaries and is ignored) and
    ``ImageSets/Segmentation/<split>.txt``. 21 classes with the VOC palette.
    """

    def __init__(
        self, root: str | Path, split: str = "train", transforms: Callable | None = None
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: data folder not found")
        voc = _voc_root(root)
        if voc is None:
            raise DataError(
                f"{root}: not a Pascal VOC 2012 folder (expected JPEGImages/ and SegmentationClass/ "
                "here or in VOCdevkit/VOC2012/)"
            )
        if not split or "/" in split or "\\" in split:
            raise ConfigError(f"split: invalid VOC split name {split!r}")
        self.root, self.split, self.transforms = voc, split, transforms
        self.classes = list(VOC_CLASSES)
        self.colors = voc_palette(len(VOC_CLASSES))
        split_file = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            raise DataError(f"{split_file}: split file not found")
        self.images, self.masks = [], []
        for n, stem in _read_lines(split_file):
            stem = stem.split()[0]
            img, mask = (
                voc / "JPEGImages" / f"{stem}.jpg",
                voc / "SegmentationClass" / f"{stem}.png",
            )
            if not img.is_file():
                raise DataError(f"{split_file} line {n}: image {img} not found")
            if not mask.is_file():
                raise DataError(f"{img}: no mask for this image (expected {mask})")
            self.images.append(img)
            self.masks.append(mask)
        if not self.images:
            raise DataError(
                f"{split_file}: no images for split {split!r} in {split_file.name}"
            )


def detect_format(root: str | Path) -> str:
    """``"voc"`` for a Pascal VOC 2012 layout, ``"folder"`` for ``images/`` + ``masks/``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    if _voc_root(root) is not None:
        return "voc"
    if (root / "images").is_dir() or (root / "masks").is_dir():
        return "folder"
    raise DataError(
        f"{root}: unknown data layout (expected images/ and masks/, or a Pascal VOC 2012 folder with "
        "JPEGImages/ and SegmentationClass/)"
    )


def build_segmentation_dataset(
    data_cfg: Any, split: str, transforms: Callable | None = None
) -> SegmentationDataset:
    """The data set that ``data_cfg`` (a :class:`convision.tasks.segment.SegmentDataConfig`-like object) names, for ``split``."""
    if split not in SPLITS:
        raise ConfigError(f"split: expected 'train' or 'val', got {split!r}")
    if data_cfg.data == "synthetic":
        return SyntheticSegmentation(
            split=split,
            num_images=data_cfg.num_train if split == "train" else data_cfg.num_val,
            image_size=data_cfg.scene_size,
            num_classes=data_cfg.num_classes,
            seed=data_cfg.data_seed,
            transforms=transforms,
        )
    fmt = data_cfg.format
    if fmt not in ("auto", "folder", "voc"):
        raise ConfigError(
            f"format: unknown data format {fmt!r} (expected auto, folder or voc)"
        )
    root = Path(data_cfg.data).expanduser()
    if fmt == "auto":
        fmt = detect_format(root)
    if fmt == "voc":
        return VOCSegmentation(root, split=split, transforms=transforms)
    return SegmentationFolder(root, split=split, transforms=transforms)
