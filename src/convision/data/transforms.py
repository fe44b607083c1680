"""Joint image + mask transforms built on ``torchvision.transforms.v2`` and ``tv_tensors``.

v2 dispatches on the tensor type: geometry is applied to both ``tv_tensors.Image`` and
``tv_tensors.Mask`` with the same random parameters, masks are resized with nearest-neighbour
sampling (no new label values), and colour transforms and ``Normalize`` leave masks alone.

Training follows the FCN recipe (Long et al., 2015) with the now usual augmentations: random
scale, random crop (padding with 255 = ignore where the scaled image is smaller than the crop),
horizontal flip, mild colour jitter. Evaluation keeps the original resolution (VOC's protocol):
only dtype conversion and normalisation; :func:`pad_collate` batches images of different sizes.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image as PILImage
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from convision.data.images import IMAGENET_MEAN, IMAGENET_STD
from convision.data.io import IGNORE_INDEX


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scale_range``, relative to the input's own size.

    Images use bilinear interpolation (antialiased when shrinking); masks use
    nearest-neighbour (``NEAREST_EXACT``: pixel centres line up with the bilinear image).
    Uses torch's RNG, like every v2 transform, so DataLoader worker seeding applies.
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 0 < lo <= hi:
            raise ValueError(
                f"scale_range must satisfy 0 < min <= max, got {scale_range}"
            )
        self.scale_range = (lo, hi)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _query_size(flat_inputs)
        lo, hi = self.scale_range
        s = lo + (hi - lo) * float(torch.rand(()))
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return self._call_kernel(
                F.resize,
                inpt,
                params["size"],
                interpolation=v2.InterpolationMode.NEAREST_EXACT,
            )
        return self._call_kernel(
            F.resize,
            inpt,
            params["size"],
            interpolation=v2.InterpolationMode.BILINEAR,
            antialias=True,
        )


def _query_size(flat_inputs: list[Any]) -> tuple[int, int]:
    for x in flat_inputs:
        if isinstance(
            x, (tv_tensors.Image, tv_tensors.Mask, tv_tensors.Video, PILImage.Image)
        ):
            h, w = F.get_size(x)
            return h, w
    raise TypeError(
        "RandomScale needs a tv_tensors.Image, tv_tensors.Mask or PIL image among its inputs"
    )


def as_tv_tensors(
    image: Any, mask: Any | None = None
) -> tuple[tv_tensors.Image, tv_tensors.Mask | None]:
    """Wrap an image (HxWx3 uint8 array, PIL image, [3,H,W] tensor) and a mask (HxW array/tensor/PIL)
    as ``tv_tensors.Image`` (uint8 unless given otherwise) and ``tv_tensors.Mask`` (int64)."""
    if not isinstance(image, tv_tensors.Image):
        if isinstance(image, PILImage.Image):
            image = F.pil_to_tensor(image.convert("RGB"))
        elif isinstance(image, np.ndarray):
            arr = image if image.ndim == 3 else image[:, :, None].repeat(3, axis=2)
            image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        image = tv_tensors.Image(image)
    if mask is not None and not (
        isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64
    ):
        if isinstance(mask, PILImage.Image):
            mask = np.asarray(mask)
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(mask.astype(np.int64))
        mask = tv_tensors.Mask(torch.as_tensor(mask).to(torch.int64))
    return image, mask


class JointTransform:
    """``(image, mask) -> (image, mask)`` around a v2 pipeline; plain inputs are wrapped as tv_tensors
    first (a plain mask tensor would otherwise be treated as an image by v2). Picklable."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.pipeline = v2.Compose(list(transforms))

    def __call__(self, image: Any, mask: Any | None = None) -> Any:
        image, mask = as_tv_tensors(image, mask)
        if mask is None:
            return self.pipeline(image)
        return self.pipeline(image, mask)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline!r})"


def _to_float_and_normalize(
    mean: Sequence[float], std: Sequence[float]
) -> list[Callable]:
    return [
        v2.ToDtype(
            {
                tv_tensors.Image: torch.float32,
                tv_tensors.Mask: torch.int64,
                "others": None,
            },
            scale=True,
        ),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def segmentation_train_transforms(
    *,
    crop_size: int | tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    color_jitter: float = 0.2,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = IGNORE_INDEX,
) -> JointTransform:
    """Random scale -> random crop (pad: image 0, mask ``ignore_index``) -> flip -> colour jitter
    (image only) -> float in [0, 1] -> normalise. Output: image float32 [3,h,w], mask int64 [h,w]
    with ``(h, w) = crop_size``."""
    size = (
        (int(crop_size), int(crop_size))
        if isinstance(crop_size, (int, np.integer))
        else tuple(int(v) for v in crop_size)
    )
    if min(size) < 1:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    steps: list[Callable] = []
    if tuple(scale_range) != (1.0, 1.0):
        steps.append(RandomScale(scale_range))
    steps.append(
        v2.RandomCrop(
            size,
            pad_if_needed=True,
            fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index},
        )
    )
    if hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if color_jitter > 0:
        steps.append(
            v2.ColorJitter(
                brightness=color_jitter, contrast=color_jitter, saturation=color_jitter
            )
        )
    steps += _to_float_and_normalize(mean, std)
    return JointTransform(steps)


def segmentation_eval_transforms(
    *, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> JointTransform:
    """No geometry change (evaluate at the original resolution): float in [0, 1], then normalise."""
    return JointTransform(_to_float_and_normalize(mean, std))


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]],
    ignore_index: int = IGNORE_INDEX,
    multiple: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image [C,h,w], mask [h,w])`` pairs of different sizes into ``[N,C,H,W]`` and
    ``[N,H,W]`` int64, padding at the bottom and right (image 0, mask ``ignore_index``) to the
    largest ``H, W`` of the batch, rounded up to a multiple of ``multiple``."""
    if not batch:
        raise ValueError("pad_collate got an empty batch")
    m = max(int(multiple), 1)
    hmax = max(int(img.shape[-2]) for img, _ in batch)
    wmax = max(int(img.shape[-1]) for img, _ in batch)
    H, W = -(-hmax // m) * m, -(-wmax // m) * m
    first = batch[0][0]
    images = torch.zeros((len(batch), first.shape[0], H, W), dtype=first.dtype)
    masks = torch.full((len(batch), H, W), ignore_index, dtype=torch.int64)
    for i, (img, mask) in enumerate(batch):
        h, w = img.shape[-2:]
        if tuple(mask.shape[-2:]) != (h, w):
            raise ValueError(
                f"pad_collate: sample {i} has image {h}x{w} but mask {tuple(mask.shape[-2:])}"
            )
        images[i, :, :h, :w] = (
            img.as_subclass(torch.Tensor) if isinstance(img, torch.Tensor) else img
        )
        masks[i, :h, :w] = (
            mask.as_subclass(torch.Tensor)
            if isinstance(mask, torch.Tensor)
            else torch.as_tensor(mask)
        )
    return images, masks
