"""Classification data sets: image folders, CSV lists, Fashion-MNIST IDX files, the built-in scenes.

Every data set returns ``(image, label)``: without transforms a ``tv_tensors.Image`` uint8
``[3,H,W]`` (always RGB: grayscale and palette images, and IDX's single-channel digits, are
repeated to three channels) and an ``int``; with ``transforms`` ``(transforms(image), label)``. Each
has ``classes``, ``targets`` (one label per sample), ``name(i)``, ``load(i) -> HxWx3 uint8``,
``validate()`` (reads every sample once) and ``select(indices)`` (a subset with the same classes).

Layouts (:func:`build_classification_dataset` detects them from ``data``):

``root/<class>/<image>`` (ImageFolder)
    torchvision's ``ImageFolder`` conventions: one sub-folder per class, classes sorted by name,
    images found recursively by extension (torchvision's ``IMG_EXTENSIONS``, any case). Images are
    read with convision's :func:`~convision.data.io.read_image`. If ``root`` has ``train/`` (and
    ``val/``) sub-folders of class folders, those are the splits; otherwise the images are split
    into train/val by a stratified, seeded hold-out of ``val_fraction``.
``file.csv``
    One ``path,label`` row per image (an optional header row ``path,label``); paths relative to the
    CSV's folder; labels are class names (classes sorted) or integers ``0..K-1``. The validation
    split is ``val_data`` (another CSV with the training CSV's classes) or a hold-out.
Fashion-MNIST IDX
    Any folder holding ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz`` (also accepted without ``.gz``).
    ``train`` is the 60k set, ``val`` the 10k test set. Class names: ``classes.txt`` in the folder
    (one per line) if present, else Fashion-MNIST's ten names.
``synthetic``
    The built-in scenes (:func:`~convision.data.synthetic.make_scene`) with their per-image label
    (the class of the largest visible shape). Classes are the shapes only, without "background":
    a classifier must answer which shape it sees, and a scene with no visible shape (label 0; none
    in the first 2000 64x64 scenes) would be a class without samples. Such a scene is replaced by
    the first scene with a visible shape from a reserved index range (deterministic).

``fraction`` (training split only) keeps that share of every class (at least one image each),
chosen by a permutation seeded with ``data_seed``: deterministic and stratified (1 %, 10 %, 100 %).
"""

from __future__ import annotations

import copy
import csv
import gzip
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from convision.data.images import to_image
from convision.data.io import is_header, read_image
from convision.data.synthetic import (
    MAX_SYNTHETIC_CLASSES,
    image_hw,
    make_scene,
    synthetic_classes,
)
from convision.errors import ConfigError, DataError

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLITS = ("train", "val")
VAL_INDEX_OFFSET = 1_000_000
_RESERVE = (
    500_000_000  # synthetic: replacement scenes for scenes without a visible shape
)
_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _progress(it: Any, total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="img")


class ClassificationDataset(Dataset):
    """Common interface; subclasses set ``classes``, ``targets``, ``items`` and implement ``load``/``name``."""

    classes: list[str]
    targets: list[int]
    items: list[Any]
    transforms: Callable | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def name(self, i: int) -> str:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        image = to_image(self.load(i))
        if self.transforms is not None:
            image = self.transforms(image)
        return image, int(self.targets[i])

    def select(self, indices: Sequence[int]) -> "ClassificationDataset":
        """A shallow copy holding only ``indices`` (same classes and transforms)."""
        out = copy.copy(self)
        out.items = [self.items[i] for i in indices]
        out.targets = [self.targets[i] for i in indices]
        return out

    def with_transforms(self, transforms: Callable | None) -> "ClassificationDataset":
        out = copy.copy(self)
        out.transforms = transforms
        return out

    def validate(self, progress: bool = False) -> None:
        """Read every sample once; raise the first DataError."""
        for i in _progress(range(len(self)), len(self), progress, "checking data"):
            self.load(i)

    def class_counts(self) -> list[int]:
        return np.bincount(
            np.asarray(self.targets, dtype=np.int64), minlength=self.num_classes
        ).tolist()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.num_classes} classes)"


# ------------------------------------------------------------------------------------------ subsets


