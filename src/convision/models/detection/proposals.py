"""Region proposals by selective search (Uijlings, van de Sande, Gevers, Smeulders, IJCV 2013).

Selective search over-segments the image (Felzenszwalb-Huttenlocher graph segmentation) and greedily
merges the two most similar neighbouring regions (colour, texture, size and fill similarities) until
one region is left; every region ever formed gives one box. "Fast" diversifies over 2 colour spaces
(HSV, Lab), 2 segmentation thresholds k (50, 100) and 2 similarity combinations; "quality" over 5
colour spaces, 4 values of k and 2 combinations. The boxes come ranked by the paper's pseudo-random
hierarchy ordering (a region formed late in a grouping ranks high), so truncating to the first
``max_proposals`` keeps the paper's ranking. This is R-CNN's proposal method ("fast" mode,
Girshick et al. 2014, section 2.1). The search is OpenCV's ``cv2.ximgproc`` implementation.

Small images. OpenCV's segmentation thresholds are in absolute pixel units, tuned for PASCAL-sized
images (about 500 px), so on small images it produces few and coarse regions. ``min_side`` upscales
the image (bilinear) so that its shorter side is at least ``min_side`` pixels before the search and
maps the boxes back. Measured on 30 built-in scenes at 128 px (seed 1, 121 objects, "fast", one
thread): no upscaling: recall 0.950 at IoU 0.5, 0.909 at 0.7, 108 boxes, 0.06 s per image; x1.5:
0.983 / 0.934, 176 boxes, 0.14 s; x2 (``min_side=256``, the default): 0.992 / 0.959, 252 boxes,
0.32 s. "quality" x2: 0.992 / 0.975, 682 boxes, 1.0 s per image.

Ranking and reproducibility. OpenCV draws the paper's random ranking numbers with C's ``rand()``,
whose state is global to the process, so the order (and what ``max_proposals`` truncation keeps)
would change from call to call; the set of boxes does not. ``seed=`` (default 0) reseeds C's
``srand`` right before the search, under a lock, so that the same image and settings always give the
same boxes in the same order (where the C library cannot be reached through ctypes, e.g. some
Windows builds, the order stays irreproducible; ``seed=None`` never touches it).

Post-processing (ours): boxes become ``x1, y1, x2, y2`` floats (OpenCV gives integer ``x, y, w, h``)
in the original image's pixels, clipped to it; exact duplicates (several groupings or strategies
often produce the same box) are removed keeping the first, i.e. best ranked, occurrence; boxes with a
side below ``min_size`` pixels are dropped; at most ``max_proposals`` are kept.

:class:`ProposalCache` computes the boxes of an image once and keeps them on disk, keyed by a hash of
the image bytes and of the settings, so a changed image or setting never reuses stale boxes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from convision.errors import ConfigError, DataError

__all__ = [
    "MODES",
    "ProposalCache",
    "proposal_recall",
    "proposals_for",
    "selective_search",
    "to_uint8_rgb",
]

MODES = ("fast", "quality")
_CACHE_VERSION = 1  # bump when the post-processing changes: old cache files then miss
_SEARCH_LOCK = threading.Lock()  # srand + search must not interleave between threads


def _libc_srand() -> Any:
    try:
        import ctypes

        srand = ctypes.CDLL(None).srand
        srand.argtypes = [ctypes.c_uint]
        srand.restype = None
        return srand
    except (OSError, AttributeError, TypeError):
        return None


_SRAND = _libc_srand()


def to_uint8_rgb(image: np.ndarray | Tensor) -> np.ndarray:
    """``H x W x 3`` uint8 RGB from a uint8 ``H x W x 3`` array or a ``3 x H x W`` float tensor in ``[0, 1]``."""
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ConfigError(
                f"image: expected a 3 x H x W tensor, got shape {tuple(image.shape)}"
            )
        if image.dtype == torch.uint8:
            return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
        arr = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        return np.ascontiguousarray(arr.permute(1, 2, 0).cpu().numpy())
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ConfigError(
            f"image: expected an H x W x 3 uint8 RGB array, got shape {arr.shape} dtype {arr.dtype}"
        )
    return np.ascontiguousarray(arr)


def _check_settings(
    mode: str, max_proposals: int, min_size: float, min_side: int | None
) -> None:
    if mode not in MODES:
        raise ConfigError(
            f"mode: unknown selective search mode {mode!r} (known: {', '.join(MODES)})"
        )
    if int(max_proposals) < 1:
        raise ConfigError(f"max_proposals: must be at least 1, got {max_proposals}")
    if min_size < 0:
        raise ConfigError(f"min_size: must be non-negative, got {min_size}")
    if min_side is not None and int(min_side) < 1:
        raise ConfigError(
            f"min_side: must be a positive number of pixels or None, got {min_side}"
        )


def selective_search(
    image: np.ndarray | Tensor,
    *,
    mode: str = "fast",
    max_proposals: int = 2000,
    min_size: float = 4.0,
    min_side: int | None = 256,
    threads: int = 1,
    seed: int | None = 0,
) -> np.ndarray:
    """Selective search boxes of one RGB image: ``P x 4`` float32 ``x1, y1, x2, y2`` pixels, best first.

    ``image``: ``H x W x 3`` uint8 RGB (or a ``3 x H x W`` float tensor in ``[0, 1]``). ``mode``:
    ``"fast"`` (R-CNN's choice) or ``"quality"``. ``min_size``: boxes with a side shorter than this
    (original pixels) are dropped. ``min_side``: upscale so that the shorter side is at least this
    many pixels before searching (``None``: never; see the module docstring). ``threads``: OpenCV's
    thread count during the call (restored afterwards); 1 avoids oversubscription when images are
    processed by several workers, the search itself is sequential. ``seed``: the C ``srand`` seed
    for OpenCV's random ranking (module docstring), ``None`` to leave it alone.
    """
    import cv2

    _check_settings(mode, max_proposals, min_size, min_side)
    rgb = to_uint8_rgb(image)
    h, w = rgb.shape[:2]
    scale = 1.0
    if min_side is not None and min(h, w) < min_side:
        scale = float(min_side) / min(h, w)
    previous = cv2.getNumThreads()
    cv2.setNumThreads(int(threads))
    try:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
        search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(bgr)
        if mode == "fast":
            search.switchToSelectiveSearchFast()
        else:
            search.switchToSelectiveSearchQuality()
        with _SEARCH_LOCK:
            if seed is not None and _SRAND is not None:
                _SRAND(int(seed) & 0xFFFFFFFF)
            rects = search.process()
    finally:
        cv2.setNumThreads(previous)
    if rects is None or len(rects) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    sx = bgr.shape[1] / w  # the exact factors after rounding the resized size
    sy = bgr.shape[0] / h
    boxes = np.stack(
        (
            rects[:, 0] / sx,
            rects[:, 1] / sy,
            (rects[:, 0] + rects[:, 2]) / sx,
            (rects[:, 1] + rects[:, 3]) / sy,
        ),
        axis=1,
    )
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    boxes = boxes.astype(np.float32)
    _, first = np.unique(boxes, axis=0, return_index=True)
    boxes = boxes[np.sort(first)]  # deduplicated, original ranking kept
    keep = (
        ((boxes[:, 2] - boxes[:, 0]) >= min_size)
        & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
        & (boxes[:, 2] > boxes[:, 0])
        & (boxes[:, 3] > boxes[:, 1])
    )
    return np.ascontiguousarray(boxes[keep][: int(max_proposals)])


class ProposalCache:
    """Selective search boxes computed once per image and kept in ``folder`` (one ``.npy`` per image).

    The file name is a SHA-256 of the image's shape and bytes and of the settings (``mode``,
    ``max_proposals``, ``min_size``, ``min_side``, ``seed``, a format version), so a changed image or setting
    is a miss. Writes are atomic (a temporary file in ``folder`` renamed into place); an unreadable
    cache file is recomputed and replaced. ``hits`` and ``misses`` count look-ups.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        mode: str = "fast",
        max_proposals: int = 2000,
        min_size: float = 4.0,
        min_side: int | None = 256,
        seed: int | None = 0,
    ) -> None:
        _check_settings(mode, max_proposals, min_size, min_side)
        self.folder = Path(folder)
        self.settings: dict[str, Any] = {
            "mode": mode,
            "max_proposals": int(max_proposals),
            "min_size": float(min_size),
            "min_side": None if min_side is None else int(min_side),
            "seed": None if seed is None else int(seed),
        }
        self.hits = 0
        self.misses = 0

    def key(self, image: np.ndarray | Tensor) -> str:
        """The cache key of ``image`` under these settings (hex digest)."""
        rgb = to_uint8_rgb(image)
        digest = hashlib.sha256()
        digest.update(
            json.dumps(
                {**self.settings, "version": _CACHE_VERSION, "shape": list(rgb.shape)},
                sort_keys=True,
            ).encode()
        )
        digest.update(rgb.tobytes())
        return digest.hexdigest()

    def path(self, image: np.ndarray | Tensor) -> Path:
        """Where the boxes of ``image`` are (or will be) stored."""
        return self.folder / f"{self.key(image)}.npy"

    def __call__(self, image: np.ndarray | Tensor) -> np.ndarray:
        """The boxes of ``image`` (``P x 4`` float32 xyxy): from disk, or computed and stored."""
        rgb = to_uint8_rgb(image)
        path = self.path(rgb)
        if path.is_file():
            try:
                boxes = np.load(path, allow_pickle=False)
                if (
                    boxes.ndim == 2
                    and boxes.shape[1] == 4
                    and boxes.dtype == np.float32
                ):
                    self.hits += 1
                    return boxes
            except (OSError, ValueError):
                pass  # truncated or foreign file: recompute below
        self.misses += 1
        boxes = selective_search(rgb, **self.settings)
        self._write(path, boxes)
        return boxes

    def _write(self, path: Path, boxes: np.ndarray) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".npy")
        except OSError as e:
            raise DataError(
                f"{self.folder}: cannot write the proposal cache ({e.strerror or e})"
            ) from None
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, boxes, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def proposals_for(
    dataset_images: Iterable[tuple[Any, np.ndarray | Tensor]],
    cache: ProposalCache,
    progress: bool = True,
) -> dict[Any, np.ndarray]:
    """``{key: P x 4 boxes}`` for ``(key, image)`` pairs, through ``cache`` (a tqdm bar when ``progress``)."""
    from tqdm import tqdm

    total = len(dataset_images) if hasattr(dataset_images, "__len__") else None  # type: ignore[arg-type]
    out: dict[Any, np.ndarray] = {}
    bar = tqdm(
        dataset_images,
        total=total,
        desc="selective search",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    for key, image in bar:
        out[key] = cache(image)
        bar.set_postfix(hits=cache.hits, misses=cache.misses, refresh=False)
    return out


def _as_tensor(boxes: np.ndarray | Tensor) -> Tensor:
    return torch.as_tensor(
        np.asarray(boxes) if not isinstance(boxes, Tensor) else boxes,
        dtype=torch.float32,
    ).reshape(-1, 4)


def proposal_recall(
    proposals: np.ndarray | Tensor | Sequence[np.ndarray | Tensor],
    gt_boxes: np.ndarray | Tensor | Sequence[np.ndarray | Tensor],
    iou: float = 0.5,
) -> float:
    """Fraction of ground-truth boxes covered by some proposal with IoU ``>= iou``.

    One image (two ``N x 4`` arrays) or a list of images (two lists, pooled over all boxes).
    ``nan`` when there is no ground-truth box at all.
    """
    single = isinstance(proposals, (np.ndarray, Tensor))
    if single != isinstance(gt_boxes, (np.ndarray, Tensor)):
        raise ConfigError(
            "proposal_recall: give one array each or one list each for proposals and gt_boxes"
        )
    props = [proposals] if single else list(proposals)  # type: ignore[list-item]
    gts = [gt_boxes] if single else list(gt_boxes)  # type: ignore[list-item]
    if len(props) != len(gts):
        raise ConfigError(
            f"proposal_recall: {len(props)} proposal sets for {len(gts)} images"
        )
    covered = total = 0
    for p, g in zip(props, gts):
        p, g = _as_tensor(p), _as_tensor(g)
        total += len(g)
        if len(g) and len(p):
            covered += int((box_iou(g, p).max(dim=1).values >= iou).sum())
    return covered / total if total else float("nan")
