"""Object-detection data sets, box-aware transforms and the collate function.

A sample is ``(image, target)``: ``image`` a ``tv_tensors.Image`` float32 ``3 x H x W`` in
``[0, 1]`` (after the transforms, if any); ``target`` a dict with

* ``boxes``: ``tv_tensors.BoundingBoxes`` XYXY (continuous pixels of the returned image,
  ``canvas_size`` = its ``(H, W)``),
* ``labels``: int64 ``N`` in ``0 .. K-1`` (no background; see :mod:`convision.models.detection`),
* ``difficult``: bool ``N`` (VOC "difficult", COCO "iscrowd": evaluation ignores them),
* ``image_id``: int, ``orig_size``: int64 ``[H0, W0]`` of the file (to map predictions back).

Sources (:func:`build_detection_dataset`): the built-in scenes (``"synthetic"``), a Pascal VOC
folder, a COCO JSON or a YOLO folder (:mod:`convision.data.detection_formats`). Transforms are
``torchvision.transforms.v2`` pipelines called as ``transforms(image, target)``; those built here
end with ``SanitizeBoundingBoxes``, which drops degenerate boxes together with their ``labels``
and ``difficult`` entries.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from convision.data.detection_formats import (
    DetectionRecord,
    detect_format,
    load_record_image,
    read_detection,
)
from convision.data.images import to_image
from convision.data.instance_masks import decode_masks
from convision.data.segmentation import VAL_INDEX_OFFSET
from convision.data.synthetic import (
    MAX_SYNTHETIC_CLASSES,
    image_hw,
    make_scene,
    synthetic_classes,
)
from convision.errors import ConfigError, DataError

SPLITS = ("train", "val")
DEFAULT_NUM_IMAGES = {"train": 400, "val": 100}


def _progress(it: Any, total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="img")


def _plain_target(record: DetectionRecord) -> dict[str, Any]:
    return {
        "boxes": torch.from_numpy(record.boxes.copy()),
        "labels": torch.from_numpy(record.labels.copy()),
        "difficult": torch.from_numpy(record.difficult.copy()),
        "image_id": int(record.image_id),
        "orig_size": torch.tensor([record.height, record.width], dtype=torch.int64),
    }


class DetectionDataset(Dataset):
    """Images with boxes, from :class:`~convision.data.detection_formats.DetectionRecord` s (see the module notes)."""

    def __init__(
        self,
        records: Sequence[DetectionRecord],
        classes: Sequence[str],
        transforms: Callable | None = None,
        masks: bool = False,
    ) -> None:
        self.records = list(records)
        self.classes = list(classes)
        self.transforms = transforms
        self.with_masks = bool(masks)
        self.original_masks = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def record(self, i: int) -> DetectionRecord:
        return self.records[i]

    def _sample(self, i: int) -> tuple[np.ndarray, DetectionRecord]:
        """The pixels (``H x W x 3`` uint8) and record of sample ``i``; DataError if they disagree in size."""
        r = self.record(i)
        image = load_record_image(r)
        h, w = image.shape[:2]
        if (w, h) != (r.width, r.height):
            raise DataError(
                f"{r.image}: image is {w}x{h} but its annotation says {r.width}x{r.height}"
            )
        return image, r

    def raw(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """``(H x W x 3 uint8, target)`` untransformed, the target as plain tensors in original pixels."""
        image, r = self._sample(self._index(i))
        target = _plain_target(r)
        if self.with_masks:
            target["masks"] = torch.from_numpy(decode_masks(r))
        return image, target

    def name(self, i: int) -> str:
        """The image's file name, or ``scene_000123`` for a built-in scene."""
        return self.record(self._index(i)).name

    def _index(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return i % len(self)

    def __getitem__(self, i: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        array, r = self._sample(self._index(i))
        image = to_image(array)
        target = _plain_target(r)
        target["boxes"] = tv_tensors.BoundingBoxes(
            target["boxes"], format="XYXY", canvas_size=(r.height, r.width)
        )
        if self.with_masks:
            masks = torch.from_numpy(decode_masks(r))
            target["masks"] = tv_tensors.Mask(masks)
            if self.original_masks:  # a plain tensor: the transforms leave it as it is
                target["orig_masks"] = masks.clone()
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        if image.dtype == torch.uint8:  # transforms without ToDtype, or none at all
            image = v2.functional.to_dtype(image, torch.float32, scale=True)
        return image, target

    def select(self, indices: Sequence[int]) -> "DetectionDataset":
        """A copy holding the samples ``indices`` (in that order)."""
        out = copy.copy(self)
        out.records = [self.record(i) for i in indices]
        return out

    def validate(self, progress: bool = False) -> None:
        """Decode every image and check its size against its annotation; raise the first DataError."""
        for i in _progress(range(len(self)), len(self), progress, "checking data"):
            _, r = self._sample(i)
            if self.with_masks:
                m = decode_masks(r)
                if m.shape[1:] != (r.height, r.width):
                    raise DataError(
                        f"{r.name}: instance masks are {m.shape[2]}x{m.shape[1]} but the image is "
                        f"{r.width}x{r.height}"
                    )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.num_classes} classes)"


