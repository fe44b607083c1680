"""Boundary F-score: hand-made masks, a brute-force reference, ignore/padding, the composite task metric."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from convision.metrics.boundary import BoundaryF
from convision.metrics.segmentation import format_table
from convision.tasks.segment import SegmentationTask


def square(size=48, top=12, left=12, side=20, cls=1, shift=(0, 0)):
    m = torch.zeros(size, size, dtype=torch.int64)
    y, x = top + shift[0], left + shift[1]
    m[y : y + side, x : x + side] = cls
    return m


def bf(pred, target, num_classes=2, **kw):
    m = BoundaryF(num_classes, **kw)
    m.update(pred, target)
    return m.compute()


def test_perfect_prediction_scores_one_and_absent_class_is_excluded():
    target = square()
    target[30:40, 2:8] = 2  # a second object
    r = bf(target.clone(), target, num_classes=4)
    assert r["per_class_boundary_f"][:3] == [1.0, 1.0, 1.0]
    assert r["per_class_boundary_f"][3] is None  # class 3 appears nowhere
    assert r["boundary_f"] == 1.0


def test_shifted_square_is_perfect_within_tolerance_and_degrades_beyond():
    target = square()
    scores = {}
    for s in range(0, 7):
        scores[s] = bf(square(shift=(0, s)), target, tolerance=2)["boundary_f"]
    assert (
        scores[0] == scores[1] == scores[2] == 1.0
    )  # chessboard distance <= 2 everywhere
    assert scores[3] < 1.0
    assert scores[3] > scores[4] > scores[5] > scores[6]
    # a diagonal shift (2,2) is at chessboard distance 2: still perfect; Euclidean would not be
    assert bf(square(shift=(2, 2)), target, tolerance=2)["boundary_f"] == 1.0
    assert bf(square(shift=(0, 1)), target, tolerance=0)["boundary_f"] < 1.0
    assert bf(square(shift=(0, 3)), target, tolerance=3)["boundary_f"] == 1.0


def test_shift_beyond_tolerance_exact_value():
    # GT square rows/cols 12..31, its ring 76 px; the prediction is shifted right by 3 (cols
    # 15..34), tolerance 2 (chessboard). Unmatched predicted ring pixels: the right column x=34,
    # all 20 rows (>= 3 from GT column 31); the left column x=15 (3 from GT column 12) on rows
    # 15..28, where the top/bottom GT rows are > 2 away too: 14. So 76 - 34 = 42 matched; the
    # recall side is the mirror image. P = R = F = 42/76.
    r = bf(square(shift=(0, 3)), square(), num_classes=2, tolerance=2)
    m = BoundaryF(2, tolerance=2)
    m.update(square(shift=(0, 3)), square())
    counts = m.counts
    assert counts[1, 1] == 76 and counts[3, 1] == 76  # ring of a 20x20 square
    assert counts[0, 1] == counts[2, 1] == 42
    assert math.isclose(r["per_class_boundary_f"][1], 42 / 76)


def _reference_counts(pred, target, num_classes, t, ignore=255):
    """Brute force with explicit loops: the module docstring's definition."""
    counts = np.zeros((4, num_classes), dtype=np.int64)
    for p, g in zip(pred.numpy(), target.numpy()):
        H, W = g.shape
        valid = g != ignore

        def boundary(m):
            b = np.zeros_like(m)
            for i, j in zip(*np.nonzero(m)):
                for di in (-1, 0, 1):
                    for dj in (-1, 0, 1):
                        a, c = i + di, j + dj
                        if 0 <= a < H and 0 <= c < W and valid[a, c] and not m[a, c]:
                            b[i, j] = True
            return b

        def near(b):
            out = np.zeros_like(b)
            for i, j in zip(*np.nonzero(b)):
                out[max(0, i - t) : i + t + 1, max(0, j - t) : j + t + 1] = True
            return out

        for c in range(num_classes):
            pb, gb = boundary((p == c) & valid), boundary(g == c)
            counts[:, c] += [
                (pb & near(gb)).sum(),
                pb.sum(),
                (gb & near(pb)).sum(),
                gb.sum(),
            ]
    return counts


@pytest.mark.parametrize("t", [0, 1, 2])
def test_counts_match_brute_force_reference(t):
    g = torch.Generator().manual_seed(t)
    target = torch.randint(0, 3, (2, 11, 13), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.15] = 255
    pred = torch.randint(0, 3, (2, 11, 13), generator=g)
    m = BoundaryF(3, tolerance=t)
    m.update(pred, target)
    ref = _reference_counts(pred, target, 3, t)
    assert ref[1].sum() > 0 and (
        t > 0 or ref[0].sum() < ref[1].sum()
    )  # not a trivial case
    assert np.array_equal(m.counts.numpy(), ref)


