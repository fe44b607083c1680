"""Tiled inference for images far larger than the network's input (aerial, satellite, microscopy).

The image is cut into ``tile x tile`` windows that overlap by ``overlap`` pixels (the last row and
column are shifted back so that every window lies inside the image); each window is detected on its
own, its boxes moved to image coordinates, and the windows' detections merged:

1. A box that touches an *inner* window edge (one that is not the image border; within ``edge_px``)
   may be a piece of an object that the window cut. Two boxes of one class from two overlapping
   windows show the same object when they agree inside the windows' shared region (both clipped to
   it overlap with IoU >= 0.5): both windows see the same pixels there. A piece that agrees with a
   box touching no inner edge (the whole object, seen by the other window) is dropped; two pieces
   that agree (an object larger than the overlap, never whole in one window) become their union,
   with the higher score.
2. Per-class NMS at ``nms_thresh`` over what remains (duplicates from the overlaps), best first.

With an overlap at least as large as the objects every object is whole in some window, so step 1
only removes the cut copies; larger objects are stitched from their pieces.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.ops import batched_nms

__all__ = ["tile_windows", "same_object", "merge_tiles", "detect_tiled"]


def tile_windows(
    height: int, width: int, tile: int, overlap: int
) -> list[tuple[int, int, int, int]]:
    """``(x1, y1, x2, y2)`` windows of side ``min(tile, image side)`` covering the image, stride ``tile - overlap``."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(
            f"tile {tile}, overlap {overlap}: need tile >= 1 and 0 <= overlap < tile"
        )

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        out = list(range(0, n - tile, tile - overlap))
        return out + [n - tile]

    return [
        (x, y, min(x + tile, width), min(y + tile, height))
        for y in starts(height)
        for x in starts(width)
    ]


def _clip(boxes: Tensor, regions: Tensor) -> Tensor:
    return torch.cat(
        (
            torch.max(boxes[..., :2], regions[..., :2]),
            torch.min(boxes[..., 2:], regions[..., 2:]),
        ),
        dim=-1,
    )


def _iou_pairs(a: Tensor, b: Tensor) -> Tensor:
    """IoU of matching rows of ``a`` and ``b`` (``... x 4``), 0 where either is empty."""
    wa, ha = (a[..., 2] - a[..., 0]).clamp(min=0), (a[..., 3] - a[..., 1]).clamp(min=0)
    wb, hb = (b[..., 2] - b[..., 0]).clamp(min=0), (b[..., 3] - b[..., 1]).clamp(min=0)
    iw = (torch.min(a[..., 2], b[..., 2]) - torch.max(a[..., 0], b[..., 0])).clamp(
        min=0
    )
    ih = (torch.min(a[..., 3], b[..., 3]) - torch.max(a[..., 1], b[..., 1])).clamp(
        min=0
    )
    inter = iw * ih
    union = wa * ha + wb * hb - inter
    return torch.where(
        union > 0, inter / union.clamp(min=1e-9), torch.zeros_like(union)
    )


def same_object(
    boxes: Tensor,
    labels: Tensor,
    windows: Tensor,
    rows: Tensor,
    cols: Tensor,
    agree: float = 0.5,
) -> Tensor:
    """``len(rows) x len(cols)``: box ``rows[i]`` and box ``cols[j]`` show one object (module docstring, step 1)."""
    w_r, w_c = windows[rows][:, None], windows[cols][None]
    shared = _clip(w_r, w_c)
    a = _clip(boxes[rows][:, None], shared)
    b = _clip(boxes[cols][None], shared)
    other_window = (w_r != w_c).any(dim=-1)
    return (
        (_iou_pairs(a, b) >= agree)
        & other_window
        & (labels[rows][:, None] == labels[cols][None])
    )


def merge_tiles(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    windows: Tensor,
    cut: Tensor,
    *,
    nms_thresh: float,
    limit: int = 100,
) -> tuple[Tensor, Tensor, Tensor]:
    """Merge detections of overlapping windows (module docstring). ``windows``: each box's window
    ``(x1, y1, x2, y2)``, ``cut``: whether it touches an inner window edge. Returns ``(boxes, scores,
    labels)``, best first."""
    boxes, scores, windows = (
        boxes.float().clone(),
        scores.float().clone(),
        windows.float(),
    )
    keep = torch.ones(len(boxes), dtype=torch.bool)
    pieces, whole = torch.nonzero(cut).squeeze(1), torch.nonzero(~cut).squeeze(1)
    if len(pieces) and len(whole):
        keep[pieces[same_object(boxes, labels, windows, pieces, whole).any(dim=1)]] = (
            False
        )
    pieces = pieces[keep[pieces]]
    if len(pieces) > 1:  # pieces that agree, directly or through others, become one box
        match = same_object(boxes, labels, windows, pieces, pieces)
        root = list(range(len(pieces)))

        def find(a: int) -> int:
            while root[a] != a:
                root[a] = root[root[a]]
                a = root[a]
            return a

        for a, b in torch.nonzero(match).tolist():
            root[find(a)] = find(b)
        groups: dict[int, list[int]] = {}
        for a in range(len(pieces)):
            groups.setdefault(find(a), []).append(int(pieces[a]))
        for members in groups.values():
            if len(members) > 1:
                m = torch.tensor(members)
                best = int(m[scores[m].argmax()])
                boxes[best] = torch.cat(
                    (boxes[m, :2].min(dim=0).values, boxes[m, 2:].max(dim=0).values)
                )
                keep[m] = False
                keep[best] = True
    sel = torch.nonzero(keep).squeeze(1)
    order = sel[batched_nms(boxes[sel], scores[sel], labels[sel], nms_thresh)][
        :limit
    ]  # 2.
    return boxes[order], scores[order], labels[order]


def detect_tiled(
    detect: Callable[[tuple[int, int, int, int]], dict[str, Tensor]],
    height: int,
    width: int,
    tile: int,
    overlap: int,
    *,
    nms_thresh: float,
    limit: int = 100,
    edge_px: float = 2.0,
) -> dict[str, Tensor]:
    """Run ``detect`` on each window ``(x1, y1, x2, y2)`` of a ``height x width`` image (it returns
    ``{"boxes", "scores", "labels"}`` in the window's own pixels) and merge (module docstring)."""
    found: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor]] = []
    for x1, y1, x2, y2 in tile_windows(int(height), int(width), tile, overlap):
        out = detect((x1, y1, x2, y2))
        b = torch.as_tensor(out["boxes"]).detach().float().cpu().reshape(-1, 4)
        inner = torch.tensor([x1 > 0, y1 > 0, x2 < width, y2 < height])
        near = torch.stack(
            (
                b[:, 0] <= edge_px,
                b[:, 1] <= edge_px,
                b[:, 2] >= x2 - x1 - edge_px,
                b[:, 3] >= y2 - y1 - edge_px,
            ),
            dim=1,
        )
        cut = (near & inner).any(dim=1)
        b = b + torch.tensor([x1, y1, x1, y1], dtype=b.dtype)
        found.append(
            (
                b,
                torch.as_tensor(out["scores"]).detach().float().cpu().reshape(-1),
                torch.as_tensor(out["labels"]).detach().cpu().reshape(-1).long(),
                torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32).expand(len(b), 4),
                cut,
            )
        )
    boxes, scores, labels, windows, cut = (torch.cat(parts) for parts in zip(*found))
    boxes, scores, labels = merge_tiles(
        boxes, scores, labels, windows, cut, nms_thresh=nms_thresh, limit=limit
    )
    return {"boxes": boxes, "scores": scores, "labels": labels}
