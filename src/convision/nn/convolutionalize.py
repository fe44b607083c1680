"""Turn a fully connected classifier into an equivalent convolutional one ("convolutionalization").

Supported networks are those whose classifier is ``features -> [AdaptiveAvgPool2d] -> flatten ->
Linear/ReLU/Dropout...``:

- torchvision ``VGG`` and ``AlexNet`` (attributes ``features``, ``avgpool``, ``classifier``);
- torchvision ``MobileNetV2``: ``features``, then a global average pool (applied functionally in
  its ``forward``) and ``classifier`` (dropout, linear). Global average pooling at the training
  size is an ``f x f`` average, so it folds into the linear layer like any adaptive average pool
  (``k = 1`` below): the classifier becomes one ``f x f`` convolution, as in Network in Network /
  FCN's view of global pooling;
- convision's :class:`~convision.models.classification.Classifier` with a VGG, AlexNet or
  MobileNetV2 arch (its torchvision ``net`` plus the new ``head``);
- any module with ``features`` and ``classifier`` (and optionally ``avgpool``) of that form, or an
  ``nn.Sequential`` ``[conv layers..., nn.Flatten(), Linear/ReLU/Dropout...]``.

The first ``Linear`` (input ``C*k*k``) becomes a ``k x k`` convolution over the last feature map
(torchvision flattens in ``C, H, W`` order, so the weight is only reshaped); every later
``Linear`` becomes a ``1 x 1`` convolution.

The adaptive average pool: at the training size ``input_size`` the feature map is ``f x f``. When
``f == k`` (VGG at 224: 7x7 -> 7x7; AlexNet at 224: 6x6 -> 6x6) the pool is the identity and is
dropped. When ``f != k`` (a VGG trained on 32x32 images: 1x1 -> 7x7, which replicates the cell) the
pool is a fixed linear map of the ``f x f`` map, and it is folded into the first convolution, which
becomes ``f x f``: ``W'[o,c,a,b] = sum_{u,v} W[o,c,u,v] P[u,a] P[v,b]``. Either way the result is
exact at the training size.

On a larger image the convolutional model slides that window with the total stride of the
features (32 for VGG/AlexNet/MobileNetV2): score-map cell ``(i, j)`` is the classifier applied to the features
of the crop at ``(i*stride, j*stride)`` of side ``input_size``. That is *exactly* the classifier's
output on the crop when the features use no zero padding (valid convolutions, pooling without
padding: the seeds' toy network, the tests' padding-free VGG-like net). VGG and AlexNet pad their
convolutions, so near the crop's border the crop sees zeros where the large image has real pixels:
their maps are the usual "dense evaluation" (OverFeat, FCN), close to but not equal to the
crop-by-crop outputs. The convolutional model computes the shared features once, which is the
point.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torchvision.models import VGG, AlexNet, MobileNetV2

__all__ = ["ConvolutionalClassifier", "convolutionalize", "total_stride"]

_PASS = (nn.ReLU, nn.Dropout, nn.Identity, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.Sigmoid)


class ConvolutionalClassifier(nn.Module):
    """``features`` then ``head`` (convolutions); ``forward(x[N,3,H,W]) -> scores[N,K,h,w]``.

    Attributes: ``stride`` (input pixels between neighbouring cells), ``input_size`` (the side of
    the window one cell sees, the classifier's training size), ``kernel`` (side of the first head
    convolution, in feature cells). ``window(i, j) -> (x1, y1, x2, y2)`` gives a cell's crop.
    """

    def __init__(
        self,
        features: nn.Module,
        head: nn.Sequential,
        *,
        stride: int,
        input_size: int,
        kernel: int,
    ) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.stride = int(stride)
        self.input_size = int(input_size)
        self.kernel = int(kernel)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h < self.input_size or w < self.input_size:
            raise ValueError(
                f"input is {w}x{h} (WxH); the convolutional classifier needs at least its window, "
                f"{self.input_size}x{self.input_size}"
            )
        return self.head(self.features(x))

    def window(self, i: int, j: int) -> tuple[int, int, int, int]:
        """The crop ``(x1, y1, x2, y2)`` (x2/y2 exclusive) that score-map cell ``(i, j)`` classifies."""
        x1, y1 = j * self.stride, i * self.stride
        return x1, y1, x1 + self.input_size, y1 + self.input_size

    def extra_repr(self) -> str:
        return (
            f"stride={self.stride}, input_size={self.input_size}, kernel={self.kernel}"
        )


def total_stride(features: nn.Module) -> int:
    """Product of the strides of the convolution and pooling layers (square strides only)."""
    stride = 1
    for m in features.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            s = (
                m.stride
                if isinstance(m.stride, (tuple, list))
                else (m.stride, m.stride)
            )
            if s[0] != s[1]:
                raise ValueError(
                    f"convolutionalize: non-square stride {tuple(s)} in {m}"
                )
            stride *= int(s[0])
    return stride


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module | None, list[nn.Module]]:
    """(features, pool or None, classifier layers after the flatten)."""
    if isinstance(getattr(model, "net", None), nn.Module) and isinstance(
        getattr(model, "head", None), nn.Module
    ):
        net = model.net  # a convision Classifier: a torchvision network whose last layer is the new ``head``
        if isinstance(net, MobileNetV2):
            return net.features, nn.AdaptiveAvgPool2d(1), [*net.classifier, model.head]
        if not isinstance(net, (VGG, AlexNet)):
            raise ValueError(
                f"convolutionalize: {model.arch} has no fully connected classifier over a feature map to convert (VGG/AlexNet/MobileNetV2 only)"
            )
        return net.features, net.avgpool, [*net.classifier, model.head]
    if isinstance(model, MobileNetV2):
        return model.features, nn.AdaptiveAvgPool2d(1), list(model.classifier)
    if type(model).__module__.startswith("torchvision.") and not isinstance(
        model, (VGG, AlexNet)
    ):
        raise ValueError(
            f"convolutionalize: torchvision {type(model).__name__} has no fully connected classifier over a feature map to convert (VGG/AlexNet/MobileNetV2 only)"
        )
    if hasattr(model, "features") and hasattr(model, "classifier"):
        cls = model.classifier
        layers = list(cls) if isinstance(cls, nn.Sequential) else [cls]
        return model.features, getattr(model, "avgpool", None), layers
    if isinstance(model, nn.Sequential):
        layers = list(model)
        flat = [i for i, m in enumerate(layers) if isinstance(m, nn.Flatten)]
        if len(flat) == 1:
            before = layers[: flat[0]]
            pool = None
            if before and isinstance(
                before[-1], (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
            ):
                pool = before.pop()
            return nn.Sequential(*before), pool, layers[flat[0] + 1 :]
    raise ValueError(
        f"convolutionalize: unsupported model {type(model).__name__} (expected torchvision VGG/AlexNet/MobileNetV2, a convision "
        "Classifier with a VGG/AlexNet/MobileNetV2 arch, or an nn.Sequential [convs..., Flatten, Linear...])"
    )


def _pool_matrix(in_size: int, out_size: int) -> Tensor:
    """``P[u, a]``: weight of input cell ``a`` in output cell ``u`` of an adaptive average pool."""
    p = torch.zeros(out_size, in_size, dtype=torch.float64)
    for u in range(out_size):
        start = (u * in_size) // out_size
        end = -(-((u + 1) * in_size) // out_size)  # ceil, as torch's adaptive pooling
        p[u, start:end] = 1.0 / (end - start)
    return p


def _out_size(pool: nn.Module | None, default: int) -> int:
    if pool is None:
        return default
    size = pool.output_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    if size[0] is None or size[1] is None or size[0] != size[1]:
        raise ValueError(f"convolutionalize: unsupported pooling output size {size}")
    if isinstance(pool, nn.AdaptiveMaxPool2d):
        raise ValueError(
            "convolutionalize: an adaptive max pool is not linear; only AdaptiveAvgPool2d can be folded"
        )
    return int(size[0])


@torch.no_grad()
def convolutionalize(
    model: nn.Module, input_size: int = 224, in_channels: int = 3
) -> ConvolutionalClassifier:
    """A :class:`ConvolutionalClassifier` equal to ``model`` at ``input_size`` (see the module notes).

    ``model`` is not modified; its feature layers are copied. The result is in the same
    train/eval mode as ``model``. ``in_channels``: channels of the input (3 for images; a head
    that reads a feature map, such as a localizer's box head, takes that map's channels).
    """
    features, pool, layers = _parts(model)
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("convolutionalize: the classifier has no Linear layer")
    for m in layers:
        if not isinstance(m, (nn.Linear, *_PASS)):
            raise ValueError(
                f"convolutionalize: cannot convert classifier layer {type(m).__name__}"
            )
    features = copy.deepcopy(features)
    param = next(iter(model.parameters()))
    # feature map size at the training size
    was_training = features.training
    features.eval()
    probe = features(
        torch.zeros(
            1,
            in_channels,
            input_size,
            input_size,
            device=param.device,
            dtype=param.dtype,
        )
    )
    features.train(was_training)
    channels, fh, fw = probe.shape[1:]
    if fh != fw:
        raise ValueError(
            f"convolutionalize: non-square feature map {fh}x{fw} at input size {input_size}"
        )
    f = int(fh)
    first = linears[0]
    k = _out_size(pool, f)
    if first.in_features != channels * k * k:
        raise ValueError(
            f"convolutionalize: the first Linear takes {first.in_features} inputs, but the features give "
            f"{channels} channels x {k}x{k} = {channels * k * k}"
        )
    w = first.weight.detach().reshape(first.out_features, channels, k, k)
    if (
        k != f
    ):  # fold the adaptive average pool (a fixed linear map f x f -> k x k) into the kernel
        p = _pool_matrix(f, k).to(w.device)
        w = torch.einsum("ocuv,ua,vb->ocab", w.double(), p, p).to(w.dtype)
    head: list[nn.Module] = []
    for m in layers:
        if isinstance(m, nn.Linear):
            if m is first:
                conv = nn.Conv2d(channels, m.out_features, f, bias=m.bias is not None)
                conv.weight.copy_(w)
            else:
                conv = nn.Conv2d(
                    m.in_features, m.out_features, 1, bias=m.bias is not None
                )
                conv.weight.copy_(
                    m.weight.detach().reshape(m.out_features, m.in_features, 1, 1)
                )
            if m.bias is not None:
                conv.bias.copy_(m.bias.detach())
            head.append(conv.to(device=m.weight.device, dtype=m.weight.dtype))
        elif not isinstance(m, nn.Identity):
            head.append(copy.deepcopy(m))
    out = ConvolutionalClassifier(
        features,
        nn.Sequential(*head),
        stride=total_stride(features),
        input_size=input_size,
        kernel=f,
    )
    return out.train(model.training)