def stratified_indices(
    targets: Sequence[int], fraction: float, seed: int = 0
) -> list[int]:
    """Indices keeping ``fraction`` of each class (rounded, at least 1), sorted; deterministic."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction: must be in (0, 1], got {fraction}")
    t = np.asarray(targets, dtype=np.int64)
    if fraction == 1:
        return list(range(len(t)))
    keep: list[np.ndarray] = []
    for c in np.unique(t):
        idx = np.flatnonzero(t == c)
        rng = np.random.default_rng([int(seed), int(c)])
        n = max(1, int(round(fraction * len(idx))))
        keep.append(idx[rng.permutation(len(idx))[:n]])
    return sorted(int(i) for i in np.concatenate(keep)) if keep else []


def holdout_split(
    targets: Sequence[int], val_fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """(train, val) indices: ``val_fraction`` of each class held out (classes with one image stay in train)."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction: must be in (0, 1), got {val_fraction}")
    t = np.asarray(targets, dtype=np.int64)
    val: list[int] = []
    for c in np.unique(t):
        idx = np.flatnonzero(t == c)
        if len(idx) < 2:
            continue
        rng = np.random.default_rng([int(seed), int(c), 1])
        n = min(len(idx) - 1, max(1, int(round(val_fraction * len(idx)))))
        val.extend(int(i) for i in idx[rng.permutation(len(idx))[:n]])
    held = set(val)
    return [i for i in range(len(t)) if i not in held], sorted(val)


# ------------------------------------------------------------------------------------------ files


def _is_image(path: Path) -> bool:
    return path.name.lower().endswith(IMG_EXTENSIONS)


class FileClassification(ClassificationDataset):
    """Image files with labels; ``items`` are paths."""

    def load(self, i: int) -> np.ndarray:
        return read_image(self.items[i])

    def name(self, i: int) -> str:
        return str(self.items[i])


def _class_dirs(root: Path) -> list[Path]:
    return sorted(
        (
            e
            for e in (Path(p.path) for p in os.scandir(root))
            if e.is_dir() and not e.name.startswith(".")
        ),
        key=lambda p: p.name,
    )


