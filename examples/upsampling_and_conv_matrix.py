"""Upsampling inside a network, by hand: convolution as a matrix, its transpose, and unpooling.

Run: ``python examples/upsampling_and_conv_matrix.py``

1. A 3x3 convolution (no padding, stride 1) on a 4x4 input gives a 2x2 output. It is linear, so it
   is a 4x16 matrix C acting on the flattened input: each row is the kernel placed where one output
   pixel reads.
2. The transposed convolution is C^T, a 16x4 matrix: it maps a 2x2 map to a 4x4 one. It restores
   the shape, not the values: C^T is not the inverse of C (C^T C is not the identity).
3. Three fixed ways to undo a 2x2 pooling, each 2x2 -> 4x4: nearest neighbour, "bed of nails" and
   max unpooling with the positions ("switches") the max pooling recorded.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from convision.nn import (
    MaxPoolWithIndices,
    MaxUnpool,
    bed_of_nails_unpool,
    conv_matrix,
    nearest_unpool,
)


def show(name: str, t: torch.Tensor) -> None:
    print(f"{name}:")
    for row in t.tolist():
        print("  " + " ".join(f"{v:5g}" for v in row))


def main() -> None:
    kernel = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    x = torch.arange(16.0).view(4, 4)
    show("3x3 kernel w", kernel)
    show("4x4 input x", x)

    c = conv_matrix(kernel.view(1, 1, 3, 3), input_size=4)
    print(f"C shape: {tuple(c.shape)}")
    show("convolution matrix C (one row per output pixel)", c)
    y = (c @ x.flatten()).view(2, 2)
    show("C @ x  (= conv2d(x, w), 2x2)", y)
    assert torch.equal(y, F.conv2d(x.view(1, 1, 4, 4), kernel.view(1, 1, 3, 3))[0, 0])

    z = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    up = (c.t() @ z.flatten()).view(4, 4)
    show("2x2 map z", z)
    show("C^T @ z  (= conv_transpose2d(z, w), 4x4)", up)
    assert torch.equal(
        up, F.conv_transpose2d(z.view(1, 1, 2, 2), kernel.view(1, 1, 3, 3))[0, 0]
    )
    ctc = c.t() @ c
    print(
        f"C^T C is 16x16 of rank {int(torch.linalg.matrix_rank(ctc))}, identity: {torch.allclose(ctc, torch.eye(16))}"
    )
    show("C @ (C^T @ z): not z again", (c @ up.flatten()).view(2, 2))

    print()
    small = z.view(1, 1, 2, 2)
    show("nearest unpooling 2x2 -> 4x4", nearest_unpool(small)[0, 0])
    show(
        "bed of nails unpooling (top-left of each cell)",
        bed_of_nails_unpool(small)[0, 0],
    )
    before = torch.tensor(
        [
            [1.0, 5.0, 2.0, 0.0],
            [3.0, 2.0, 1.0, 7.0],
            [0.0, 0.0, 4.0, 1.0],
            [9.0, 1.0, 2.0, 3.0],
        ]
    )
    pooled, switches = MaxPoolWithIndices(2)(before.view(1, 1, 4, 4))
    show("4x4 map before max pooling", before)
    show("max pooled 2x2", pooled[0, 0])
    show("switches (flat index of each maximum)", switches[0, 0])
    show(
        "max unpooling 2x2 -> 4x4 (values back at the maxima)",
        MaxUnpool(2)(pooled, switches, output_size=(4, 4))[0, 0],
    )


if __name__ == "__main__":
    main()
