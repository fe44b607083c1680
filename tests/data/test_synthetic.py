from __future__ import annotations

import numpy as np
import pytest

from convision.data import SYNTHETIC_CLASS_NAMES, SYNTHETIC_COLORS, make_scene
from convision.data.synthetic import MAX_SYNTHETIC_CLASSES, MIN_VISIBLE_PIXELS


def test_same_seed_and_index_give_identical_scenes():
    a, b = make_scene(7, seed=3, image_size=64), make_scene(7, seed=3, image_size=64)
    for field in ("image", "mask", "instances", "boxes", "labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.label == b.label


def test_different_index_or_seed_gives_different_scenes():
    a = make_scene(1, image_size=64)
    assert not np.array_equal(a.image, make_scene(2, image_size=64).image)
    assert not np.array_equal(a.image, make_scene(1, seed=1, image_size=64).image)


def test_global_rng_is_untouched():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    make_scene(0, image_size=32)
    assert np.random.random() == expected


def test_types_shapes_and_non_square_size():
    s = make_scene(0, image_size=(40, 72), num_classes=4)
    assert s.image.shape == (40, 72, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (40, 72) and s.mask.dtype == np.uint8
    assert s.instances.shape == (40, 72) and s.instances.dtype == np.int32
    assert s.boxes.dtype == np.float32 and s.boxes.shape == (len(s.labels), 4)
    assert s.labels.dtype == np.int64
    assert isinstance(s.label, int)


@pytest.mark.parametrize("num_classes", [2, 6, MAX_SYNTHETIC_CLASSES])
def test_mask_instances_boxes_labels_agree(num_classes):
    for i in range(25):
        s = make_scene(i, image_size=48, num_classes=num_classes, seed=5)
        n = len(s.labels)
        assert 0 <= s.mask.max() < num_classes
        assert set(np.unique(s.instances)) <= set(range(n + 1))
        # the mask is exactly the instances' classes; every instance is visible
        lut = np.concatenate([[0], s.labels])
        np.testing.assert_array_equal(s.mask, lut[s.instances])
        counts = np.bincount(s.instances.ravel(), minlength=n + 1)[1:]
        assert (counts >= MIN_VISIBLE_PIXELS).all()
        assert ((s.labels >= 1) & (s.labels < num_classes)).all()
        for k in range(1, n + 1):
            ys, xs = np.nonzero(s.instances == k)
            x1, y1, x2, y2 = s.boxes[k - 1]
            assert (x1, y1, x2, y2) == (
                xs.min(),
                ys.min(),
                xs.max() + 1,
                ys.max() + 1,
            )  # x2/y2 exclusive
            assert np.unique(s.mask[ys, xs]).tolist() == [s.labels[k - 1]]
        if n:
            assert s.label == s.labels[int(np.argmax(counts))]
        else:
            assert s.label == 0 and s.mask.max() == 0


def test_object_sizes_span_tiny_to_large():
    fractions, per_scene, classes = [], [], set()
    for i in range(200):
        s = make_scene(i, image_size=64)
        counts = np.bincount(s.instances.ravel())[1:]
        fractions.extend(counts / s.instances.size)
        per_scene.append(len(counts))
        classes.update(s.labels.tolist())
    fractions = np.array(fractions)
    assert (fractions < 0.01).any(), "no tiny objects"
    assert (fractions > 0.30).any(), "no large objects"
    assert 0.02 < np.median(fractions) < 0.2, "most objects should be medium"
    assert max(per_scene) > 3 and min(per_scene) >= 1
    assert classes == set(range(1, 6))


def test_background_is_textured_and_noisy():
    s = make_scene(3, image_size=64)
    bg = s.image[s.mask == 0].astype(float)
    assert bg.std(axis=0).min() > 1.0  # not a flat colour


def test_class_tables_cover_all_classes():
    assert (
        len(SYNTHETIC_CLASS_NAMES)
        == len(SYNTHETIC_COLORS)
        == MAX_SYNTHETIC_CLASSES
        >= 9
    )
    assert SYNTHETIC_CLASS_NAMES[0] == "background"
    assert len(set(SYNTHETIC_COLORS)) == len(SYNTHETIC_COLORS)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 1},
        {"num_classes": MAX_SYNTHETIC_CLASSES + 1},
        {"max_objects": 0},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        make_scene(0, image_size=32, **kwargs)
    with pytest.raises(ValueError):
        make_scene(-1, image_size=32)