class ImageFolderClassification(FileClassification):
    """``root/<class>/**/<image>``; torchvision ImageFolder conventions (see the module notes)."""

    def __init__(
        self,
        root: str | Path,
        transforms: Callable | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(f"{root}: folder not found")
        if not root.is_dir():
            raise DataError(f"{root}: not a folder (expected root/<class>/<image>)")
        dirs = _class_dirs(root)
        if not dirs:
            raise DataError(
                f"{root}: no class folders (expected one sub-folder per class: {root}/<class>/<image>)"
            )
        found = [d.name for d in dirs]
        if classes is not None:
            unknown = [c for c in found if c not in classes]
            if unknown:
                raise DataError(
                    f"{root / unknown[0]}: class {unknown[0]!r} is not among the training classes ({', '.join(classes)})"
                )
            self.classes = list(classes)
        else:
            self.classes = found
        index = {c: k for k, c in enumerate(self.classes)}
        self.root = root
        self.items, self.targets = [], []
        for d in dirs:
            files = sorted(
                Path(dp) / f
                for dp, _, fs in os.walk(d, followlinks=True)
                for f in fs
                if _is_image(Path(f))
            )
            if not files:
                raise DataError(
                    f"{d}: class folder holds no images ({', '.join(sorted({e.lstrip('.') for e in IMG_EXTENSIONS}))})"
                )
            self.items += files
            self.targets += [index[d.name]] * len(files)
        self.transforms = transforms


class CSVClassification(FileClassification):
    """``path,label`` rows (see the module notes). Every listed file must exist."""

    def __init__(
        self,
        csv_path: str | Path,
        transforms: Callable | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        path = Path(csv_path).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: CSV file not found")
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
        if not rows:
            raise DataError(f"{path}: no rows (expected 'path,label' lines)")
        base = path.parent
        files, labels = [], []
        for n, row in rows:
            if len(row) != 2:
                raise DataError(
                    f"{path} line {n}: expected 2 columns 'path,label', got {len(row)}"
                )
            file, label = row[0].strip(), row[1].strip()
            p = Path(file).expanduser()
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                raise DataError(f"{path} line {n}: {file}: image file not found")
            if not label:
                raise DataError(f"{path} line {n}: empty label")
            files.append(p)
            labels.append(label)
        if classes is None:
            if all(lb.isdigit() for lb in labels):
                self.classes = [
                    str(k) for k in range(max(int(lb) for lb in labels) + 1)
                ]
                labels = [str(int(lb)) for lb in labels]
            else:
                self.classes = sorted(set(labels))
        else:
            self.classes = list(classes)
            if all(lb.isdigit() for lb in labels) and not set(labels) <= set(
                self.classes
            ):
                labels = [str(int(lb)) for lb in labels]
        index = {c: k for k, c in enumerate(self.classes)}
        for (n, _), lb in zip(rows, labels):
            if lb not in index:
                raise DataError(
                    f"{path} line {n}: label {lb!r} is not a training class ({', '.join(self.classes)})"
                )
        self.items = files
        self.targets = [index[lb] for lb in labels]
        self.transforms = transforms


# ------------------------------------------------------------------------------------------ IDX


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (``.gz`` or plain): magic ``0 0 <type> <ndim>``, big-endian int32 dims, data."""
    p = Path(path)
    try:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(
            f"{p}: cannot read ({' '.join(str(e).split()) or type(e).__name__})"
        ) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{p}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(data) < header:
        raise DataError(f"{p}: not an IDX file (truncated header)")
    dims = [int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{p}: IDX header says {'x'.join(map(str, dims))} {dtype} ({expected} bytes) but the file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def find_idx_file(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def is_idx_folder(root: str | Path) -> bool:
    root = Path(root)
    return root.is_dir() and all(
        find_idx_file(root, s) is not None for s in IDX_FILES["train"]
    )


class IDXClassification(ClassificationDataset):
    """Fashion-MNIST-style IDX files (see the module notes); ``items`` are row indices."""

    def __init__(
        self, root: str | Path, split: str = "train", transforms: Callable | None = None
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split: expected 'train' or 'val', got {split!r}")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: folder not found")
        paths = []
        for stem in IDX_FILES[split]:
            p = find_idx_file(root, stem)
            if p is None:
                raise DataError(
                    f"{root}: {stem}.gz not found (an IDX folder holds {', '.join(s + '.gz' for v in IDX_FILES.values() for s in v)})"
                )
            paths.append(p)
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(
                f"{paths[0]}: expected uint8 images N x H x W, got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(
                f"{paths[1]}: {len(labels)} labels for {len(images)} images in {paths[0].name}"
            )
        classes_file = root / "classes.txt"
        if classes_file.is_file():
            self.classes = [
                line.strip()
                for line in classes_file.read_text().splitlines()
                if line.strip()
            ]
        else:
            self.classes = list(FASHION_MNIST_CLASSES)
        if len(labels) and (
            int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)
        ):
            raise DataError(
                f"{paths[1]}: labels span {int(labels.min())}..{int(labels.max())} but there are {len(self.classes)} classes"
            )
        self.root, self.split, self.files = root, split, paths
        self.images = images
        self.items = list(range(len(images)))
        self.targets = [int(v) for v in labels]
        self.transforms = transforms

    def load(self, i: int) -> np.ndarray:
        return np.repeat(self.images[self.items[i]][:, :, None], 3, axis=2)

    def name(self, i: int) -> str:
        return f"{self.files[0]}#{self.items[i]}"

    def validate(self, progress: bool = False) -> None:
        """Parsed and checked on construction."""


# ------------------------------------------------------------------------------------------ synthetic


def check_synthetic_settings(
    task: str,
    split: str,
    num_images: int,
    image_size: int | tuple[int, int],
    num_classes: int,
    seed: int,
) -> tuple[int, int]:
    """Validate the built-in scenes' settings for one-label tasks; returns the image (h, w)."""
    if split not in SPLITS:
        raise ConfigError(f"split: expected 'train' or 'val', got {split!r}")
    if not 3 <= num_classes <= MAX_SYNTHETIC_CLASSES:
        raise ConfigError(
            f"num_classes: synthetic {task} takes 3..{MAX_SYNTHETIC_CLASSES} (background included, "
            f"so 2..{MAX_SYNTHETIC_CLASSES - 1} shapes), got {num_classes}"
        )
    if num_images < 1:
        raise ConfigError(
            f"num_{split}: need at least 1 synthetic image, got {num_images}"
        )
    if seed < 0:
        raise ConfigError(f"data_seed: must be non-negative, got {seed}")
    try:
        return image_hw(image_size)
    except ValueError as e:
        raise ConfigError(f"scene_size: {e}") from None


class SyntheticClassification(ClassificationDataset):
    """The built-in scenes with their per-image label (see the module notes).

    ``num_classes`` is make_scene's (background included), so the data set has ``num_classes - 1``
    classes: the shapes, label ``scene.label - 1``. ``train`` uses scene indices
    ``0..num_images-1``, ``val`` ``VAL_INDEX_OFFSET + 0..``: the splits never share a scene.
    """

    def __init__(
        self,
        split: str = "train",
        num_images: int = 400,
        image_size: int | tuple[int, int] = 64,
        num_classes: int = 6,
        seed: int = 0,
        transforms: Callable | None = None,
        max_objects: int = 1,
    ) -> None:
        self.image_size = check_synthetic_settings(
            "classification", split, num_images, image_size, num_classes, seed
        )
        if max_objects < 1:
            raise ConfigError(f"max_objects: must be at least 1, got {max_objects}")
        self.split, self.seed, self.scene_classes, self.max_objects = (
            split,
            int(seed),
            int(num_classes),
            int(max_objects),
        )
        self.classes = synthetic_classes(num_classes)[1:]
        self.offset = 0 if split == "train" else VAL_INDEX_OFFSET
        self.items = list(range(int(num_images)))
        self._cache: dict[int, tuple[int, int]] = {}
        self.transforms = transforms

    @property
    def targets(self) -> list[int]:  # type: ignore[override]
        return [self._resolve(i)[1] for i in self.items]

    @targets.setter
    def targets(
        self, value: list[int]
    ) -> None:  # select() assigns; labels come from the scenes
        pass

    def _scene(self, index: int):
        return make_scene(
            index,
            seed=self.seed,
            image_size=self.image_size,
            num_classes=self.scene_classes,
            max_objects=self.max_objects,
        )

    def _resolve(self, k: int) -> tuple[int, int]:
        """(scene index, label) of sample ``k``, replacing a scene without a visible shape."""
        if k not in self._cache:
            index = self.offset + k
            scene = self._scene(index)
            t = 0
            while scene.label == 0:
                index = self.offset + _RESERVE + k * 1000 + t
                scene = self._scene(index)
                t += 1
            self._cache[k] = (index, scene.label - 1)
        return self._cache[k]

    def scene(self, i: int):
        return self._scene(self._resolve(self.items[i])[0])

    def load(self, i: int) -> np.ndarray:
        return self.scene(i).image

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        index, label = self._resolve(self.items[i])
        image = to_image(self._scene(index).image)
        if self.transforms is not None:
            image = self.transforms(image)
        return image, label

    def select(self, indices: Sequence[int]) -> "SyntheticClassification":
        out = copy.copy(self)
        out.items = [self.items[i] for i in indices]
        return out

    def name(self, i: int) -> str:
        return f"synthetic/{self.split}/{self.items[i]:06d}"

    def validate(self, progress: bool = False) -> None:
        """Generated data cannot be malformed; only the first scene is generated as a check."""
        self.load(0)


# ------------------------------------------------------------------------------------------ transforms


class ClassificationTransform:
    """A picklable v2 pipeline on a ``tv_tensors.Image`` (or HxWx3 array)."""

    def __init__(self, steps: Sequence[Callable]) -> None:
        self.pipeline = v2.Compose(list(steps))

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            image = to_image(image)
        return self.pipeline(image).as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline!r})"


