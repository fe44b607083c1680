"""Instance masks: the built-in scenes, COCO polygons / RLE, VOC SegmentationObject, and the checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from convision.data.detection import (
    DetectionDataset,
    boxes_from_masks,
    build_detection_dataset,
    detection_train_transforms,
)
from convision.data.detection_formats import read_detection
from convision.data.synthetic import make_scene
from convision.errors import DataError


def test_scenes_yield_masks_that_agree_with_boxes_and_survive_augmentation():
    ds = build_detection_dataset(
        "synthetic", "train", num_images=3, image_size=64, masks=True
    )
    scene = make_scene(0, image_size=64)
    _, target = ds.raw(0)
    masks = target["masks"]
    assert masks.shape == (len(scene.labels), 64, 64)
    for k in range(len(scene.labels)):
        assert torch.equal(masks[k].bool(), torch.from_numpy(scene.instances == k + 1))
    assert torch.equal(boxes_from_masks(masks), target["boxes"])
    ds.transforms = detection_train_transforms(64, 200, crop=True, masks=True)
    torch.manual_seed(0)
    for i in range(3):
        image, t = ds[i]
        assert t["masks"].shape[1:] == image.shape[1:]
        assert len(t["masks"]) == len(t["boxes"]) == len(t["labels"])
        assert torch.equal(
            boxes_from_masks(t["masks"]), t["boxes"].as_subclass(torch.Tensor)
        )


def _coco(tmp_path: Path, annotations: list, size=(40, 30)) -> Path:
    w, h = size
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": w, "height": h}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], **a}
            for k, a in enumerate(annotations)
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_polygon_compressed_and_uncompressed_rle(tmp_path):
    square = np.zeros((30, 40), np.uint8)
    square[5:15, 20:30] = 1
    rle = mask_utils.encode(np.asfortranarray(square))
    rle["counts"] = rle["counts"].decode()
    # uncompressed RLE: column-major run lengths starting with zeros
    flat = square.T.reshape(-1)
    runs, value, count = [], 0, 0
    for v in flat:
        if v == value:
            count += 1
        else:
            runs.append(count)
            value, count = v, 1
    runs.append(count)
    path = _coco(
        tmp_path,
        [
            {"segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
            {"segmentation": rle},
            {"segmentation": {"size": [30, 40], "counts": runs}},
        ],
    )
    ds = build_detection_dataset(str(path), "train", val_data=str(path), masks=True)
    _, target = ds.raw(0)
    m = target["masks"]
    assert m.shape == (3, 30, 40)
    assert torch.equal(m[1], torch.from_numpy(square)) and torch.equal(m[2], m[1])
    ys, xs = np.nonzero(m[0].numpy())
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (2, 11, 2, 11)


@pytest.mark.parametrize(
    "segmentation, message",
    [
        (
            [[2, 2, 60, 2, 60, 12, 2, 12]],
            "polygon point (60, 2) is outside the 40x30 image",
        ),
        ([[2, 2, 12, 2, 22, 2]], "empty mask"),
        ([[2, 2, 12]], "at least 3 x, y points"),
        ({"size": [10, 10], "counts": "PPYo0"}, "RLE size [10, 10] is not the image's"),
    ],
)
def test_bad_coco_segmentations_are_one_line(tmp_path, segmentation, message):
    path = _coco(tmp_path, [{"segmentation": segmentation}])
    with pytest.raises(DataError) as e:
        build_detection_dataset(str(path), "train", val_data=str(path), masks=True)
    assert message in str(e.value) and "annotation 0" in str(e.value)
    assert "\n" not in str(e.value)
    # box-only detection does not read segmentations at all
    build_detection_dataset(str(path), "train", val_data=str(path))


def _voc(root: Path, objects: np.ndarray, classes: np.ndarray) -> Path:
    for sub in ("JPEGImages", "SegmentationObject", "SegmentationClass"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    h, w = objects.shape
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / "JPEGImages" / "x.png")
    Image.fromarray(objects.astype(np.uint8)).save(
        root / "SegmentationObject" / "x.png"
    )
    Image.fromarray(classes.astype(np.uint8)).save(root / "SegmentationClass" / "x.png")
    return root


def test_voc_segmentation_object_and_class(tmp_path):
    obj = np.zeros((20, 30), np.uint8)
    cls = np.zeros((20, 30), np.uint8)
    obj[2:8, 3:9], cls[2:8, 3:9] = 1, 15  # a person
    obj[10:18, 12:28], cls[10:18, 12:28] = 2, 12  # a dog
    obj[9, :], cls[9, :] = 255, 255  # VOC's void border
    root = _voc(tmp_path / "voc", obj, cls)
    records, classes = read_detection(root, masks=True)
    (r,) = records
    assert [classes[c] for c in r.labels] == ["person", "dog"]
    assert r.boxes.tolist() == [[3, 2, 9, 8], [12, 10, 28, 18]]
    _, target = DetectionDataset(records, classes, masks=True).raw(0)
    assert torch.equal(target["masks"][1], torch.from_numpy(obj == 2).to(torch.uint8))


def test_voc_instance_without_a_class_is_one_line(tmp_path):
    obj = np.zeros((20, 30), np.uint8)
    cls = np.zeros((20, 30), np.uint8)
    obj[2:8, 3:9], cls[2:8, 3:9] = 1, 15
    obj[10:18, 12:28] = 2  # no class under instance 2
    root = _voc(tmp_path / "voc", obj, cls)
    with pytest.raises(DataError, match="instance id 2 of x.png has no class"):
        read_detection(root, masks=True)


def _folder(root: Path, ids: np.ndarray, names: dict) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "instances").mkdir()
    for stem in ("a", "b"):
        Image.fromarray(np.zeros((*ids.shape, 3), np.uint8)).save(
            root / "images" / f"{stem}.png"
        )
    Image.fromarray(ids.astype(np.uint8)).save(root / "instances" / "a.png")
    (root / "instances" / "a.json").write_text(json.dumps(names))
    return root


def test_instance_folder_format(tmp_path):
    ids = np.zeros((20, 30), np.uint8)
    ids[2:8, 3:9], ids[10:18, 12:28] = 1, 7
    root = _folder(tmp_path / "f", ids, {"1": "cat", "7": "dog"})
    records, classes = read_detection(root, masks=True)
    assert classes == ["cat", "dog"] and len(records) == 2
    a, b = records
    assert (
        a.labels.tolist() == [0, 1] and len(b.labels) == 0
    )  # b.png has no instances: negative
    assert a.boxes.tolist() == [[3, 2, 9, 8], [12, 10, 28, 18]]
    _, target = DetectionDataset(records, classes, masks=True).raw(0)
    assert torch.equal(target["masks"][1], torch.from_numpy(ids == 7).to(torch.uint8))


def test_instance_folder_id_without_a_class_is_one_line(tmp_path):
    ids = np.zeros((20, 30), np.uint8)
    ids[2:8, 3:9], ids[10:18, 12:28] = 1, 7
    root = _folder(tmp_path / "f", ids, {"1": "cat"})
    with pytest.raises(DataError, match="instance id 7 has no class in a.json"):
        read_detection(root, masks=True)
