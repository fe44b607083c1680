"""R-CNN: regions with CNN features (Girshick, Donahue, Darrell, Malik, CVPR 2014).

The pipeline of the paper, stage by stage:

1. **Proposals**: about 2000 selective search boxes per image, "fast" mode (section 2.1;
   :func:`convision.models.detection.proposals.selective_search`).
2. **Warp** (section 2.1, appendix A): every proposal is dilated so that, once warped to the CNN's
   ``warp_size x warp_size`` input, there are exactly ``context_padding`` (p = 16) pixels of image
   context around the original box, then warped anisotropically (no aspect ratio kept) to
   ``warp_size``. Here the crop-and-resize is ``torchvision.ops.roi_align`` on the normalised image
   (bilinear samples, ``sampling_ratio=-1``: several samples averaged per output pixel when shrinking).
   Where the dilated box leaves the image, the samples read zeros of the normalised image, i.e. the
   image mean, as in the paper's code (roi_align clamps up to one pixel outside to the border value).
3. **Features**: the CNN's penultimate representation of each warped region. The paper uses
   AlexNet's fc7 (4096-d) *after fine-tuning* on warped proposals (section 2.3). **We do not
   fine-tune by default**: features are those of the ImageNet classifier as is: ``mobilenet_v2``
   global-average-pooled 1280-d (default), ``resnetNN`` the pooled layer4 output, ``vgg16(_bn)`` fc7
   (4096-d, after its ReLU). Features are scaled by one number so that their mean L2 norm on the
   training proposals is 20 (``feature_norm``), as the released R-CNN code does.
4. **Per-class linear SVMs**, one vs rest (section 2.3): positives are the ground-truth boxes only,
   negatives the proposals with IoU < 0.3 with every instance of the class (proposals in between are
   ignored). Trained with liblinear's L2-regularised hinge loss (``sklearn.svm.LinearSVC``,
   ``loss="hinge"``) with the code's settings: C = 0.001, positive class weight 2, bias feature 10.
   **Hard-negative mining** (Felzenszwalb et al. 2010, as in the R-CNN code): train on a cache of
   negatives, score all negatives, add those inside the margin (score > -1), evict cached ones that
   became easy (score < -1.2), retrain; a few rounds, the cache bounded by ``max_negatives`` (highest
   scores kept). The code mines image by image with a growing cache; we mine in rounds over all
   negatives (features are kept in memory), which the same thresholds make equivalent in spirit.
5. **Bounding-box regression** (appendix C): per class, ridge regression with lambda = 1000 from the
   features of proposals with IoU >= 0.6 with a ground-truth box of that class (the best-overlapping
   one) to the R-CNN targets (:func:`~convision.models.detection.box_coder.encode`, ``ROI_WEIGHTS``;
   ridge is linear in the targets, so their scaling does not change the boxes). The paper regresses
   from pool5 features; **we use the same feature vector as the SVMs**. sklearn's ``Ridge`` does not
   penalise the intercept (the code's bias column is penalised). lambda = 1000 presumes PASCAL's
   tens of thousands of samples per class: on a few dozen (tiny synthetic sets) it shrinks the
   regressors to almost nothing; pass a smaller ``bbox_lambda`` there (10 took the mean IoU of the
   training positives of 8 tiny scenes from 0.854 to 0.949, 1000 to 0.856).
6. **Inference** (section 2.2): every proposal is scored by every SVM; the class-specific regressor
   moves each box, boxes are clipped to the image, then per-class greedy NMS at IoU 0.3 and the best
   ``detections_per_image`` (100) are kept; boxes scoring below ``score_thresh`` (-1, inside the
   margin; ours) are dropped first. ``nms_after_regression=False`` runs NMS on the proposals and
   regresses the survivors instead.

Memory and speed: :meth:`RCNN.fit` keeps the features of every training proposal in memory
(``proposals x D`` float32: 2000 proposals x 1280 x 4 bytes = 10 MB per image for mobilenet_v2), so it
suits data sets of hundreds, not tens of thousands, of images; the paper caches them on disk. Each
proposal is a separate CNN pass (the cost Fast R-CNN removes): measured on a loaded 2-core CPU,
mobilenet_v2 costs about 25 ms per region at ``warp_size=64`` and 140 ms at 224. The SVMs use the
paper's C = 0.001: with few positives it leaves most margins below 0 (rankings stay good); C = 0.01
to 0.1 gives positive margins on the tiny synthetic sets.

Class ids: one SVM per user class ``0..K-1``; there is no background output at all (background is
"every SVM says no"), so no shift (:func:`convision.models.detection.to_user`) is needed.
The learnt SVMs, regressors and the feature scale are buffers: ``state_dict()`` holds the whole
detector and reloads with ``torch.load(..., weights_only=True)`` into a model built with the same
arguments. Nothing is trained by gradient descent: use :meth:`RCNN.fit`, not a trainer.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import (
    batched_nms,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
    roi_align,
)

from convision.errors import ConfigError, DataError
from convision.models.detection.box_coder import ROI_WEIGHTS, decode, encode

__all__ = [
    "RCNN",
    "dilate_boxes",
    "rcnn",
    "train_svm_hard_negatives",
    "warp_regions",
    "penultimate_features",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dilate_boxes(boxes: Tensor, warp_size: int, context_padding: int) -> Tensor:
    """Enlarge ``boxes`` (``P x 4`` xyxy) so that, warped to ``warp_size``, the original box spans
    ``[p, warp_size - p]``: each side grows by ``p * size / (warp_size - 2p)`` (per axis)."""
    p = float(context_padding)
    if not 0 <= 2 * p < warp_size:
        raise ConfigError(
            f"context_padding: must be in [0, warp_size / 2), got {context_padding} for warp_size {warp_size}"
        )
    if p == 0:
        return boxes
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    px = w * p / (warp_size - 2 * p)
    py = h * p / (warp_size - 2 * p)
    return torch.stack(
        (boxes[:, 0] - px, boxes[:, 1] - py, boxes[:, 2] + px, boxes[:, 3] + py), dim=1
    )


def warp_regions(
    image: Tensor, boxes: Tensor, warp_size: int, context_padding: int = 0
) -> Tensor:
    """Anisotropic crop-and-resize of ``boxes`` (dilated by ``context_padding``, see
    :func:`dilate_boxes`) from ``image`` (``C x H x W``): ``P x C x warp_size x warp_size``."""
    rois = dilate_boxes(boxes.to(image.dtype), warp_size, context_padding)
    return roi_align(
        image[None],
        [rois.to(image.device)],
        output_size=warp_size,
        spatial_scale=1.0,
        sampling_ratio=-1,
        aligned=True,
    )


def penultimate_features(
    backbone: str, weights: str | os.PathLike | None
) -> tuple[nn.Module, int]:
    """A torchvision classifier cut before its last layer: ``N x 3 x S x S -> N x D``, and ``D``."""
    from convision.models.backbones import BACKBONES, load_torchvision_classifier

    model: Any = load_torchvision_classifier(backbone, weights)
    family = BACKBONES[backbone][0]
    if family == "mobilenet_v2":
        net = nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        dim = model.classifier[-1].in_features
    elif family == "vgg":
        net = nn.Sequential(
            model.features, model.avgpool, nn.Flatten(1), *list(model.classifier)[:-1]
        )  # fc7 + ReLU (+ Dropout, off in eval)
        dim = model.classifier[-1].in_features
    else:  # resnet
        net = nn.Sequential(
            *[m for name, m in model.named_children() if name != "fc"], nn.Flatten(1)
        )
        dim = model.fc.in_features
    return net, int(dim)


def train_svm_hard_negatives(
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    C: float = 0.001,
    pos_weight: float = 2.0,
    bias_scale: float = 10.0,
    rounds: int = 3,
    max_negatives: int = 20000,
    hard_threshold: float = -1.0,
    evict_threshold: float = -1.2,
    seed: int = 0,
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """One linear SVM, positives vs negatives (``N x D`` float arrays), with hard-negative mining.

    If all negatives fit in ``max_negatives`` they are all used (mining would find nothing new).
    Otherwise the cache starts as a random half of ``max_negatives``; each round trains, scores every
    negative, keeps cached ones scoring ``>= evict_threshold``, adds every one scoring
    ``> hard_threshold`` (the highest scores win when over ``max_negatives``), and stops early when
    nothing new is hard. Returns ``(w, b, info)``: ``info`` has ``"negatives"`` (indices of the final
    cache), ``"scores"`` (every negative's score under the returned SVM), ``"selection_scores"``
    (under the SVM that chose the final cache; ``None`` if that was the random start), ``"rounds"``
    and ``"new_hard"`` (new hard negatives found per round).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    def train(neg_idx: np.ndarray) -> tuple[np.ndarray, float]:
        x = np.concatenate((positives, negatives[neg_idx]))
        y = np.concatenate((np.ones(len(positives)), -np.ones(len(neg_idx))))
        svm = LinearSVC(
            C=C,
            loss="hinge",
            dual=True,
            class_weight={1: pos_weight, -1: 1.0},
            intercept_scaling=bias_scale,
            max_iter=5000,
            random_state=seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm.fit(x, y)
        return svm.coef_[0].astype(np.float32), float(svm.intercept_[0])

    n = len(negatives)
    if len(positives) == 0 or n == 0:
        raise ValueError(
            "train_svm_hard_negatives needs at least one positive and one negative"
        )
    rng = np.random.default_rng(seed)
    if n <= max_negatives:
        w, b = train(np.arange(n))
        return (
            w,
            b,
            {
                "negatives": np.arange(n),
                "scores": negatives @ w + b,
                "selection_scores": None,
                "rounds": 0,
                "new_hard": [],
            },
        )
    cache = np.sort(rng.choice(n, size=max(1, max_negatives // 2), replace=False))
    w, b = train(cache)
    scores = negatives @ w + b
    chosen_by: np.ndarray | None = (
        None  # the scores that chose the cache (None: the random start)
    )
    new_hard: list[int] = []
    for _ in range(rounds):
        in_cache = np.zeros(n, dtype=bool)
        in_cache[cache] = True
        new = ~in_cache & (scores > hard_threshold)
        new_hard.append(int(new.sum()))
        if not new.any():
            break  # converged: every hard negative is already cached
        candidates = np.flatnonzero((in_cache & (scores >= evict_threshold)) | new)
        if len(candidates) > max_negatives:
            candidates = candidates[
                np.argsort(-scores[candidates], kind="stable")[:max_negatives]
            ]
        cache, chosen_by = np.sort(candidates), scores
        w, b = train(cache)
        scores = negatives @ w + b
    info = {
        "negatives": cache,
        "scores": scores,
        "selection_scores": chosen_by,
        "rounds": len(new_hard),
        "new_hard": new_hard,
    }
    return w, b, info


def _targets_from(
    items: Iterable[Any], targets: Sequence[dict[str, Tensor]] | None
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    if targets is None:
        if hasattr(items, "__len__") and hasattr(
            items, "__getitem__"
        ):  # map-style dataset
            pairs = [items[i] for i in range(len(items))]  # type: ignore[index, arg-type]
        else:
            pairs = list(items)
        return [p[0] for p in pairs], [p[1] for p in pairs]
    return list(items), list(targets)


class RCNN(nn.Module):
    """R-CNN (see the module docstring). Build it with :func:`rcnn`; train with :meth:`fit`."""

    def __init__(
        self,
        features: nn.Module,
        feature_dim: int,
        num_classes: int,
        *,
        warp_size: int = 224,
        context_padding: int = 16,
        svm_C: float = 0.001,
        svm_pos_weight: float = 2.0,
        svm_bias_scale: float = 10.0,
        hard_negative_rounds: int = 3,
        max_negatives: int = 20000,
        neg_iou: float = 0.3,
        bbox_iou: float = 0.6,
        bbox_lambda: float = 1000.0,
        feature_norm: float = 20.0,
        nms_iou: float = 0.3,
        score_thresh: float = -1.0,
        detections_per_image: int = 100,
        nms_after_regression: bool = True,
        proposal_mode: str = "fast",
        max_proposals: int = 2000,
        proposal_min_side: int | None = 256,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ConfigError(f"num_classes: must be at least 1, got {num_classes}")
        if int(warp_size) < 8:
            raise ConfigError(f"warp_size: must be at least 8 pixels, got {warp_size}")
        if not 0 <= 2 * context_padding < warp_size:
            raise ConfigError(
                f"context_padding: must be in [0, warp_size / 2), got {context_padding} for warp_size {warp_size}"
            )
        self.features = features
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.features.eval()
        self.num_classes = int(num_classes)
        self.feature_dim = int(feature_dim)
        self.warp_size = int(warp_size)
        self.context_padding = int(context_padding)
        self.svm_C = float(svm_C)
        self.svm_pos_weight = float(svm_pos_weight)
        self.svm_bias_scale = float(svm_bias_scale)
        self.hard_negative_rounds = int(hard_negative_rounds)
        self.max_negatives = int(max_negatives)
        self.neg_iou = float(neg_iou)
        self.bbox_iou = float(bbox_iou)
        self.bbox_lambda = float(bbox_lambda)
        self.feature_norm = float(feature_norm)
        self.nms_iou = float(nms_iou)
        self.score_thresh = float(score_thresh)
        self.detections_per_image = int(detections_per_image)
        self.nms_after_regression = bool(nms_after_regression)
        self.proposal_settings: dict[str, Any] = {
            "mode": proposal_mode,
            "max_proposals": int(max_proposals),
            "min_side": proposal_min_side,
        }
        self.seed = int(seed)
        k, d = self.num_classes, self.feature_dim
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.register_buffer("feature_scale", torch.tensor(1.0))
        self.register_buffer("svm_weight", torch.zeros(k, d))
        self.register_buffer("svm_bias", torch.zeros(k))
        self.register_buffer("bbox_weight", torch.zeros(k, 4, d))
        self.register_buffer("bbox_bias", torch.zeros(k, 4))
        self.register_buffer("class_fitted", torch.zeros(k, dtype=torch.bool))

    def train(self, mode: bool = True) -> RCNN:
        """The CNN stays in eval mode (fixed features: batch-norm statistics, no dropout)."""
        super().train(mode)
        self.features.eval()
        return self

    # ------------------------------------------------------------------ features
    def _device(self) -> torch.device:
        return self.mean.device

    @torch.no_grad()
    def extract(self, image: Tensor, boxes: Tensor, batch_size: int = 128) -> Tensor:
        """Unscaled CNN features (``P x D``, on the model's device) of ``boxes`` warped from ``image``."""
        device = self._device()
        x = (image.to(device, torch.float32) - self.mean[:, None, None]) / self.std[
            :, None, None
        ]
        boxes = boxes.to(device, torch.float32).reshape(-1, 4)
        out = [
            self.features(
                warp_regions(
                    x, boxes[i : i + batch_size], self.warp_size, self.context_padding
                )
            ).flatten(1)
            for i in range(0, len(boxes), batch_size)
        ]
        return (
            torch.cat(out) if out else torch.zeros(0, self.feature_dim, device=device)
        )

    def _proposals(self, image: Tensor) -> Tensor:
        from convision.models.detection.proposals import selective_search

        return torch.from_numpy(
            selective_search(image.detach().cpu(), **self.proposal_settings)
        )

    # ------------------------------------------------------------------ training
    def fit(
        self,
        images: Sequence[Tensor] | Iterable[tuple[Tensor, dict[str, Tensor]]],
        proposals: Sequence[Tensor | np.ndarray] | None = None,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        progress: bool = True,
        batch_size: int = 128,
    ) -> dict[str, Any]:
        """Train the SVMs and box regressors (the CNN stays fixed).

        ``images``: ``3 x H x W`` float tensors in ``[0, 1]`` with ``targets`` (dicts with
        ``"boxes"`` ``N x 4`` xyxy and ``"labels"`` ``N`` in ``0..K-1``), or, with ``targets=None``,
        an iterable of ``(image, target)`` pairs. ``proposals``: ``P_i x 4`` boxes per image; ``None``
        runs selective search. Returns statistics: counts per class and seconds per stage.
        """
        from sklearn.linear_model import Ridge
        from tqdm import tqdm

        imgs, tgts = _targets_from(images, targets)
        if len(imgs) != len(tgts):
            raise DataError(f"fit: {len(imgs)} images but {len(tgts)} targets")
        if proposals is not None and len(proposals) != len(imgs):
            raise DataError(
                f"fit: {len(imgs)} images but {len(proposals)} proposal sets"
            )
        k = self.num_classes
        times = {"proposals": 0.0, "features": 0.0, "svm": 0.0, "bbox": 0.0}

        feats, ious, gt_feats, gt_labels, prop_boxes, gt_boxes = [], [], [], [], [], []
        for i, (img, tgt) in enumerate(
            tqdm(
                list(zip(imgs, tgts)),
                desc="R-CNN features",
                disable=not progress,
                leave=False,
                dynamic_ncols=True,
            )
        ):
            boxes = (
                torch.as_tensor(tgt["boxes"], dtype=torch.float32).reshape(-1, 4).cpu()
            )
            labels = torch.as_tensor(tgt["labels"], dtype=torch.int64).reshape(-1).cpu()
            if len(labels) != len(boxes):
                raise DataError(
                    f"fit: image {i}: {len(boxes)} boxes but {len(labels)} labels"
                )
            if len(labels) and (labels.min() < 0 or labels.max() >= k):
                raise DataError(
                    f"fit: image {i}: label {int(labels.max() if labels.max() >= k else labels.min())} outside 0..{k - 1}"
                )
            t0 = time.perf_counter()
            props = (
                self._proposals(img)
                if proposals is None
                else torch.as_tensor(
                    np.asarray(proposals[i])
                    if not isinstance(proposals[i], Tensor)
                    else proposals[i]
                )
                .float()
                .reshape(-1, 4)
                .cpu()
            )
            times["proposals"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            feats.append(self.extract(img, props, batch_size).cpu())
            gt_feats.append(self.extract(img, boxes, batch_size).cpu())
            times["features"] += time.perf_counter() - t0
            ious.append(
                box_iou(props, boxes) if len(boxes) else torch.zeros(len(props), 0)
            )
            gt_labels.append(labels)
            prop_boxes.append(props)
            gt_boxes.append(boxes)

        all_feats = torch.cat(feats)
        if len(all_feats) == 0:
            raise DataError("fit: no proposals at all")
        scale = self.feature_norm / float(all_feats.norm(dim=1).mean().clamp_min(1e-12))
        self.feature_scale.fill_(scale)
        x_all = (all_feats * scale).numpy()
        x_gt = (torch.cat(gt_feats) * scale).numpy()
        y_gt = torch.cat(gt_labels).numpy()

        svm_w = torch.zeros(k, self.feature_dim)
        svm_b = torch.zeros(k)
        reg_w = torch.zeros(k, 4, self.feature_dim)
        reg_b = torch.zeros(k, 4)
        fitted = torch.zeros(k, dtype=torch.bool)
        stats: dict[str, Any] = {
            "images": len(imgs),
            "proposals": len(x_all),
            "positives": [],
            "negatives": [],
            "negatives_available": [],
            "mining_rounds": [],
            "bbox_samples": [],
            "feature_scale": scale,
        }

        t0 = time.perf_counter()
        for c in tqdm(
            range(k),
            desc="R-CNN SVMs",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        ):
            # negatives: IoU < neg_iou with every instance of class c (all proposals if the image has none)
            neg = torch.cat(
                [
                    (
                        iou[:, lab == c].amax(dim=1)
                        if (lab == c).any()
                        else torch.zeros(len(iou))
                    )
                    < self.neg_iou
                    for iou, lab in zip(ious, gt_labels)
                ]
            )
            pos = x_gt[y_gt == c]
            stats["positives"].append(len(pos))
            stats["negatives_available"].append(int(neg.sum()))
            if len(pos) == 0 or not neg.any():
                stats["negatives"].append(0)
                stats["mining_rounds"].append(0)
                continue
            w, b, info = train_svm_hard_negatives(
                pos,
                x_all[neg.numpy()],
                C=self.svm_C,
                pos_weight=self.svm_pos_weight,
                bias_scale=self.svm_bias_scale,
                rounds=self.hard_negative_rounds,
                max_negatives=self.max_negatives,
                seed=self.seed + c,
            )
            svm_w[c], svm_b[c], fitted[c] = torch.from_numpy(w), b, True
            stats["negatives"].append(len(info["negatives"]))
            stats["mining_rounds"].append(info["rounds"])
        times["svm"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        samples: list[list[np.ndarray]] = [[] for _ in range(k)]
        deltas: list[list[Tensor]] = [[] for _ in range(k)]
        start = 0
        for iou, lab, props, gts in zip(ious, gt_labels, prop_boxes, gt_boxes):
            n = len(props)
            if len(gts) and n:
                best, arg = iou.max(dim=1)
                for c in range(k):
                    sel = (best >= self.bbox_iou) & (lab[arg] == c)
                    if sel.any():
                        samples[c].append(x_all[start : start + n][sel.numpy()])
                        deltas[c].append(encode(props[sel], gts[arg[sel]], ROI_WEIGHTS))
            start += n
        for c in range(k):
            count = sum(len(s) for s in samples[c])
            stats["bbox_samples"].append(count)
            if count < 2:
                continue  # no regression for this class: boxes stay as proposed
            ridge = Ridge(alpha=self.bbox_lambda, fit_intercept=True)
            ridge.fit(np.concatenate(samples[c]), torch.cat(deltas[c]).numpy())
            reg_w[c] = torch.from_numpy(ridge.coef_.astype(np.float32))
            reg_b[c] = torch.from_numpy(np.asarray(ridge.intercept_, dtype=np.float32))
        times["bbox"] = time.perf_counter() - t0

        device = self._device()
        self.svm_weight.copy_(svm_w.to(device))
        self.svm_bias.copy_(svm_b.to(device))
        self.bbox_weight.copy_(reg_w.to(device))
        self.bbox_bias.copy_(reg_b.to(device))
        self.class_fitted.copy_(fitted.to(device))
        stats["seconds"] = times
        return stats

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def score_and_regress(
        self, image: Tensor, proposals: Tensor, batch_size: int = 128
    ) -> tuple[Tensor, Tensor]:
        """SVM scores (``P x K``) and class-specific regressed boxes (``P x K x 4``, not clipped)."""
        proposals = proposals.to(self._device(), torch.float32).reshape(-1, 4)
        x = self.extract(image, proposals, batch_size) * self.feature_scale
        scores = x @ self.svm_weight.T + self.svm_bias
        k = self.num_classes
        d = x @ self.bbox_weight.reshape(k * 4, -1).T + self.bbox_bias.reshape(-1)
        boxes = decode(proposals, d, ROI_WEIGHTS).reshape(len(proposals), k, 4)
        return scores, boxes

    @torch.no_grad()
    def forward(
        self,
        images: Sequence[Tensor],
        proposals: Sequence[Tensor | np.ndarray] | None = None,
        targets: Any = None,
    ) -> list[dict[str, Tensor]]:
        """Detections per image (``boxes`` xyxy, ``labels`` 0..K-1, ``scores`` SVM margins, best
        first). ``proposals=None`` runs selective search. R-CNN has no training losses: ``targets``
        are refused (use :meth:`fit`)."""
        if targets is not None:
            raise ConfigError(
                "R-CNN is trained with RCNN.fit (SVMs and ridge regressors), not by losses: do not pass targets"
            )
        if not bool(self.class_fitted.any()):
            raise ConfigError(
                "R-CNN: no class has an SVM yet: call fit() or load a trained state dict"
            )
        if proposals is not None and len(proposals) != len(images):
            raise DataError(
                f"R-CNN: {len(images)} images but {len(proposals)} proposal sets"
            )
        out = []
        for i, image in enumerate(images):
            if proposals is None:
                props = self._proposals(image)
            else:
                p = proposals[i]
                props = (
                    (p if isinstance(p, Tensor) else torch.from_numpy(np.asarray(p)))
                    .float()
                    .reshape(-1, 4)
                )
            out.append(self._detect(image, props.to(self._device())))
        return out

    def _detect(self, image: Tensor, props: Tensor) -> dict[str, Tensor]:
        device = self._device()
        h, w = image.shape[-2:]
        k = self.num_classes
        empty = {
            "boxes": torch.zeros(0, 4, device=device),
            "labels": torch.zeros(0, dtype=torch.int64, device=device),
            "scores": torch.zeros(0, device=device),
        }
        if len(props) == 0:
            return empty
        scores, reg = self.score_and_regress(image, props)
        labels = torch.arange(k, device=device).expand(len(props), k)
        keep = (scores > self.score_thresh) & self.class_fitted[None, :]
        idx_p, idx_c = keep.nonzero(as_tuple=True)
        if len(idx_p) == 0:
            return empty
        s, lab = scores[idx_p, idx_c], labels[idx_p, idx_c]
        moved = clip_boxes_to_image(reg[idx_p, idx_c], (h, w))
        if self.nms_after_regression:
            ok = remove_small_boxes(moved, 1e-3)
            kept = ok[batched_nms(moved[ok], s[ok], lab[ok], self.nms_iou)]
        else:
            kept = batched_nms(props[idx_p], s, lab, self.nms_iou)
            kept = kept[remove_small_boxes(moved[kept], 1e-3)]
        kept = kept[
            : self.detections_per_image
        ]  # batched_nms returns indices by decreasing score
        return {"boxes": moved[kept], "labels": lab[kept], "scores": s[kept]}


def rcnn(
    *,
    num_classes: int,
    backbone: str | nn.Module = "mobilenet_v2",
    weights: str | os.PathLike | None = "IMAGENET1K_V1",
    warp_size: int = 224,
    context_padding: int = 16,
    svm_C: float = 0.001,
    feature_dim: int | None = None,
    **kwargs: Any,
) -> RCNN:
    """Build an R-CNN for ``num_classes`` user classes (background not counted).

    ``backbone``: a name of :data:`convision.models.backbones.BACKBONES` (its ImageNet classifier
    cut before the last layer, with ``weights``: ``None``/``"none"``, a torchvision weights name or
    a local ``.pth``), or any module mapping ``N x 3 x S x S`` to ``N x D`` (``weights`` ignored;
    ``feature_dim`` measured with one dummy pass unless given). Other keyword arguments go to
    :class:`RCNN` (``hard_negative_rounds``, ``max_negatives``, ``bbox_lambda``, ``nms_iou``,
    ``score_thresh``, ``detections_per_image``, ``proposal_mode``, ``max_proposals``, ...).
    """
    if isinstance(backbone, nn.Module):
        net = backbone
        if feature_dim is None:
            was = net.training
            net.eval()
            with torch.no_grad():
                feature_dim = int(
                    net(torch.zeros(1, 3, warp_size, warp_size)).flatten(1).shape[1]
                )
            net.train(was)
    else:
        net, feature_dim = penultimate_features(backbone, weights)
    return RCNN(
        net,
        int(feature_dim),
        num_classes,
        warp_size=warp_size,
        context_padding=context_padding,
        svm_C=svm_C,
        **kwargs,
    )
