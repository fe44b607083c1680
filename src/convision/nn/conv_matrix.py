"""A 2-D convolution as a matrix, and the transposed convolution as its transpose.

A convolution is linear in its input, so for a fixed weight there is a matrix ``C`` with
``conv2d(x, weight, stride, padding, dilation).flatten() == C @ x.flatten()`` (one sample, no bias;
``x`` flattened in ``C, H, W`` order, the output likewise). Row ``(o, i, j)`` of ``C`` holds the
kernel of output channel ``o`` placed where output pixel ``(i, j)`` reads the input; most entries
are zero (each row has at most ``C_in/groups * k_h * k_w`` non-zeros).

The **transposed convolution** with the same weight and hyper-parameters is multiplication by
``C^T``: it maps the convolution's output space back to its input space,
``conv_transpose2d(y, weight, stride, padding, output_padding, groups, dilation).flatten() ==
C^T @ y.flatten()`` where ``C = conv_matrix(weight, N, ...)`` is the matrix of the convolution
from the transposed convolution's **output** size ``N = conv_transpose_output_size(n, ...)``, the
larger size. (Several input sizes give the same convolution output size when ``stride > 1``;
``output_padding`` only selects which of them the transposed convolution produces: the extra
rows/columns are the ones the forward convolution never reads when they are beyond its last
window, so they come out zero apart from padding effects. :func:`conv_transpose_matrix` does the
bookkeeping.)

``C^T`` is not ``C^{-1}`` (``C`` is not even square in general): ``C^T C`` is not the identity, the
transposed convolution restores the *shape* of the input, not its values. Dumoulin & Visin, "A
guide to convolution arithmetic for deep learning" (arXiv:1603.07285), Sec. 4, describe this view.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "conv_matrix",
    "conv_transpose_matrix",
    "conv_output_size",
    "conv_transpose_output_size",
    "SPARSE_THRESHOLD",
]

#: ``sparse=None`` returns a sparse matrix when the dense one would have more entries than this.
SPARSE_THRESHOLD = 1 << 22  # 4M entries = 16 MB of float32


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return v, v
    t = tuple(int(a) for a in v)
    if len(t) != 2:
        raise ValueError(f"{name}: expected an int or a pair, got {v!r}")
    return t  # type: ignore[return-value]


def conv_output_size(n: int, k: int, s: int = 1, p: int = 0, d: int = 1) -> int:
    """Output size of a convolution along one axis: ``floor((n + 2p - d(k-1) - 1) / s) + 1``."""
    out = (n + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ValueError(
            f"convolution of size {n} with kernel {k}, stride {s}, padding {p}, dilation {d} has no output"
        )
    return out


def conv_transpose_output_size(
    n: int, k: int, s: int = 1, p: int = 0, output_padding: int = 0, d: int = 1
) -> int:
    """Output size of a transposed convolution along one axis: ``(n-1)s - 2p + d(k-1) + output_padding + 1``.

    ``output_padding`` must be smaller than ``s`` or ``d`` (PyTorch's rule); with it the result is a
    size whose convolution (same k, s, p, d) has size ``n`` again.
    """
    if not (0 <= output_padding < max(s, d)):
        raise ValueError(
            f"output_padding must be in [0, max(stride, dilation)) = [0, {max(s, d)}), got {output_padding}"
        )
    out = (n - 1) * s - 2 * p + d * (k - 1) + output_padding + 1
    if out < 1:
        raise ValueError(
            f"transposed convolution of size {n} with kernel {k}, stride {s}, padding {p} has no output"
        )
    return out


def conv_matrix(
    weight: Tensor,
    input_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    sparse: bool | None = None,
    groups: int = 1,
) -> Tensor:
    """The matrix ``C`` of ``F.conv2d(·, weight, None, stride, padding, dilation, groups)`` on inputs
    of size ``input_size`` (``H`` or ``(H, W)``).

    ``weight``: ``[C_out, C_in/groups, k_h, k_w]``. Returns ``C`` of shape
    ``[C_out*H_out*W_out, C_in*H*W]`` (same dtype and device as ``weight``) such that
    ``F.conv2d(x, weight, ...)[0].flatten() == C @ x[0].flatten()``. Zero padding only (the padded
    pixels contribute nothing, so they have no column).

    ``sparse``: ``True`` gives a coalesced ``torch.sparse_coo`` matrix, ``False`` a dense one,
    ``None`` (default) a sparse one when the dense one would have more than
    :data:`SPARSE_THRESHOLD` entries. Gradients flow to ``weight`` in both forms.
    """
    return _conv_matrix(
        weight, input_size, stride, padding, dilation, sparse, groups, None
    )


def _conv_matrix(
    weight, input_size, stride, padding, dilation, sparse, groups, out_size
) -> Tensor:
    if weight.dim() != 4:
        raise ValueError(
            f"weight must be [C_out, C_in/groups, k_h, k_w], got shape {tuple(weight.shape)}"
        )
    c_out, c_in_g, kh, kw = weight.shape
    if groups < 1 or c_out % groups:
        raise ValueError(f"groups={groups} must divide C_out={c_out}")
    c_in = c_in_g * groups
    h, w = _pair(input_size, "input_size")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    ho, wo = conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw)
    if (
        out_size is not None
    ):  # only the first rows/columns of the output grid (transposed conv, see below)
        ho, wo = min(ho, out_size[0]), min(wo, out_size[1])
    dev = weight.device

    # Broadcast over (out channel, out row, out col, in channel of the group, tap row, tap col).
    o = torch.arange(c_out, device=dev).view(-1, 1, 1, 1, 1, 1)
    i = torch.arange(ho, device=dev).view(1, -1, 1, 1, 1, 1)
    j = torch.arange(wo, device=dev).view(1, 1, -1, 1, 1, 1)
    c = torch.arange(c_in_g, device=dev).view(1, 1, 1, -1, 1, 1)
    u = torch.arange(kh, device=dev).view(1, 1, 1, 1, -1, 1)
    v = torch.arange(kw, device=dev).view(1, 1, 1, 1, 1, -1)
    y = i * sh - ph + u * dh  # input row read by tap u of output row i
    x = j * sw - pw + v * dw
    ci = (o // (c_out // groups)) * c_in_g + c  # input channel (its group's block)
    shape = (c_out, ho, wo, c_in_g, kh, kw)
    valid = ((y >= 0) & (y < h) & (x >= 0) & (x < w)).expand(shape)
    rows = ((o * ho + i) * wo + j).expand(shape)[valid]
    cols = ((ci * h + y) * w + x).expand(shape)[valid]
    vals = weight.view(c_out, 1, 1, c_in_g, kh, kw).expand(shape)[valid]
    size = (c_out * ho * wo, c_in * h * w)

    if sparse is None:
        sparse = size[0] * size[1] > SPARSE_THRESHOLD
    if sparse:
        # (row, col) pairs are distinct: two taps of one row never read the same input pixel.
        return torch.sparse_coo_tensor(
            torch.stack([rows, cols]),
            vals,
            size,
            is_coalesced=False,
            check_invariants=False,
        ).coalesce()
    dense = torch.zeros(size, dtype=weight.dtype, device=dev)
    return dense.index_put((rows, cols), vals)


def conv_transpose_matrix(
    weight: Tensor,
    input_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    sparse: bool | None = None,
    groups: int = 1,
) -> Tensor:
    """The matrix of ``F.conv_transpose2d(·, weight, None, stride, padding, output_padding, groups,
    dilation)`` on inputs of size ``input_size``: ``C^T`` where ``C = conv_matrix(weight, N, ...)``
    and ``N`` is the transposed convolution's output size (see the module docstring).

    ``weight``: ``[C_in, C_out/groups, k_h, k_w]`` as for ``conv_transpose2d`` (the same tensor, read
    as a convolution weight, maps ``C_out`` to ``C_in`` channels). Shape of the result:
    ``[C_out*N_h*N_w, C_in*H*W]``.
    """
    h, w = _pair(input_size, "input_size")
    kh, kw = weight.shape[-2:]
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    oh, ow = _pair(output_padding, "output_padding")
    dh, dw = _pair(dilation, "dilation")
    big = (
        conv_transpose_output_size(h, kh, sh, ph, oh, dh),
        conv_transpose_output_size(w, kw, sw, pw, ow, dw),
    )
    # With output_padding < stride the convolution from `big` has exactly H x W outputs. PyTorch also
    # allows output_padding < dilation (stride 1): then the convolution has more outputs and the
    # transposed convolution uses the first H x W of them.
    c = _conv_matrix(weight, big, (sh, sw), (ph, pw), (dh, dw), sparse, groups, (h, w))
    return c.t().coalesce() if c.is_sparse else c.t()