class SyntheticDetection(DetectionDataset):
    """The built-in scenes (:func:`~convision.data.synthetic.make_scene`), generated on the fly.

    ``num_classes`` counts the background as make_scene does, so the data set has ``num_classes - 1``
    classes (the shapes), labels ``scene.labels - 1``. Scene ``i`` of ``split="train"`` is index
    ``i``, of ``"val"`` index ``VAL_INDEX_OFFSET + i``: the splits never share a scene. A scene
    whose shapes all vanished is a negative image.
    """

    def __init__(
        self,
        num_images: int,
        image_size: int | tuple[int, int] = 128,
        num_classes: int = 6,
        seed: int = 0,
        max_objects: int = 6,
        transforms: Callable | None = None,
        *,
        split: str = "train",
        masks: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"split: expected 'train' or 'val', got {split!r}")
        if not 2 <= num_classes <= MAX_SYNTHETIC_CLASSES:
            raise ConfigError(
                f"num_classes: synthetic scenes have 2..{MAX_SYNTHETIC_CLASSES} classes "
                f"(background included), got {num_classes}"
            )
        if num_images < 1:
            raise ConfigError(
                f"num_images: need at least 1 synthetic image, got {num_images}"
            )
        if seed < 0:
            raise ConfigError(f"seed: must be non-negative, got {seed}")
        if max_objects < 1:
            raise ConfigError(f"max_objects: must be at least 1, got {max_objects}")
        try:
            self.image_size = image_hw(image_size)
        except ValueError as e:
            raise ConfigError(f"image_size: {e}") from None
        self.split, self.seed = split, int(seed)
        self.scene_classes, self.max_objects = int(num_classes), int(max_objects)
        self.offset = 0 if split == "train" else VAL_INDEX_OFFSET
        self.items = list(range(int(num_images)))
        super().__init__([], synthetic_classes(num_classes)[1:], transforms, masks)

    def __len__(self) -> int:
        return len(self.items)

    def _scene_index(self, i: int) -> int:
        return self.offset + self.items[i]

    def _scene(self, i: int):
        return make_scene(
            self._scene_index(i),
            seed=self.seed,
            image_size=self.image_size,
            num_classes=self.scene_classes,
            max_objects=self.max_objects,
        )

    def _record(self, i: int, scene) -> DetectionRecord:
        h, w = self.image_size
        index = self._scene_index(i)
        return DetectionRecord(
            None,
            w,
            h,
            scene.boxes,
            scene.labels - 1,
            np.zeros(len(scene.labels), bool),
            index,
            scene=(index, self.seed, (h, w), self.scene_classes, self.max_objects),
            masks=("array", _scene_masks(scene.instances, len(scene.labels))),
        )

    def record(self, i: int) -> DetectionRecord:
        return self._record(i, self._scene(i))

    def _sample(
        self, i: int
    ) -> tuple[np.ndarray, DetectionRecord]:  # one scene generation per sample
        s = self._scene(i)
        return s.image, self._record(i, s)

    def name(self, i: int) -> str:
        return f"scene_{self._scene_index(self._index(i)):06d}"

    def select(self, indices: Sequence[int]) -> "SyntheticDetection":
        out = copy.copy(self)
        out.items = [self.items[i] for i in indices]
        return out

    def validate(self, progress: bool = False) -> None:
        """Generated data cannot be malformed; the first scene is generated as a check."""
        self._sample(0)


def _scene_masks(instances: np.ndarray, n: int) -> np.ndarray:
    """``N x H x W`` uint8 masks of a scene's instance map (instance ``k`` is value ``k + 1``)."""
    return (instances[None] == np.arange(1, n + 1)[:, None, None]).astype(np.uint8)


# ------------------------------------------------------------------------------------------ factory


