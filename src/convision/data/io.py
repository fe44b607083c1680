"""Reading images and segmentation masks with Pillow, with one-line errors that name the file.

Images always come back as ``H x W x 3`` uint8 RGB, whatever the file holds:

- grayscale ``L`` / ``1`` is repeated into three channels;
- 16-bit grayscale (``I;16``, ``I;16B``, ...) and 32-bit integer ``I`` are scaled from the
  16-bit range: ``0..65535 -> 0..255`` (``round(v / 257)``, values outside clipped);
- 32-bit float ``F`` is taken as ``0..1`` when all values lie in ``[0, 1]``, else as ``0..255``
  (clipped); NaN becomes 0;
- alpha (``RGBA``, ``LA``, ``PA``) is dropped: the stored colour channels are kept as they are,
  not composited onto a background;
- palette (``P``), ``CMYK``, ``YCbCr``, ``HSV`` are converted to RGB by Pillow;
- multi-frame files (GIF, TIFF) give their first frame;
- EXIF orientation is NOT applied: pixels are used as stored, exactly as the masks are.

Masks are class-index images (``H x W``): pixel value = class id, 255 = ignore. A palette PNG
(``P`` mode, as Pascal VOC's ``SegmentationClass``) holds the class indices in its pixels and the
display colours in its palette; the indices are read, the colours ignored. RGB masks whose three
channels are equal everywhere (grey PNGs) are accepted as indices; colour RGB masks are refused,
since mapping colours to classes is the data set's job, not a guess.

Truncated files are errors: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from convision.errors import DataError

IGNORE_INDEX = 255
"""Mask value for pixels that count in neither the loss nor the metrics (VOC's object boundaries)."""

_READ_ERRORS = (
    OSError,
    UnidentifiedImageError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)


def is_header(row: list[str]) -> bool:
    """Whether a CSV row of ``path,...`` is a header (``filename,category``, ``path,label`` ...): its
    first cell names no file (no extension)."""
    first = row[0].strip() if row else ""
    return bool(first) and not Path(first).suffix


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _open(path: str | Path) -> Image.Image:
    """Open and fully decode ``path`` (``load()``), turning every failure into a DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a file")
    try:
        im = Image.open(p)
    except UnidentifiedImageError:
        raise DataError(
            f"{p}: not an image file Pillow can read (unknown or corrupt format)"
        ) from None
    except _READ_ERRORS as e:
        raise DataError(
            f"{p}: cannot read image ({_one_line(e) or type(e).__name__})"
        ) from None
    try:
        im.load()  # decode now: truncated or corrupt data fail here, not deep in training
    except _READ_ERRORS as e:
        im.close()
        raise DataError(
            f"{p}: cannot read image ({_one_line(e) or type(e).__name__})"
        ) from None
    return im


def _scale16(a: np.ndarray) -> np.ndarray:
    a = np.clip(a.astype(np.float32), 0, 65535)
    return np.rint(a / 257.0).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``H x W x 3`` uint8 RGB (see the module notes for mode handling)."""
    im = _open(path)
    mode = im.mode
    try:
        if mode == "RGB":
            arr = np.asarray(im)
        elif mode.startswith("I;16") or mode == "I":
            arr = _scale16(np.asarray(im))
        elif mode == "F":
            a = np.nan_to_num(
                np.asarray(im, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0
            )
            if a.size and a.min() >= 0.0 and a.max() <= 1.0:
                a = a * 255.0
            arr = np.rint(np.clip(a, 0, 255)).astype(np.uint8)
        else:
            arr = np.asarray(im.convert("RGB"))
    except (ValueError, OSError) as e:
        raise DataError(
            f"{path}: cannot convert {mode} image to RGB ({_one_line(e)})"
        ) from None
    finally:
        im.close()
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(
            f"{path}: cannot convert {mode} image to RGB (got shape {arr.shape})"
        )
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_mask(path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """Read a class-index mask as ``H x W`` (uint8 for 8-bit files, int64 for 16/32-bit ones).

    With ``num_classes``, every value must be ``< num_classes`` or 255 (ignore).
    """
    im = _open(path)
    mode, fmt = im.mode, im.format
    try:
        if fmt == "JPEG":
            raise DataError(
                f"{path}: masks must be lossless (PNG); JPEG compression changes the class values"
            )
        if mode in ("P", "L"):
            arr = np.asarray(
                im
            )  # P: the palette indices themselves (VOC SegmentationClass), not colours
        elif mode in ("PA", "LA"):
            arr = np.asarray(im)[:, :, 0]  # alpha dropped
        elif mode == "1":
            arr = np.asarray(im).astype(np.uint8)
        elif mode.startswith("I;16") or mode == "I":
            arr = np.asarray(im).astype(np.int64)
        elif mode == "F":
            a = np.asarray(im, dtype=np.float64)
            if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
                raise DataError(
                    f"{path}: mask has non-integer values; expected class indices"
                )
            arr = a.astype(np.int64)
        elif mode in ("RGB", "RGBA", "RGBX"):
            rgb = np.asarray(im)[:, :, :3]
            if not (
                np.array_equal(rgb[:, :, 0], rgb[:, :, 1])
                and np.array_equal(rgb[:, :, 0], rgb[:, :, 2])
            ):
                raise DataError(
                    f"{path}: expected a class-index or palette PNG, got an RGB image; convert colours to indices"
                )
            arr = rgb[:, :, 0]
        else:
            raise DataError(
                f"{path}: expected a class-index or palette PNG, got a {mode} image"
            )
    finally:
        im.close()
    if arr.dtype == np.int64 and arr.size and arr.min() < 0:
        raise DataError(f"{path}: mask has negative value {int(arr.min())}")
    arr = np.ascontiguousarray(arr)
    if num_classes is not None:
        check_mask_values(arr, num_classes, path)
    return arr


def check_mask_values(mask: np.ndarray, num_classes: int, path: str | Path) -> None:
    """Raise a DataError if ``mask`` holds a value ``>= num_classes`` other than 255 (ignore)."""
    if mask.size == 0:
        return
    if int(mask.max()) < num_classes:
        return
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:5]) + (
            ", ..." if bad.size > 5 else ""
        )
        noun = "value" if bad.size == 1 else "values"
        raise DataError(
            f"{path}: mask has {noun} {shown} but the data set has {num_classes} classes "
            f"(0..{num_classes - 1}, 255 = ignore)"
        )
