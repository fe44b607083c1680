"""OverFeat's detection machinery: multi-scale dense evaluation, a localizer's box regressor slid
over the image, and greedy merging of the predicted boxes.

Pierre Sermanet, David Eigen, Xiang Zhang, Michael Mathieu, Rob Fergus, Yann LeCun, "OverFeat:
Integrated Recognition, Localization and Detection using Convolutional Networks", ICLR 2014
(arXiv:1312.6229).

* **Dense evaluation at several scales** (Sec. 3.3, Table 5): the convolutionalized classifier
  (:func:`convision.nn.convolutionalize`) runs once on the whole image at each scale; score-map
  cell ``(i, j)`` at scale ``s`` is the classifier's output on the window
  ``[j*stride, i*stride, +size]`` of the resized image, i.e. a window of side ``size / s`` of the
  original. :func:`dense_scores`.
* **Regression at every window** (Sec. 4.1-4.2): the regression network runs on the same kind of
  feature map and predicts, at every spatial location and scale, the box of the object in that
  window. Here the regressor is a convision localizer's box head
  (:class:`~convision.models.localization.Localizer`, ``box_input="spatial"``), made
  convolutional the same way as the classifier: :class:`BoxRegressorMap`.
* **Greedy merge** (Sec. 4.3): repeatedly merge the pair of boxes with the best (smallest) match
  score until the best score exceeds a threshold: :func:`merge_boxes`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_area, box_convert, box_iou

from convision.nn.convolutionalize import ConvolutionalClassifier, convolutionalize

__all__ = [
    "ScaleScores",
    "resize_by",
    "cell_windows",
    "dense_scores",
    "BoxRegressorMap",
    "match_scores",
    "merge_boxes",
]


def resize_by(image: Tensor, scale: float) -> Tensor:
    """``image [3,H,W]`` (float) resized by ``scale`` (sides rounded; bilinear, antialiased)."""
    h, w = image.shape[-2:]
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    if size == [h, w]:
        return image
    return F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]


@dataclass
class ScaleScores:
    """One scale of :func:`dense_scores`: ``probs [K, h, w]`` and ``windows [h*w, 4]`` (the
    cells' windows, xyxy in original-image pixels, row-major), the resized image's side factors."""

    scale: float
    probs: Tensor
    windows: Tensor
    factor_x: float
    factor_y: float


def cell_windows(
    rows: int, cols: int, stride: int, size: int, factor_x: float, factor_y: float
) -> Tensor:
    """``[rows*cols, 4]`` xyxy windows of a score map's cells, divided back to the original image."""
    i, j = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    x1, y1 = (j.flatten() * stride).double(), (i.flatten() * stride).double()
    boxes = torch.stack([x1, y1, x1 + size, y1 + size], 1)
    return boxes / torch.tensor([factor_x, factor_y, factor_x, factor_y]).double()


@torch.no_grad()
def dense_scores(
    classifier: ConvolutionalClassifier, image: Tensor, scales: list[float]
) -> list[ScaleScores]:
    """Softmax class maps of ``classifier`` over ``image [3,H,W]`` (normalised float) at each scale:
    one forward pass per scale (OverFeat's multi-scale dense evaluation)."""
    h, w = image.shape[-2:]
    out = []
    for s in scales:
        x = resize_by(image, s)
        hs, ws = x.shape[-2:]
        probs = classifier(x[None]).float().softmax(1)[0].cpu()
        out.append(
            ScaleScores(
                scale=float(s),
                probs=probs,
                windows=cell_windows(
                    probs.shape[1],
                    probs.shape[2],
                    classifier.stride,
                    classifier.input_size,
                    ws / w,
                    hs / h,
                ),
                factor_x=ws / w,
                factor_y=hs / h,
            )
        )
    return out


class BoxRegressorMap(nn.Module):
    """A localizer's box head slid over a large image: ``forward(x[1,3,H,W]) -> (boxes [h*w, 4],
    (h, w))``, one box per window of side ``input_size`` at stride ``stride`` (row-major), xyxy in
    ``x``'s pixels.

    The localizer (``box_input="spatial"``) regresses the object's box from its backbone's last
    spatial map ``[C, f, f]`` at its training size ``S`` through ``Conv1x1 -> ReLU ->
    AdaptiveAvgPool(4) -> Flatten -> Linear... -> 4``; :func:`convolutionalize` turns that head into
    convolutions (the pool folded into an ``f x f`` kernel), so on a larger map it predicts, for
    every ``f x f`` block of cells, the box the localizer would predict for the window of side ``S``
    those cells see. The prediction is ``(cx, cy, w, h)`` normalised to the window (the localizer's
    contract); here it is placed in the window: ``x1 = j*stride + (cx - w/2) * S`` etc.
    Like the classifier's dense evaluation, the map equals the crop-by-crop predictions exactly
    only for backbones without zero padding.
    """

    def __init__(self, localizer: nn.Module, input_size: int) -> None:
        super().__init__()
        if getattr(localizer, "box_input", None) != "spatial":
            raise ValueError(
                "the localizer's box head reads the pooled feature vector (box_input 'pooled'); "
                "only a spatial box head (box_input 'spatial', the default) can slide over an image"
            )
        self.net = copy.deepcopy(localizer.classifier.net).eval()
        self.arch = localizer.classifier.arch
        self.spatial_name = localizer._spatial_name
        self.input_size = int(input_size)
        fmap = self.spatial_map(torch.zeros(1, 3, self.input_size, self.input_size))
        f = fmap.shape[-1]
        bigger = self.spatial_map(
            torch.zeros(1, 3, self.input_size + 64, self.input_size + 64)
        ).shape[-1]
        if bigger == f:
            raise ValueError("the localizer's spatial map does not grow with the image")
        self.stride = round(64 / (bigger - f))
        self.head = convolutionalize(
            nn.Sequential(*copy.deepcopy(localizer.box_head)).eval(),
            input_size=f,
            in_channels=fmap.shape[1],
        )

    def spatial_map(self, x: Tensor) -> Tensor:
        p = next(self.net.parameters())
        self.net(x.to(device=p.device, dtype=p.dtype))
        fmap = self.net.get_submodule(self.spatial_name).__dict__.pop("_localizer_map")
        return torch.relu(fmap) if self.arch == "densenet121" else fmap

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        out = self.head(self.spatial_map(x))[0].float()  # [4, h, w]
        rows, cols = out.shape[-2:]
        cxcywh = 0.5 + out.flatten(1).T  # the localizer's "0.5 + Linear(...)"
        cxcywh[:, 2:] = cxcywh[:, 2:].clamp(min=1e-3)
        boxes = box_convert(cxcywh.double(), "cxcywh", "xyxy") * self.input_size
        origin = cell_windows(rows, cols, self.stride, self.input_size, 1.0, 1.0)
        return (boxes + origin[:, :2].repeat(1, 2)).cpu(), (rows, cols)


def match_scores(boxes: Tensor) -> Tensor:
    """``[N, N]`` OverFeat match scores of xyxy boxes (smaller = better match).

    The paper (Sec. 4.3) sums "the distance between centers of the two bounding boxes and the
    intersection area of the boxes". Taken literally a larger overlap would make a *worse* match
    and the two terms have different units, so both are made relative, and overlap counts for a
    match: ``||c1 - c2|| / ((sqrt(a1) + sqrt(a2)) / 2) + (1 - IoU(b1, b2))``. Two equal boxes score
    0; two equal boxes shifted by a quarter of their side 0.65, by half their side 1.17; disjoint
    boxes at least 2.
    """
    return _match(boxes, boxes)


def _match(a: Tensor, b: Tensor) -> Tensor:
    """``[len(a), len(b)]`` match scores between two sets of xyxy boxes (see :func:`match_scores`)."""
    a, b = a.double(), b.double()
    ca, cb = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    sa, sb = (box_area(x).clamp(min=1e-12).sqrt() for x in (a, b))
    dist = torch.cdist(ca, cb) / ((sa[:, None] + sb[None, :]) / 2)
    return dist + (1 - box_iou(a, b))


def merge_boxes(
    boxes: Tensor, scores: Tensor, threshold: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """OverFeat's greedy merge (Sec. 4.3, steps (d)-(g)) of xyxy ``boxes [N, 4]`` with ``scores [N]``.

    Repeat: take the pair ``(b1, b2)`` with the smallest :func:`match_scores`; if it exceeds
    ``threshold``, stop; else replace both by ``box_merge(b1, b2)``. The paper's box_merge averages the
    two boxes' coordinates; here a merged box is the average of *all* the original boxes merged
    into it (so the order of the merges does not weigh early boxes less), and its score is the sum
    of their scores (the paper's final ranking "cumulatively adding the detection class outputs").
    Returns ``(boxes [M, 4], scores [M], counts [M])`` sorted by score, highest first.
    """
    b = boxes.double().reshape(-1, 4)
    n = len(b)
    if n == 0:
        return b, scores.double().reshape(0), torch.zeros(0, dtype=torch.long)
    total = b.clone()  # coordinate sums
    count = torch.ones(n, dtype=torch.float64)
    score = scores.double().clone()
    alive = torch.ones(n, dtype=torch.bool)
    m = match_scores(b)
    m.fill_diagonal_(float("inf"))
    while True:
        flat = int(m.argmin())
        i, j = divmod(flat, n)
        if not m[i, j] <= threshold:  # also stops on inf (one box left)
            break
        total[i] += total[j]
        count[i] += count[j]
        score[i] += score[j]
        alive[j] = False
        m[j, :] = m[:, j] = float("inf")
        merged = total[i] / count[i]
        row = _match(merged[None], total / count[:, None])[0]
        row[~alive] = float("inf")
        row[i] = float("inf")
        m[i, :] = m[:, i] = row
    keep = alive.nonzero().flatten()
    order = score[keep].argsort(descending=True)
    keep = keep[order]
    return total[keep] / count[keep, None], score[keep], count[keep].long()