def holdout_indices(
    n: int, val_fraction: float, seed: int = 0, where: str = "data"
) -> tuple[list[int], list[int]]:
    """Deterministic ``(train, val)`` image indices: ``round(val_fraction * n)`` (at least 1) held out."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction: must be in (0, 1), got {val_fraction}")
    if n < 2:
        raise DataError(
            f"{where}: need at least 2 images to hold out a validation split, found {n}"
        )
    k = min(n - 1, max(1, int(round(val_fraction * n))))
    perm = np.random.default_rng([int(seed), 0xD37]).permutation(n)
    held = set(perm[:k].tolist())
    return [i for i in range(n) if i not in held], sorted(held)


def _has_split(path: str | Path, fmt: str, split: str) -> bool:
    p = Path(path).expanduser()
    if fmt == "voc":
        return any(
            (p / "ImageSets" / sub / f"{split}.txt").is_file()
            for sub in ("Main", "Segmentation")
        )
    if fmt == "yolo":
        root = p.parent if p.is_file() else p
        return (root / "images" / split).is_dir()
    if fmt == "instances":
        return (p / "images" / split).is_dir()
    return False


def _read_split(
    path: str | Path,
    fmt: str,
    split: str,
    classes: Sequence[str] | None,
    masks: bool = False,
) -> tuple[list[DetectionRecord], list[str]]:
    """The named split where the folder has one, else everything (VOC: every XML; YOLO: flat images/)."""
    return read_detection(
        path, split if _has_split(path, fmt, split) else None, classes, masks
    )


def build_detection_dataset(
    data: str,
    split: str = "train",
    *,
    transforms: Callable | None = None,
    classes: Sequence[str] | None = None,
    val_data: str = "",
    val_fraction: float = 0.2,
    num_images: int | None = None,
    image_size: int | tuple[int, int] = 128,
    num_classes: int = 6,
    seed: int = 0,
    masks: bool = False,
) -> DetectionDataset:
    """The ``split`` of ``data``: ``"synthetic"``, a VOC folder, a COCO JSON or a YOLO folder.

    * synthetic: ``num_images`` scenes (default 400 train / 100 val) of ``image_size`` with
      ``num_classes`` (background included); train and val are disjoint scene ranges.
    * files: ``val_data`` (any format) is the validation set when given; else the folder's own
      ``val`` split (VOC ``ImageSets/Main/val.txt``, YOLO ``images/val/``) when it has one; else a
      deterministic hold-out of ``val_fraction`` of the training images (``seed``). The training set
      is the ``train`` split when the folder has one, else all its images. Any other split name
      (``test``, ...) must exist in the folder (VOC ``ImageSets/Main/<split>.txt``, YOLO
      ``images/<split>/``) and gets the training data's classes.
    * ``classes`` (e.g. a model's) fixes the class list and order; names not in it are a DataError.
      Without it, validation data get the training data's classes.
    * ``masks``: the targets also hold ``"masks"`` (``N x H x W``, :mod:`convision.data.instance_masks`).
    """
    if data == "synthetic":
        if split not in SPLITS:
            raise ConfigError(
                f"split: the built-in scenes have splits 'train' and 'val', got {split!r}"
            )
        n = DEFAULT_NUM_IMAGES[split] if num_images is None else int(num_images)
        return SyntheticDetection(
            n,
            image_size,
            num_classes,
            seed,
            transforms=transforms,
            split=split,
            masks=masks,
        )
    if not data:
        raise ConfigError(
            "data: expected 'synthetic', a VOC folder, a COCO .json file or a YOLO folder"
        )
    fmt = detect_format(data)
    if val_data:
        detect_format(val_data)
    if (
        split not in SPLITS
    ):  # another named split (e.g. VOC ImageSets/Main/test.txt, YOLO images/test/)
        if not _has_split(data, fmt, split):
            raise DataError(
                f"{data}: no split {split!r} (VOC: ImageSets/Main/{split}.txt, YOLO: images/{split}/; "
                "a COCO file has no splits: pass the split's own .json as the data)"
            )
        if classes is None:
            classes = _read_split(data, fmt, "train", None, masks)[1]
        return DetectionDataset(
            *_read_split(data, fmt, split, classes, masks), transforms, masks
        )
    own_val = not val_data and _has_split(data, fmt, "val")
    if split == "val" and (val_data or own_val):
        if classes is None:
            classes = _read_split(data, fmt, "train", None, masks)[1]
        src = val_data or data
        records, names = _read_split(src, detect_format(src), "val", classes, masks)
        return DetectionDataset(records, names, transforms, masks)
    records, names = _read_split(data, fmt, "train", classes, masks)
    ds = DetectionDataset(records, names, transforms, masks)
    if not val_data and not own_val:
        train_idx, val_idx = holdout_indices(len(ds), val_fraction, seed, str(data))
        ds = ds.select(train_idx if split == "train" else val_idx)
    return ds


# ------------------------------------------------------------------------------------------ transforms


def labels_and_difficult(inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``labels_getter`` for ``SanitizeBoundingBoxes``: the per-box tensors to keep in sync with the boxes."""
    target = inputs[1]
    return target["labels"], target["difficult"]


def _check_sizes(min_size: int, max_size: int) -> None:
    if int(min_size) < 1:
        raise ConfigError(
            f"min_size: must be a positive number of pixels, got {min_size}"
        )
    if int(max_size) < int(min_size):
        raise ConfigError(
            f"max_size: must be at least min_size ({min_size}), got {max_size}"
        )


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """``N x 4`` xyxy boxes (pixel edges) of ``N x H x W`` masks; an empty mask gives ``[0, 0, 0, 0]``."""
    masks = masks.bool()
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    h, w = masks.shape[1:]
    iy = torch.arange(h, device=masks.device)
    ix = torch.arange(w, device=masks.device)
    boxes = torch.stack(
        (
            torch.where(cols, ix, w).amin(dim=1),
            torch.where(rows, iy, h).amin(dim=1),
            torch.where(cols, ix + 1, 0).amax(dim=1),
            torch.where(rows, iy + 1, 0).amax(dim=1),
        ),
        dim=1,
    ).float()
    empty = ~rows.any(dim=1)
    boxes[empty] = 0
    return boxes


class BoxesFromMasks:
    """Replace the boxes by their masks' pixel extents (after crops, where a clipped box no longer
    bounds what is left of the object); an emptied mask gives an empty box, which the sanitising
    step then drops with its mask, label and difficult flag."""

    def __call__(
        self, image: Any, target: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        boxes = target["boxes"]
        target["boxes"] = tv_tensors.wrap(
            boxes_from_masks(target["masks"].as_subclass(torch.Tensor)).to(boxes.dtype),
            like=boxes,
        )
        return image, target


def _tail() -> list[Callable]:
    return [
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=labels_and_difficult),
        v2.ToDtype(torch.float32, scale=True),
    ]


def detection_train_transforms(
    min_size: int,
    max_size: int,
    *,
    hflip: bool = True,
    scale_range: tuple[float, float] = (0.75, 1.25),
    crop: bool = True,
    color_jitter: float = 0.2,
    masks: bool = False,
) -> v2.Compose:
    """Training augmentation on ``(Image, target)``; boxes, labels and difficult follow the image.

    Photometric jitter (brightness, contrast, saturation ``color_jitter``) -> SSD's random crop
    (``RandomIoUCrop``, Liu et al. 2016: a crop with a minimum IoU with some object, or the whole
    image; boxes whose centre leaves the crop are dropped, the others clipped) -> resize the shorter
    side to ``round(s * min_size)`` pixels, ``s`` uniform in ``scale_range`` (one integer size
    drawn), the longer side capped at ``max_size`` (Fast R-CNN's scale jitter) -> horizontal flip ->
    drop boxes under 1 px wide or high (and their labels / difficult) -> float in ``[0, 1]``.
    Instance masks (``tv_tensors.Mask``) follow every step; with ``masks`` the boxes are then
    recomputed from them (:class:`BoxesFromMasks`) before the sanitising step.
    """
    _check_sizes(min_size, max_size)
    lo, hi = (float(v) for v in scale_range)
    if not 0 < lo <= hi:
        raise ConfigError(f"scale_range: expected 0 < low <= high, got {scale_range}")
    if color_jitter < 0:
        raise ConfigError(f"color_jitter: must be non-negative, got {color_jitter}")
    steps: list[Callable] = []
    if color_jitter > 0:
        steps.append(
            v2.ColorJitter(
                brightness=color_jitter, contrast=color_jitter, saturation=color_jitter
            )
        )
    if crop:
        steps.append(v2.RandomIoUCrop())
    sizes = list(range(max(1, round(lo * min_size)), max(1, round(hi * min_size)) + 1))
    steps.append(v2.RandomShortestSize(sizes, max_size=int(max_size), antialias=True))
    if hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if masks:
        steps.append(BoxesFromMasks())
    return v2.Compose(steps + _tail())


def detection_eval_transforms(min_size: int, max_size: int) -> v2.Compose:
    """Resize the shorter side to ``min_size`` (the longer capped at ``max_size``), float in ``[0, 1]``.

    Deterministic, and no box is dropped (a ground-truth box that shrinks below a pixel still counts
    in the evaluation)."""
    _check_sizes(min_size, max_size)
    return v2.Compose(
        [
            v2.RandomShortestSize(
                [int(min_size)], max_size=int(max_size), antialias=True
            ),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def detection_collate(
    batch: Sequence[tuple[Any, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """``[(image, target)] -> (images, targets)``: lists (sizes may differ), tv_tensor subclasses stripped,
    ``image_id`` as an int64 scalar tensor."""
    images, targets = [], []
    for image, target in batch:
        images.append(image.as_subclass(torch.Tensor))
        t = {}
        for key, value in target.items():
            t[key] = (
                value.as_subclass(torch.Tensor)
                if isinstance(value, torch.Tensor)
                else torch.tensor(value)
            )
        targets.append(t)
    return images, targets
