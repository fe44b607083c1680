"""In-network upsampling by transposed convolution with a bilinear kernel.

Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation" (CVPR 2015,
TPAMI 2017), Sec. 3.3: upsampling by a factor f is a convolution with fractional input stride
1/f, i.e. a transposed ("de-") convolution with output stride f. Initialised to bilinear
interpolation it is a fixed interpolator; its weights may also be learned. The reference code
(fcn.berkeleyvision.org, ``surgery.upsample_filt`` / ``surgery.interp``) puts one bilinear filter
per class on the diagonal of the ``C x C`` weight and zeros elsewhere, and keeps all of them fixed
(``lr_mult: 0``); the CVPR paper's text learned the 2x layers. Both are possible here.

Unpooling (fixed, parameter-free upsampling; the "un-" of a pooling layer)
-------------------------------------------------------------------------
* :func:`nearest_unpool`: every value is copied into its ``f x f`` cell (nearest neighbour).
* :func:`bed_of_nails_unpool`: the value goes to one position of its cell (``position``, the top-left
  corner by default), zeros elsewhere.
* Max unpooling (Zeiler & Fergus 2014 "switches"; SegNet; DeconvNet): the pooling layer remembers
  where each maximum came from, the unpooling layer puts the value back there and zeros elsewhere.
  In PyTorch::

      pool = nn.MaxPool2d(2, 2, return_indices=True)     # or MaxPoolWithIndices(2)
      unpool = nn.MaxUnpool2d(2, 2)                       # or MaxUnpool(2)
      y, indices = pool(x)                               # indices: flat positions in each H x W plane
      x_up = unpool(y, indices, output_size=x.shape[-2:])  # output_size: odd sizes come back exactly

  ``nn.MaxUnpool2d`` exports to ONNX (``MaxUnpool``) with torch's default (dynamo) exporter, which
  needs the ``onnx`` and ``onnxscript`` packages (``pip install convision[dev]``); the legacy
  TorchScript exporter (``dynamo=False``) fails on it in this torch version.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "bilinear_filter",
    "bilinear_kernel",
    "BilinearUpsample",
    "nearest_unpool",
    "bed_of_nails_unpool",
    "MaxPoolWithIndices",
    "MaxUnpool",
]


def bilinear_filter(kernel_size: int) -> Tensor:
    """2-D bilinear filter of side ``kernel_size`` (the reference ``upsample_filt``).

    ``factor = (k + 1) // 2``; the centre is ``factor - 1`` for odd k and ``factor - 0.5`` for
    even k; the weight is ``(1 - |i - c| / factor) * (1 - |j - c| / factor)``.
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt_1d = 1 - (og - center).abs() / factor
    return torch.outer(filt_1d, filt_1d).to(torch.float32)


def bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """Weight ``[channels, channels, k, k]`` for ``ConvTranspose2d``: the bilinear filter on the
    diagonal (channel c -> channel c), zeros off the diagonal, as in the FCN reference code."""
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    idx = torch.arange(channels)
    weight[idx, idx] = bilinear_filter(kernel_size)
    return weight


