"""Detection data sets, box-aware transforms, the factory and the collate function."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from convision.data.detection import (
    DetectionDataset,
    SyntheticDetection,
    build_detection_dataset,
    detection_collate,
    detection_eval_transforms,
    detection_train_transforms,
)
from convision.data.detection_formats import (
    DetectionRecord,
    read_voc,
    write_coco,
    write_voc,
    write_yolo,
)
from convision.data.synthetic import make_scene
from convision.errors import ConfigError, DataError

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _image_record(
    path: Path,
    h: int,
    w: int,
    boxes: list,
    colors: list,
    labels: list,
    difficult: list,
    image_id: int = 0,
) -> DetectionRecord:
    """A black image with each box filled in its colour, saved as PNG, and its record."""
    a = np.zeros((h, w, 3), np.uint8)
    for (x1, y1, x2, y2), c in zip(boxes, colors):
        a[int(y1) : int(y2), int(x1) : int(x2)] = c
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return DetectionRecord(
        path, w, h, np.array(boxes, np.float32), labels, difficult, image_id
    )


def test_synthetic_sample_types_and_determinism() -> None:
    ds = SyntheticDetection(
        3, image_size=(24, 32), num_classes=4, seed=2, max_objects=3
    )
    assert len(ds) == 3 and ds.classes == ["disc", "square", "triangle"]
    image, target = ds[1]
    scene = make_scene(1, seed=2, image_size=(24, 32), num_classes=4, max_objects=3)
    assert (
        isinstance(image, tv_tensors.Image)
        and image.dtype == torch.float32
        and image.shape == (3, 24, 32)
    )
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    torch.testing.assert_close(
        image, torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255
    )
    boxes = target["boxes"]
    assert (
        isinstance(boxes, tv_tensors.BoundingBoxes)
        and boxes.format.value == "XYXY"
        and boxes.canvas_size == (24, 32)
    )
    np.testing.assert_array_equal(boxes.numpy(), scene.boxes)
    assert (
        target["labels"].tolist() == (scene.labels - 1).tolist()
        and target["labels"].dtype == torch.int64
    )
    assert target["difficult"].dtype == torch.bool and not target["difficult"].any()
    assert target["image_id"] == 1 and target["orig_size"].tolist() == [24, 32]
    again = ds[1]
    assert torch.equal(again[0], image) and torch.equal(again[1]["boxes"], boxes)
    raw, plain = ds.raw(1)
    np.testing.assert_array_equal(raw, scene.image)
    assert type(plain["boxes"]) is torch.Tensor and ds.name(1) == "scene_000001"


def test_synthetic_train_and_val_are_disjoint() -> None:
    train = build_detection_dataset("synthetic", "train", num_images=4, image_size=24)
    val = build_detection_dataset("synthetic", "val", num_images=4, image_size=24)
    assert len(train) == len(val) == 4
    ids_train = {train[i][1]["image_id"] for i in range(4)}
    ids_val = {val[i][1]["image_id"] for i in range(4)}
    assert not ids_train & ids_val
    assert not torch.equal(train[0][0], val[0][0])


def _records(tmp_path: Path, n: int = 5) -> list[DetectionRecord]:
    return [
        _image_record(
            tmp_path / "src" / f"im{k}.png",
            30,
            40,
            [[2 + k, 3, 20, 25]],
            [RED],
            [k % 2],
            [k == 0],
            k,
        )
        for k in range(n)
    ]


def test_file_dataset_and_validate_reports_size_mismatch(tmp_path: Path) -> None:
    records = _records(tmp_path)
    ds = DetectionDataset(records, ["a", "b"])
    image, target = ds[-1]
    assert image.dtype == torch.float32 and image.shape == (3, 30, 40)
    assert target["boxes"].tolist() == [[6, 3, 20, 25]] and target[
        "labels"
    ].tolist() == [0]
    assert ds[0][1]["difficult"].tolist() == [True]
    assert ds.name(2) == "im2.png"
    ds.validate(progress=True)
    Image.fromarray(np.zeros((31, 40, 3), np.uint8)).save(records[3].image)
    with pytest.raises(
        DataError, match=r"im3\.png: image is 40x31 but its annotation says 40x30"
    ):
        ds.validate()
    with pytest.raises(IndexError):
        ds[5]


def _mask_box(
    image: torch.Tensor, color: tuple[int, int, int]
) -> tuple[list[float], int] | None:
    """The pixel-edge box of the pixels clearly of ``color`` (``None`` if none)."""
    c = torch.tensor(color, dtype=torch.float32).view(3, 1, 1) / 255
    mask = ((image - c).abs() < 0.35).all(dim=0)
    if not mask.any():
        return None
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max()) + 1,
        float(ys.max()) + 1,
    ], int(mask.sum())


def test_train_transforms_boxes_follow_the_pixels(tmp_path: Path) -> None:
    rec = _image_record(
        tmp_path / "x.png",
        60,
        80,
        [[6, 10, 30, 40], [50, 20, 74, 52]],
        [RED, BLUE],
        [0, 1],
        [False, True],
    )
    ds = DetectionDataset(
        [rec], ["red", "blue"], detection_train_transforms(40, 64, color_jitter=0.0)
    )
    sizes, flipped, kept = set(), set(), 0
    for seed in range(40):
        torch.manual_seed(seed)
        image, target = ds[0]
        h, w = image.shape[-2:]
        boxes = target["boxes"]
        assert (
            boxes.canvas_size == (h, w)
            and image.dtype == torch.float32
            and max(h, w) <= 64
        )
        sizes.add((h, w))
        assert len(target["labels"]) == len(target["difficult"]) == len(boxes)
        for box, label, diff in zip(
            boxes.tolist(), target["labels"].tolist(), target["difficult"].tolist()
        ):
            assert diff == (label == 1)  # difficult stayed with its box
            found = _mask_box(image, RED if label == 0 else BLUE)
            assert found is not None, (seed, label, box)
            pix = found[0]
            # the drawn pixels and the box agree to about a pixel (resampling blurs the edges)
            assert all(abs(a - b) <= 1.5 for a, b in zip(pix, box)), (
                seed,
                label,
                pix,
                box,
            )
            kept += 1
            if label == 0:
                flipped.add(box[0] > w / 2)
    assert kept > 20 and flipped == {True, False}
    assert len(sizes) > 3  # scale jitter and crops change the output size
    assert any(
        abs(w / h - 80 / 60) > 0.1 for h, w in sizes
    )  # some crops happened (resizing keeps the aspect)


def test_tiny_box_is_dropped_with_its_label_and_flag(tmp_path: Path) -> None:
    rec = _image_record(
        tmp_path / "t.png",
        40,
        40,
        [[0, 0, 1.5, 1.5], [10, 10, 30, 30]],
        [RED, BLUE],
        [0, 1],
        [True, False],
    )
    tf = detection_train_transforms(
        20, 20, hflip=False, scale_range=(1.0, 1.0), crop=False, color_jitter=0.0
    )
    image, target = DetectionDataset([rec], ["r", "b"], tf)[0]
    assert image.shape == (3, 20, 20)
    assert target["boxes"].tolist() == [[5, 5, 15, 15]]
    assert target["labels"].tolist() == [1] and target["difficult"].tolist() == [False]
    image, target = DetectionDataset(
        [rec], ["r", "b"], detection_eval_transforms(20, 20)
    )[0]
    assert len(target["boxes"]) == 2 and target["labels"].tolist() == [
        0,
        1,
    ]  # eval keeps every ground-truth box
    torch.testing.assert_close(target["boxes"][1], torch.tensor([5.0, 5.0, 15.0, 15.0]))


def test_eval_transforms_cap_the_longer_side_and_are_picklable(tmp_path: Path) -> None:
    rec = _image_record(
        tmp_path / "w.png", 20, 100, [[10, 2, 30, 12]], [RED], [0], [False]
    )
    tf = detection_eval_transforms(16, 50)
    image, target = DetectionDataset([rec], ["r"], tf)[0]
    assert image.shape == (
        3,
        10,
        50,
    )  # shorter side would be 16, but the longer is capped at 50
    assert target["boxes"].tolist() == [[5, 1, 15, 6]] and target[
        "orig_size"
    ].tolist() == [20, 100]
    for t in (tf, detection_train_transforms(16, 50)):
        assert (
            pickle.loads(pickle.dumps(t)) is not None
        )  # data-loader workers pickle them
    with pytest.raises(ConfigError, match="max_size"):
        detection_eval_transforms(32, 16)


def test_collate_gives_plain_tensors() -> None:
    ds = SyntheticDetection(
        4, image_size=24, num_classes=3, transforms=detection_train_transforms(20, 40)
    )
    images, targets = next(
        iter(DataLoader(ds, batch_size=3, collate_fn=detection_collate))
    )
    assert len(images) == len(targets) == 3
    assert all(type(im) is torch.Tensor and im.dtype == torch.float32 for im in images)
    for t in targets:
        assert all(type(v) is torch.Tensor for v in t.values())
        assert (
            t["boxes"].shape[1] == 4
            and t["labels"].dtype == torch.int64
            and t["image_id"].ndim == 0
        )


def test_build_from_voc_with_and_without_a_val_split(tmp_path: Path) -> None:
    records = _records(tmp_path, 6)
    root = write_voc(records, ["a", "b"], tmp_path / "voc", split="train")
    train = build_detection_dataset(str(root), "train", val_fraction=0.34, seed=1)
    val = build_detection_dataset(str(root), "val", val_fraction=0.34, seed=1)
    names_t = {train.name(i) for i in range(len(train))}
    names_v = {val.name(i) for i in range(len(val))}
    assert len(names_v) == 2 and not names_t & names_v and len(names_t | names_v) == 6
    assert names_v == {
        build_detection_dataset(str(root), "val", val_fraction=0.34, seed=1).name(i)
        for i in range(2)
    }
    write_voc(
        records[:2], ["a", "b"], root, split="val"
    )  # now the folder has its own val split
    val = build_detection_dataset(str(root), "val")
    assert [val.name(i) for i in range(len(val))] == [
        "im0.png",
        "im1.png",
    ] and val.classes == ["a", "b"]
    remapped = build_detection_dataset(str(root), "val", classes=["b", "a", "c"])
    assert remapped[0][1]["labels"].tolist() == [1] and remapped.classes == [
        "b",
        "a",
        "c",
    ]
    with pytest.raises(DataError, match="unknown class 'a'"):
        build_detection_dataset(str(root), "val", classes=["b"])


def test_build_from_coco_with_val_data_and_yolo_splits(tmp_path: Path) -> None:
    records = _records(tmp_path, 4)
    train_json = write_coco(records[:3], ["a", "b"], tmp_path / "coco" / "train.json")
    val_json = write_coco(records[3:], ["a", "b"], tmp_path / "coco" / "val.json")
    val = build_detection_dataset(str(train_json), "val", val_data=str(val_json))
    assert len(val) == 1 and val.name(0) == "im3.png" and val.classes == ["a", "b"]
    assert (
        len(build_detection_dataset(str(train_json), "train", val_data=str(val_json)))
        == 3
    )
    root = write_yolo(records[:3], ["a", "b"], tmp_path / "yolo", split="train")
    write_yolo(records[3:], ["a", "b"], root, split="val")
    assert len(build_detection_dataset(str(root), "train")) == 3
    val = build_detection_dataset(str(root), "val")
    assert len(val) == 1
    torch.testing.assert_close(
        val[0][1]["boxes"].as_subclass(torch.Tensor),
        torch.tensor([[5.0, 3.0, 20.0, 25.0]]),
    )


def test_build_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere: not found"):
        build_detection_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="split"):
        build_detection_dataset("synthetic", "test")
    one = write_voc(_records(tmp_path, 1), ["a", "b"], tmp_path / "one")
    with pytest.raises(DataError, match="need at least 2 images"):
        build_detection_dataset(str(one), "val")
    assert read_voc(one, "train")[1] == [
        "a",
        "b",
    ]  # per-class lists keep the class without objects
