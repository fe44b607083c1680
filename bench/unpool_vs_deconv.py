"""SegNet's index unpooling vs FCN's learned transposed convolution, the same 2x upsampling at the
same size: time (forward + backward) and memory (parameters, stored pooling indices and the
tensors autograd keeps for backward), printed as ratios.

SegNet (Badrinarayanan et al. 2015, Sec. 3) argues that reusing the encoder's max-pooling indices
upsamples without learning and with little memory: the indices are all it keeps from the encoder
(FCN keeps whole encoder feature maps for its skips). The comparison here is the upsampling
operator alone: ``MaxUnpool2d`` with the indices of a 2x2 max pooling vs a 4x4 stride-2
``ConvTranspose2d`` with C -> C channels (FCN's 2x layer has classes -> classes channels; at
C channels it is what a decoder of the same width would learn).

    .venv/bin/python bench/unpool_vs_deconv.py [--channels 512] [--size 32] [--batch 4]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def memory_bytes(fn, *also: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd saves for backward while running ``fn``, plus
    ``also`` (weights, indices) unless autograd saved them already."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        seen[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    for t in also:
        seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def timed(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument(
        "--size",
        type=int,
        default=32,
        help="side of the map before pooling (the upsampled output)",
    )
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    c, s = args.channels, args.size
    encoder_map = torch.randn(args.batch, c, s, s)
    pooled, indices = nn.MaxPool2d(2, 2, return_indices=True)(encoder_map)
    pooled = pooled.detach().requires_grad_()
    unpool = nn.MaxUnpool2d(2, 2)
    deconv = nn.ConvTranspose2d(c, c, 4, stride=2, padding=1, bias=False)

    def run_unpool() -> None:
        unpool(pooled, indices, output_size=encoder_map.shape[-2:]).sum().backward()

    def run_deconv() -> None:
        deconv(pooled).sum().backward()

    t_unpool, t_deconv = (
        timed(run_unpool, args.repeats),
        timed(run_deconv, args.repeats),
    )
    mem_unpool = memory_bytes(
        lambda: unpool(pooled, indices, output_size=encoder_map.shape[-2:]), indices
    )
    mem_deconv = memory_bytes(lambda: deconv(pooled), deconv.weight)
    print(
        f"2x upsampling of {args.batch}x{c}x{s // 2}x{s // 2} -> {s}x{s}, CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"{'operator':34s} {'fwd+bwd ms':>10s} {'memory MB':>10s} {'params':>10s}")
    print(
        f"{'SegNet MaxUnpool2d (indices)':34s} {t_unpool * 1e3:10.2f} {mem_unpool / 2**20:10.2f} {0:10d}"
    )
    print(
        f"{'FCN-style ConvTranspose2d 4x4/2':34s} {t_deconv * 1e3:10.2f} {mem_deconv / 2**20:10.2f} {deconv.weight.numel():10d}"
    )
    print(
        f"ratios deconvolution / unpooling: time {t_deconv / t_unpool:.1f}x, memory {mem_deconv / mem_unpool:.2f}x "
        f"(memory = indices or weights + tensors saved for backward)"
    )


if __name__ == "__main__":
    main()
