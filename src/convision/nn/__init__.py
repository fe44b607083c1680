"""Reusable layers."""

from __future__ import annotations

from convision.nn.conv_matrix import (
    conv_matrix,
    conv_output_size,
    conv_transpose_matrix,
    conv_transpose_output_size,
)
from convision.nn.receptive_field import (
    LayerInfo,
    Summary,
    gradient_receptive_field,
    summarize,
)
from convision.nn.upsampling import (
    BilinearUpsample,
    MaxPoolWithIndices,
    MaxUnpool,
    bed_of_nails_unpool,
    bilinear_filter,
    bilinear_kernel,
    nearest_unpool,
)

__all__ = ["BilinearUpsample", "bilinear_filter", "bilinear_kernel"]
__all__ += ["nearest_unpool", "bed_of_nails_unpool", "MaxPoolWithIndices", "MaxUnpool"]
__all__ += [
    "conv_matrix",
    "conv_transpose_matrix",
    "conv_output_size",
    "conv_transpose_output_size",
]
__all__ += ["summarize", "LayerInfo", "Summary", "gradient_receptive_field"]