def _float_normalize(mean: Sequence[float], std: Sequence[float]) -> list[Callable]:
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def classification_train_transforms(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    scale_min: float = 0.5,
    hflip: bool = True,
    color_jitter: float = 0.0,
) -> ClassificationTransform:
    """RandomResizedCrop(image_size, scale=(scale_min, 1)) -> flip -> jitter -> float -> normalise."""
    if not 0 < scale_min <= 1:
        raise ConfigError(f"scale_min: must be in (0, 1], got {scale_min}")
    steps: list[Callable] = [
        v2.RandomResizedCrop(
            int(image_size), scale=(float(scale_min), 1.0), antialias=True
        )
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if color_jitter > 0:
        steps.append(
            v2.ColorJitter(
                brightness=color_jitter, contrast=color_jitter, saturation=color_jitter
            )
        )
    return ClassificationTransform(steps + _float_normalize(mean, std))


def classification_eval_transforms(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    resize_ratio: float = 256 / 224,
) -> ClassificationTransform:
    """torchvision's evaluation recipe: resize the shorter side to ``image_size * 256/224``, centre
    crop ``image_size``, float, normalise."""
    resize = max(int(image_size), int(round(int(image_size) * resize_ratio)))
    steps: list[Callable] = [
        v2.Resize(resize, antialias=True),
        v2.CenterCrop(int(image_size)),
    ]
    return ClassificationTransform(steps + _float_normalize(mean, std))


# ------------------------------------------------------------------------------------------ factory


def detect_format(data: str) -> str:
    """'synthetic' | 'csv' | 'idx' | 'folder' for a data setting (raises DataError if missing)."""
    if data == "synthetic":
        return "synthetic"
    p = Path(data).expanduser()
    if p.suffix.lower() == ".csv":
        return "csv"
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file():
        raise DataError(f"{p}: expected a folder, a .csv file or 'synthetic'")
    return "idx" if is_idx_folder(p) else "folder"


def _has_split_folders(root: Path) -> bool:
    train = root / "train"
    return (
        train.is_dir()
        and any(d.is_dir() for d in train.iterdir())
        and (root / "val").is_dir()
    )


def build_classification_dataset(
    cfg: Any,
    split: str,
    transforms: Callable | None = None,
    classes: Sequence[str] | None = None,
) -> ClassificationDataset:
    """The ``split`` of the data set ``cfg`` describes (a ClassifyDataConfig-like object; see the
    module notes). ``fraction`` applies to ``train`` only; ``classes`` (the training split's) is
    checked against / imposed on a separately stored validation split."""
    if split not in SPLITS:
        raise ConfigError(f"split: expected 'train' or 'val', got {split!r}")
    fmt = cfg.format if cfg.format != "auto" else detect_format(cfg.data)
    seed = int(cfg.data_seed)
    holdout = False
    if fmt == "synthetic":
        n = cfg.num_train if split == "train" else cfg.num_val
        ds: ClassificationDataset = SyntheticClassification(
            split, n, cfg.scene_size, cfg.num_classes, seed, max_objects=cfg.max_objects
        )
    elif fmt == "idx":
        ds = IDXClassification(cfg.data, split)
    elif fmt == "csv":
        if split == "val" and cfg.val_data:
            ds = CSVClassification(
                cfg.val_data, classes=classes or CSVClassification(cfg.data).classes
            )
        else:
            ds, holdout = CSVClassification(cfg.data), not cfg.val_data
    elif fmt == "folder":
        root = Path(cfg.data).expanduser()
        if cfg.val_data and split == "val":
            ds = ImageFolderClassification(
                cfg.val_data, classes=classes or _folder_classes(root)
            )
        elif _has_split_folders(root) and not cfg.val_data:
            train_root = root / "train"
            ds = ImageFolderClassification(
                root / split,
                classes=None
                if split == "train"
                else (classes or _folder_classes(train_root)),
            )
        else:
            ds, holdout = ImageFolderClassification(root), not cfg.val_data
    else:
        raise ConfigError(
            f"format: unknown {fmt!r} (expected auto | folder | csv | idx | synthetic)"
        )
    if holdout:
        train_idx, val_idx = holdout_split(ds.targets, cfg.val_fraction, seed)
        ds = ds.select(train_idx if split == "train" else val_idx)
    if split == "train" and cfg.fraction < 1:
        ds = ds.select(stratified_indices(ds.targets, cfg.fraction, seed))
    ds.transforms = transforms
    return ds


def _folder_classes(root: Path) -> list[str]:
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    return [d.name for d in _class_dirs(root)]
