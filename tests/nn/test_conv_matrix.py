"""conv_matrix: C @ x == conv2d(x), C^T @ y == conv_transpose2d(y), against PyTorch over a grid of shapes."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn import functional as F

from convision.nn.conv_matrix import (
    SPARSE_THRESHOLD,
    conv_matrix,
    conv_output_size,
    conv_transpose_matrix,
    conv_transpose_output_size,
)

# (c_in, c_out, kernel (h, w), input (h, w), stride, padding, dilation, groups)
CASES = [
    (1, 1, (3, 3), (4, 4), 1, 0, 1, 1),
    (2, 3, (3, 3), (5, 6), 1, 1, 1, 1),
    (3, 2, (3, 2), (7, 5), 2, 1, 1, 1),
    (2, 2, (1, 1), (4, 3), 2, 0, 1, 1),
    (1, 2, (5, 5), (9, 8), 3, 2, 1, 1),
    (2, 1, (3, 3), (9, 9), 1, 2, 2, 1),
    (3, 3, (2, 3), (8, 7), (2, 1), (0, 1), (1, 3), 1),
    (4, 6, (3, 3), (6, 5), 2, 1, 1, 2),
    (2, 2, (4, 4), (8, 8), 2, 1, 1, 1),  # the usual 2x "deconvolution"
]


@pytest.mark.parametrize("case", CASES)
def test_conv_matrix_matches_conv2d(case):
    c_in, c_out, k, size, s, p, d, g = case
    torch.manual_seed(0)
    weight = torch.randn(c_out, c_in // g, *k, dtype=torch.float64)
    x = torch.randn(1, c_in, *size, dtype=torch.float64)
    ref = F.conv2d(x, weight, None, s, p, d, g)
    c = conv_matrix(weight, size, s, p, d, sparse=False, groups=g)
    assert c.shape == (ref.numel(), x.numel())
    assert torch.allclose(c @ x.flatten(), ref.flatten())
    # nothing but the kernel's entries: each row holds at most C_in/g * k_h * k_w non-zeros
    assert int((c != 0).sum(1).max()) <= (c_in // g) * k[0] * k[1]
    cs = conv_matrix(weight, size, s, p, d, sparse=True, groups=g)
    assert cs.is_sparse and torch.equal(cs.to_dense(), c)


@pytest.mark.parametrize("case", CASES)
def test_transpose_matches_conv_transpose2d(case):
    c_in, c_out, k, size, s, p, d, g = case
    sh, sw = (s, s) if isinstance(s, int) else s
    dh, dw = (d, d) if isinstance(d, int) else d
    ph, pw = (p, p) if isinstance(p, int) else p
    torch.manual_seed(1)
    weight = torch.randn(
        c_out, c_in // g, *k, dtype=torch.float64
    )  # conv_transpose2d reads it as [in=c_out, out/g]
    y_size = (
        conv_output_size(size[0], k[0], sh, ph, dh),
        conv_output_size(size[1], k[1], sw, pw, dw),
    )
    y = torch.randn(1, c_out, *y_size, dtype=torch.float64)
    for op in itertools.product(range(max(sh, dh)), range(max(sw, dw))):
        ref = F.conv_transpose2d(y, weight, None, (sh, sw), (ph, pw), op, g, (dh, dw))
        big = (
            conv_transpose_output_size(y_size[0], k[0], sh, ph, op[0], dh),
            conv_transpose_output_size(y_size[1], k[1], sw, pw, op[1], dw),
        )
        assert tuple(ref.shape[-2:]) == big
        ct = conv_transpose_matrix(
            weight, y_size, (sh, sw), (ph, pw), op, (dh, dw), sparse=False, groups=g
        )
        assert torch.allclose(ct @ y.flatten(), ref.flatten()), op
        if (
            op[0] < sh and op[1] < sw
        ):  # then it is literally C^T of the conv from the larger size
            c_big = conv_matrix(
                weight, big, (sh, sw), (ph, pw), (dh, dw), sparse=False, groups=g
            )
            assert torch.equal(c_big.t(), ct)


def test_seed_example_4x4_input_3x3_kernel():
    weight = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    c = conv_matrix(weight, 4)
    assert c.shape == (4, 16)
    # row 0: the kernel's rows at columns 0-2, 4-6, 8-10 of the flattened 4x4 input
    assert c[0].tolist() == [1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0, 0, 0, 0, 0]
    assert c[3].tolist() == [0] * 5 + [1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9]
    y = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    up = (c.t() @ y.flatten()).view(4, 4)
    assert torch.equal(up, F.conv_transpose2d(y.view(1, 1, 2, 2), weight)[0, 0])
    # C^T restores the shape, not the values: C^T C is not the identity, and C (C^T y) != y
    ctc = c.t() @ c
    assert ctc.shape == (16, 16) and not torch.allclose(ctc, torch.eye(16))
    assert (
        torch.linalg.matrix_rank(ctc) == 4
    )  # a 16x16 matrix of rank 4 cannot be invertible
    assert not torch.allclose(c @ (c.t() @ y.flatten()), y.flatten())


def test_sizes():
    assert conv_output_size(4, 3) == 2
    assert conv_output_size(224, 7, 2, 3) == 112
    assert conv_output_size(9, 3, 1, 2, 2) == 9
    assert conv_transpose_output_size(2, 3) == 4
    assert conv_transpose_output_size(7, 3, 2, 1, 1) == 14
    assert conv_transpose_output_size(16, 4, 2, 1) == 32
    with pytest.raises(ValueError):
        conv_transpose_output_size(4, 3, 2, 1, output_padding=2)
    with pytest.raises(ValueError):
        conv_output_size(2, 5)


def test_sparse_by_default_when_large_and_gradients_flow():
    weight = torch.randn(4, 4, 3, 3, requires_grad=True)
    small = conv_matrix(weight, 8)
    assert not small.is_sparse
    big = conv_matrix(
        weight, 64, padding=1
    )  # 16384 x 16384 dense would be 268M entries
    assert big.is_sparse and big.shape == (4 * 64 * 64, 4 * 64 * 64)
    assert big.shape[0] * big.shape[1] > SPARSE_THRESHOLD
    assert big._nnz() <= 4 * 4 * 9 * 64 * 64
    x = torch.randn(1, 4, 64, 64)
    out = torch.sparse.mm(big, x.view(-1, 1)).view(1, 4, 64, 64)
    assert torch.allclose(out, F.conv2d(x, weight, padding=1), atol=1e-4)
    out.sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
