"""Object detectors: Faster R-CNN, Fast R-CNN, R-CNN (with SPP pooling as a RoI-head option) and YOLOv1.

The contract every detector here keeps (the task, the CLI and the benchmarks rely on it):

* ``model(images, targets=None)`` with ``images`` a list of ``3 x H_i x W_i`` float tensors in
  ``[0, 1]`` (sizes may differ; the model normalises with ``model.mean`` / ``model.std``, ImageNet's
  by default, and pads into a batch itself).
* training mode: ``targets`` is a list of dicts with ``"boxes"`` (``N x 4`` float, ``x1, y1, x2, y2``
  in pixels of the given tensor) and ``"labels"`` (``N`` int64 in ``0 .. K-1``); ``N = 0`` is a valid
  negative image. Returns a dict of scalar losses; their sum is what is minimised.
* eval mode: returns one dict per image with ``"boxes"`` (``M x 4`` float xyxy pixels of the given
  tensor), ``"labels"`` (``M`` int64 in ``0 .. K-1``) and ``"scores"`` (``M`` float), best first.

Class ids: users see ``0 .. K-1`` with names. The background class exists only inside the
models: classification layers have ``K + 1`` outputs, output 0 is background and output ``k + 1`` is
user class ``k``. This is the only place where the shift happens (:func:`to_internal`,
:func:`to_user`).

Fast R-CNN's forward also takes ``proposals`` (list of ``P_i x 4`` xyxy boxes per image);
R-CNN is not trained by gradient descent end to end (SVMs) and has its own ``fit``.
"""

from __future__ import annotations

from torch import Tensor


def to_internal(labels: Tensor) -> Tensor:
    """User class ids ``0..K-1`` to the models' ``1..K`` (0 = background)."""
    return labels + 1


def to_user(labels: Tensor) -> Tensor:
    """The models' foreground ids ``1..K`` to user class ids ``0..K-1``."""
    return labels - 1
