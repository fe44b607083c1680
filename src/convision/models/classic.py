"""The lecture notes' own networks, as their papers describe them.

torchvision's ``alexnet`` is the single-tower variant of Krizhevsky's "One weird trick" (2014): 64
first-layer filters (23,296 parameters), no local response normalization. The notes count the 2012
paper's network (11x11x3x48x2 = 35k in the first layer), and their visualisation chapter is
Zeiler & Fergus's. Both are here, random initialisation (no published torchvision weights):

:func:`alexnet2012`
    Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
    Networks", NIPS 2012, sec. 3 and fig. 2: conv 11x11/4 96 - LRN - overlapping max pool 3x3/2 -
    conv 5x5 256 (two groups) - LRN - pool - conv 3x3 384 (both towers' maps) - conv 3x3 384 (two
    groups) - conv 3x3 256 (two groups) - pool - fc 4096 - fc 4096 - fc 1000, dropout 0.5 before
    fc6 and fc7. The two-GPU split is ``groups=2`` in conv2, conv4 and conv5, and LRN runs within each
    tower (:class:`TowerLRN`). Input 227x227 (the 224 the paper writes does not give its 55x55 maps
    with an 11x11/4 convolution and no padding).
:func:`zfnet`
    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, fig. 3: conv
    7x7/2 96 - max pool 3x3/2 - contrast normalization - conv 5x5/2 256 - pool - normalization -
    conv 3x3 384 - conv 3x3 384 - conv 3x3 256 - pool - fc 4096 - fc 4096 - fc 1000, one tower (the
    paper replaced AlexNet's sparse connections in layers 3-5 by dense ones). Input 224x224; pools
    round up (Caffe's convention), giving the paper's 110 - 55 - 26 - 13 - 6 map sides.

Both have torchvision's AlexNet layout (``features``, ``avgpool``, ``classifier`` with the last
``Linear`` at ``classifier.6``), so they serve as :class:`convision.models.Classifier` backbones.
``avgpool`` is ``AdaptiveAvgPool2d(6)``, the identity at the papers' input sizes; it lets smaller or
larger images through.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PAPER_NETS", "TowerLRN", "alexnet2012", "zfnet"]


class TowerLRN(nn.Module):
    """Local response normalization within each of ``groups`` equal channel blocks (AlexNet's GPUs).

    Krizhevsky et al. 2012, sec. 3.3: ``b_i = a_i / (k + alpha * sum_j a_j^2)^beta`` over the ``n``
    adjacent maps ``j`` of map ``i`` on the same GPU, with ``k=2, n=5, alpha=1e-4, beta=0.75``.
    PyTorch's ``LocalResponseNorm`` divides ``alpha`` by ``n``, so it gets ``n * alpha``.
    """

    def __init__(
        self,
        groups: int = 1,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 2.0,
    ) -> None:
        super().__init__()
        self.groups, self.size, self.alpha, self.beta, self.k = (
            int(groups),
            int(size),
            float(alpha),
            float(beta),
            float(k),
        )

    def forward(self, x: Tensor) -> Tensor:
        blocks = x.chunk(self.groups, dim=1)
        out = [
            F.local_response_norm(
                t, self.size, self.size * self.alpha, self.beta, self.k
            )
            for t in blocks
        ]
        return torch.cat(out, dim=1) if self.groups > 1 else out[0]

    def extra_repr(self) -> str:
        return f"groups={self.groups}, size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def _classifier(num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )


class PaperNet(nn.Module):
    """``features`` -> ``avgpool`` -> flatten -> ``classifier`` (torchvision's AlexNet layout)."""

    def __init__(
        self, features: nn.Sequential, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = _classifier(num_classes, dropout)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                # Krizhevsky et al. 2012 sec. 5: weights N(0, 0.01)
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def alexnet2012(num_classes: int = 1000, dropout: float = 0.5) -> PaperNet:
    """AlexNet as in the 2012 paper (see the module notes); 60,965,224 parameters with 1000 classes."""
    features = nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4),  # conv1: 11x11x3x96 + 96 = 34,944
        nn.ReLU(inplace=True),
        TowerLRN(groups=2),
        nn.MaxPool2d(3, stride=2),  # overlapping pooling, s < z (sec. 3.4)
        nn.Conv2d(
            96, 256, 5, padding=2, groups=2
        ),  # conv2: each tower sees its 48 maps
        nn.ReLU(inplace=True),
        TowerLRN(groups=2),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(256, 384, 3, padding=1),  # conv3: connected to both towers
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2),
    )
    return PaperNet(features, num_classes, dropout)


def zfnet(num_classes: int = 1000, dropout: float = 0.5) -> PaperNet:
    """ZFNet as in Zeiler & Fergus 2014, fig. 3 (see the module notes)."""
    features = nn.Sequential(
        nn.Conv2d(3, 96, 7, stride=2, padding=1),  # 224 -> 110
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),  # -> 55
        TowerLRN(),
        nn.Conv2d(96, 256, 5, stride=2),  # -> 26
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),  # -> 13
        TowerLRN(),
        nn.Conv2d(256, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),  # -> 6
    )
    return PaperNet(features, num_classes, dropout)


#: name -> (builder, the paper's input side)
PAPER_NETS: dict[str, tuple[Callable[..., PaperNet], int]] = {
    "alexnet2012": (alexnet2012, 227),
    "zfnet": (zfnet, 224),
}