def test_ignored_pixels_are_excluded_and_padding_does_not_matter():
    target = square()
    pred = square(shift=(0, 1))
    base = bf(pred, target)
    # garbage predicted inside an ignored region changes nothing when that region was class 0
    t2, p2 = target.clone(), pred.clone()
    t2[0:6, 0:6] = 255
    p2[0:6, 0:6] = torch.tensor([[0, 1] * 3] * 6)
    assert bf(p2, t2) == base
    # a wrong prediction outside the ignore region still counts
    p3 = p2.clone()
    p3[40:44, 40:44] = 1
    assert bf(p3, t2)["boundary_f"] < 1.0

    # a batch padded with 255 (pad_collate) scores like the images one at a time
    small_t, small_p = (
        square(size=30, top=5, left=5, side=25),
        square(size=30, top=6, left=4, side=20),
    )
    separate = BoundaryF(2)
    separate.update(pred, target)
    separate.update(small_p, small_t)
    pt = torch.full((2, 48, 48), 255, dtype=torch.int64)
    pp = torch.ones(
        2, 48, 48, dtype=torch.int64
    )  # the model predicts something in the padding
    pt[0], pp[0] = target, pred
    pt[1, :30, :30], pp[1, :30, :30] = small_t, small_p
    batched = BoundaryF(2)
    batched.update(pp, pt)
    assert torch.equal(batched.counts, separate.counts)
    # the small square touches the image border: the border is not a boundary
    assert bf(small_t, small_t)["boundary_f"] == 1.0


def test_missed_and_hallucinated_classes_score_zero_and_count_in_the_mean():
    target = square(cls=1)
    pred = square(cls=2)  # right place, wrong class
    r = bf(pred, target, num_classes=3)
    assert r["per_class_boundary_f"] == [1.0, 0.0, 0.0]
    assert math.isclose(r["boundary_f"], 1 / 3)
    # a class covering every pixel has no boundary: excluded, not 0 and not 1
    full = torch.zeros(2, 16, 16, dtype=torch.int64)
    r = bf(full, full, num_classes=2)
    assert r["per_class_boundary_f"] == [None, None] and math.isnan(r["boundary_f"])


def test_counts_accumulate_over_batches_and_validate_input():
    target = torch.stack([square(), square(shift=(3, 0))])
    pred = torch.stack([square(shift=(0, 4)), square()])
    once = BoundaryF(2)
    once.update(pred, target)
    twice = BoundaryF(2)
    twice.update(pred[:1], target[:1])
    twice.update(pred[1], target[1])  # [H,W] accepted
    assert torch.equal(once.counts, twice.counts)
    twice.reset()
    assert int(twice.counts.sum()) == 0
    with pytest.raises(TypeError):
        once.update(pred.float(), target)
    with pytest.raises(ValueError):
        once.update(pred[:, :10], target)
    from convision.errors import DataError

    bad = target.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(DataError, match="class value 7"):
        once.update(pred, bad)
    with pytest.raises(ValueError):
        BoundaryF(2, tolerance=-1)


def test_segmentation_task_metric_reports_boundary_f_next_to_miou():
    task = SegmentationTask(3)
    metric = task.new_metric()
    target = square(cls=1)[None]
    metric.update(square(cls=1, shift=(0, 5))[None], target)
    metric.reduce_()  # no process group: a no-op
    r = metric.compute()
    assert {
        "miou",
        "pixel_accuracy",
        "per_class_iou",
        "boundary_f",
        "per_class_boundary_f",
    } <= set(r)
    assert 0.0 < r["boundary_f"] < 1.0 and r["per_class_boundary_f"][2] is None
    text = format_table(r, ["background", "a", "b"])
    assert "boundary F" in text and f"{100 * r['boundary_f']:.2f}" in text
    assert "boundary F" not in format_table(
        {k: v for k, v in r.items() if "boundary" not in k}, ["a", "b", "c"]
    )


def test_boundary_f_is_cheap_enough_for_validation():
    # 8x8-pixel blocks: ~35% boundary pixels, several times the built-in scenes' ~6%
    torch.manual_seed(0)
    up = torch.nn.functional.interpolate
    pred = up(torch.randint(0, 6, (100, 1, 16, 16)).float(), size=128)[:, 0].long()
    target = up(torch.randint(0, 6, (100, 1, 16, 16)).float(), size=128)[:, 0].long()
    m = BoundaryF(6)
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # the algorithm's cost, not the contention of a shared machine
    try:
        start = time.perf_counter()
        for i in range(0, 100, 4):
            m.update(pred[i : i + 4], target[i : i + 4])
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    assert 0 < m.compute()["boundary_f"] < 1
    assert elapsed < 2.0, f"boundary F on 100 128x128 images took {elapsed:.2f} s"


_DDP_SCRIPT = r"""
import sys, torch, torch.distributed as dist, torch.multiprocessing as mp
from convision.metrics.boundary import BoundaryF

def data():
    g = torch.Generator().manual_seed(0)
    up = torch.nn.functional.interpolate
    t = up(torch.randint(0, 4, (6, 1, 8, 8), generator=g).float(), size=32)[:, 0].long()
    p = up(torch.randint(0, 4, (6, 1, 8, 8), generator=g).float(), size=32)[:, 0].long()
    t[:, :3] = 255
    return p, t

def work(rank, path):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    p, t = data()
    mine = BoundaryF(4)
    mine.update(p[rank::2], t[rank::2])
    mine.reduce_()
    full = BoundaryF(4)
    full.update(p, t)
    ok = torch.equal(mine.counts, full.counts) and int(full.counts.sum()) > 0
    dist.destroy_process_group()
    if not ok:
        raise SystemExit(f"rank {rank}: reduced {mine.counts.tolist()} != {full.counts.tolist()}")

if __name__ == "__main__":
    torch.set_num_threads(1)
    mp.spawn(work, args=(sys.argv[1],), nprocs=2)
    print("reduce ok")
"""


def test_reduce_sums_counts_over_processes(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "ddp_boundary.py"
    script.write_text(_DDP_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reduce ok" in done.stdout