class BilinearUpsample(nn.ConvTranspose2d):
    """Bias-free transposed convolution with stride ``factor``, initialised to bilinear interpolation.

    ``aligned=True`` (default): the output is exactly ``factor`` times the input and sample
    positions line up, for one of two grid conventions (``grid``):

    * ``"center"``: input cell i is centred on output position ``f*i + (f-1)/2``, the grid of
      2x2/stride-2 pooling (VGG). Kernel ``2f`` (``2f - 1`` for odd f), padding ``f // 2``. Away
      from the border this equals
      ``F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)``.
    * ``"corner"``: input cell i sits on output position ``f*i``, the grid of stride-2
      convolutions with odd kernels and "same" padding (ResNet, MobileNetV2). Kernel ``2f - 1``,
      padding ``f - 1``, output padding ``f - 1``.

    Near the border (``f // 2`` pixels on each side for "center", the last ``f - 1`` for
    "corner") the transposed convolution sees zeros outside the map where ``interpolate`` repeats
    the edge: the values fade (all channels by the same factor), their positions stay right.

    ``aligned=False``: the reference Caffe layer, kernel ``2f``, no padding; the output has size
    ``(n + 1) * f`` and the caller crops it with the reference net's offset.

    The weight is frozen (``requires_grad=False``) unless ``learnable``; it stays a parameter so
    that it is saved in ``state_dict`` and can be unfrozen later.
    """

    def __init__(
        self,
        channels: int,
        factor: int,
        learnable: bool = False,
        aligned: bool = True,
        grid: str = "center",
    ) -> None:
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        if grid not in ("center", "corner"):
            raise ValueError(f"grid must be 'center' or 'corner', got {grid!r}")
        factor = int(factor)
        if not aligned:
            kernel_size, padding, output_padding = 2 * factor, 0, 0
        elif grid == "center":
            kernel_size, padding, output_padding = (
                2 * factor - factor % 2,
                factor // 2,
                0,
            )
        else:
            kernel_size, padding, output_padding = (
                2 * factor - 1,
                factor - 1,
                factor - 1,
            )
        super().__init__(
            channels,
            channels,
            kernel_size,
            stride=factor,
            padding=padding,
            output_padding=output_padding,
            bias=False,
        )
        self.factor = factor
        self.aligned = aligned
        self.grid = grid if aligned else "caffe"
        self.weight.requires_grad_(bool(learnable))

    @property
    def learnable(self) -> bool:
        return self.weight.requires_grad

    def reset_parameters(self) -> None:
        """Set the weight to the bilinear kernel (called by ``ConvTranspose2d.__init__``)."""
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(self.in_channels, self.kernel_size[0]))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}, grid={self.grid!r}, learnable={self.learnable}"


def _check_factor(factor: int) -> int:
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    return int(factor)


def nearest_unpool(x: Tensor, factor: int = 2) -> Tensor:
    """Nearest-neighbour unpooling: ``[..., H, W] -> [..., f*H, f*W]``, each value copied into its
    ``f x f`` cell (the same as ``F.interpolate(x, scale_factor=f, mode="nearest")``)."""
    factor = _check_factor(factor)
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def bed_of_nails_unpool(
    x: Tensor, factor: int = 2, position: tuple[int, int] = (0, 0)
) -> Tensor:
    """ "Bed of nails" unpooling: ``[..., H, W] -> [..., f*H, f*W]``; value ``x[..., i, j]`` is put at
    ``(f*i + position[0], f*j + position[1])`` and every other output is zero.

    It is the transposed convolution with stride ``f`` and a 1x1 kernel of one (shifted by
    ``position``); written as a product with a one-hot ``f x f`` cell so it is differentiable and
    exports to ONNX without in-place indexing.
    """
    factor = _check_factor(factor)
    r, c = (int(v) for v in position)
    if not (0 <= r < factor and 0 <= c < factor):
        raise ValueError(
            f"position must lie in the {factor}x{factor} cell, got {tuple(position)}"
        )
    cell = torch.zeros(factor, factor, dtype=x.dtype, device=x.device)
    cell[r, c] = 1
    *lead, h, w = x.shape
    out = x[..., :, None, :, None] * cell[:, None, :]  # [..., H, f, W, f]
    return out.reshape(*lead, h * factor, w * factor)


class MaxPoolWithIndices(nn.MaxPool2d):
    """``nn.MaxPool2d`` that also returns the argmax "switches": ``forward(x) -> (y, indices)``.

    Defaults are SegNet's and DeconvNet's 2x2 pooling with stride 2.
    """

    def __init__(
        self,
        kernel_size: int = 2,
        stride: int | None = None,
        padding: int = 0,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__(
            kernel_size,
            stride=stride,
            padding=padding,
            ceil_mode=ceil_mode,
            return_indices=True,
        )


class MaxUnpool(nn.MaxUnpool2d):
    """``nn.MaxUnpool2d`` whose ``forward(x, indices, output_size)`` takes the size of the map that
    was pooled (``[H, W]`` or a full shape), so odd sizes are restored exactly."""

    def __init__(
        self, kernel_size: int = 2, stride: int | None = None, padding: int = 0
    ) -> None:
        super().__init__(kernel_size, stride=stride, padding=padding)

    def forward(
        self,
        x: Tensor,
        indices: Tensor,
        output_size: list[int] | torch.Size | None = None,
    ) -> Tensor:  # type: ignore[override]
        if output_size is not None:
            output_size = list(output_size)[-2:]
        return super().forward(x, indices, output_size=output_size)
