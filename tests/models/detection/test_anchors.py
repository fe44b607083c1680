import torch

from convision.models.detection.anchors import (
    AnchorGrid,
    base_anchors,
    generate_anchors,
)

# py-faster-rcnn's 9 base anchors (base size 16, ratios 0.5/1/2, scales 8/16/32), computed by hand,
# first pixel 1 (its docstring's convention): reference window [1, 1, 16, 16], w = h = 16, centre 8.5.
# Ratio enumeration (area 256): r=0.5: w=round(sqrt(512)=22.63)=23, h=round(11.5)=12 (half to even);
# r=1: 16x16; r=2: w=round(sqrt(128)=11.31)=11, h=22. Scale enumeration multiplies w, h by 8/16/32,
# box = centre -+ (size - 1) / 2:
#   23x12 * 8 = 184x96:   8.5 -+ 91.5, 8.5 -+ 47.5   -> [-83, -39, 100, 56]
#   * 16 = 368x192:       8.5 -+ 183.5, 8.5 -+ 95.5  -> [-175, -87, 192, 104]
#   * 32 = 736x384:       8.5 -+ 367.5, 8.5 -+ 191.5 -> [-359, -183, 376, 200]
#   16x16 * 8 = 128:      8.5 -+ 63.5                -> [-55, -55, 72, 72]
#   * 16 = 256:           8.5 -+ 127.5               -> [-119, -119, 136, 136]
#   * 32 = 512:           8.5 -+ 255.5               -> [-247, -247, 264, 264]
#   11x22 * 8 = 88x176:   8.5 -+ 43.5, 8.5 -+ 87.5   -> [-35, -79, 52, 96]
#   * 16 = 176x352:       8.5 -+ 87.5, 8.5 -+ 175.5  -> [-79, -167, 96, 184]
#   * 32 = 352x704:       8.5 -+ 175.5, 8.5 -+ 351.5 -> [-167, -343, 184, 360]
FIXTURE = [
    [-83, -39, 100, 56],
    [-175, -87, 192, 104],
    [-359, -183, 376, 200],
    [-55, -55, 72, 72],
    [-119, -119, 136, 136],
    [-247, -247, 264, 264],
    [-35, -79, 52, 96],
    [-79, -167, 96, 184],
    [-167, -343, 184, 360],
]


def test_generate_anchors_matches_py_faster_rcnn_fixture():
    anchors = generate_anchors()
    assert anchors[0].tolist() == [-83, -39, 100, 56]
    assert anchors.tolist() == FIXTURE


def test_zero_based_generator_is_the_fixture_minus_one():
    assert (
        generate_anchors(first_pixel=0)
        == torch.tensor(FIXTURE, dtype=torch.float64) - 1
    ).all()


def test_continuous_anchors_sizes_and_centres():
    base = base_anchors((128, 256, 512), (0.5, 1.0, 2.0), 16)
    assert base[0].tolist() == [-84, -40, 100, 56]
    w = base[:, 2] - base[:, 0]
    h = base[:, 3] - base[:, 1]
    assert w.tolist() == [184, 368, 736, 128, 256, 512, 88, 176, 352]
    assert h.tolist() == [96, 192, 384, 128, 256, 512, 176, 352, 704]
    # every base anchor is centred on the first 16x16 cell's centre
    assert ((base[:, 0] + base[:, 2]) / 2 == 8).all() and (
        (base[:, 1] + base[:, 3]) / 2 == 8
    ).all()


def test_grid_shifts_position_major_and_caches():
    grid = AnchorGrid((16, 32), (1.0,), 16)
    anchors = grid(2, 3, torch.device("cpu"))
    assert anchors.shape == (2 * 3 * 2, 4)
    # cell (row 1, column 2), second anchor (32 px): centre (40, 24)
    a = anchors[(1 * 3 + 2) * 2 + 1]
    assert a.tolist() == [40 - 16, 24 - 16, 40 + 16, 24 + 16]
    assert grid(2, 3, torch.device("cpu")) is anchors
    assert grid(3, 3, torch.device("cpu")).shape == (18, 4)
