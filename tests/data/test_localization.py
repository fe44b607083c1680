"""Localization data: one-shape scenes, annotation files (CSV/JSON) and their errors, box-aware transforms."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from convision.data.localization import (
    AnnotatedLocalization,
    LocalizationTransform,
    SyntheticLocalization,
    build_localization_dataset,
    from_xyxy,
    localization_collate,
    localization_eval_transforms,
    localization_train_transforms,
    to_xyxy,
)
from convision.errors import ConfigError, DataError

torch.set_num_threads(1)
MEAN, STD = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]


def write_annotated(
    root: Path,
    n_per_class: int = 3,
    size: tuple[int, int] = (40, 60),
    fmt: str = "csv",
    classes: tuple[str, ...] = ("cat", "dog"),
) -> Path:
    """Images (h, w = size) each holding one filled rectangle; returns the annotation file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = size
    rows = []
    for c, cls in enumerate(classes):
        for k in range(n_per_class):
            a = np.full((h, w, 3), 30, np.uint8)
            x1, y1 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
            x2, y2 = (
                x1 + int(rng.integers(6, w // 2)),
                y1 + int(rng.integers(6, h // 2)),
            )
            a[y1:y2, x1:x2] = (220, 40, 40) if c == 0 else (40, 40, 220)
            name = f"img/{cls}_{k}.png"
            Image.fromarray(a).save(root / name)
            rows.append((name, cls, [x1, y1, x2, y2]))
    if fmt == "csv":
        path = root / "ann.csv"
        path.write_text(
            "path,class,x1,y1,x2,y2\n"
            + "".join(f"{p},{c},{b[0]},{b[1]},{b[2]},{b[3]}\n" for p, c, b in rows)
        )
    else:
        path = root / "ann.json"
        path.write_text(
            json.dumps([{"image": p, "class": c, "box": b} for p, c, b in rows])
        )
    return path


def test_synthetic_scenes_have_exactly_one_object_whose_box_is_the_shape():
    ds = SyntheticLocalization("train", 30, 48, 6, seed=3)
    assert ds.classes == ["disc", "square", "triangle", "ring", "cross"]
    for i in range(len(ds)):
        s = ds.scene(i)
        assert len(s.labels) == 1
        image, target = ds[i]
        box = target["box"][0].tolist()
        ys, xs = np.nonzero(s.mask)
        assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert target["label"] == int(s.labels[0]) - 1 and tuple(image.shape) == (
            3,
            48,
            48,
        )
    val = SyntheticLocalization("val", 3, 48, 6, seed=3)
    assert not np.array_equal(val.load(0), ds.load(0))


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_annotation_file_reads_boxes_classes_and_holds_out(tmp_path, fmt):
    path = write_annotated(tmp_path / "d", fmt=fmt)
    ds = AnnotatedLocalization(path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    image, target = ds[0]
    x1, y1, x2, y2 = (int(v) for v in target["box"][0].tolist())
    a = image.permute(1, 2, 0).numpy()
    assert (a[y1:y2, x1:x2] == (220, 40, 40)).all() and tuple(
        target["box"].canvas_size
    ) == (40, 60)
    cfg = SimpleNamespace(data=str(path), val_data="", val_fraction=0.34, data_seed=0)
    train = build_localization_dataset(cfg, "train")
    val = build_localization_dataset(cfg, "val", classes=train.classes)
    assert (
        len(train) + len(val) == 6 and len(val) == 2 and sorted(val.targets) == [0, 1]
    )
    assert not set(train.name(i) for i in range(len(train))) & set(
        val.name(i) for i in range(len(val))
    )


def _expect_error(path: Path, where: str, words: str, classes=None) -> None:
    with pytest.raises(DataError) as e:
        AnnotatedLocalization(path, classes=classes)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path} {where}:") and words in msg, msg


def test_bad_csv_annotations_name_file_and_line(tmp_path):
    path = write_annotated(tmp_path / "d")
    good = path.read_text().splitlines()
    cases = {
        "zero": ("zero or negative width/height", "{p},cat,10,5,10,20"),
        "neg": ("zero or negative width/height", "{p},cat,10,20,12,8"),
        "outside": ("outside the 60x40 image", "{p},cat,10,5,61,20"),
        "missing": ("image file not found", "img/nope.png,cat,1,1,5,5"),
        "unknown": ("unknown class 'owl'", "{p},owl,1,1,5,5"),
    }
    img = good[1].split(",")[0]
    for _, (words, row) in cases.items():
        path.write_text("\n".join(good[:3] + [row.format(p=img)] + good[3:]) + "\n")
        _expect_error(path, "line 4", words, classes=["cat", "dog"])


def test_bad_json_annotations_name_file_and_entry(tmp_path):
    path = write_annotated(tmp_path / "d", fmt="json")
    entries = json.loads(path.read_text())
    bad = dict(entries[2], box=[5, 5, 3, 9])
    path.write_text(json.dumps(entries[:2] + [bad] + entries[3:]))
    _expect_error(path, "entry 2", "zero or negative width/height")
    path.write_text(json.dumps(entries[:1] + [dict(entries[1], box=[-1, 0, 5, 5])]))
    _expect_error(path, "entry 1", "outside the 60x40 image")
    path.write_text(json.dumps([dict(entries[0], image="img/gone.png")]))
    _expect_error(path, "entry 0", "image file not found")
    path.write_text(json.dumps([dict(entries[0], **{"class": "owl"})]))
    _expect_error(path, "entry 0", "unknown class 'owl'", classes=["cat", "dog"])


def _painted(
    h: int, w: int, box: tuple[int, int, int, int]
) -> tuple[tv_tensors.Image, dict]:
    a = torch.zeros(3, h, w, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    a[0, y1:y2, x1:x2] = 255
    target = {
        "box": tv_tensors.BoundingBoxes(
            torch.tensor([box], dtype=torch.float32), format="XYXY", canvas_size=(h, w)
        ),
        "label": 1,
    }
    return tv_tensors.Image(a), target


@pytest.mark.parametrize("flip", [False, True])
def test_resize_and_flip_keep_the_box_on_the_painted_object(flip):
    image, target = _painted(30, 80, (50, 6, 70, 21))  # non-square, right-hand side
    steps = [v2.Resize((32, 32), antialias=True)] + (
        [v2.RandomHorizontalFlip(1.0)] if flip else []
    )
    tf = LocalizationTransform(steps + [v2.ToDtype(torch.float32, scale=True)])
    img, box, label = tf(image, target)
    assert label == 1 and tuple(img.shape) == (3, 32, 32)
    x1, y1, x2, y2 = (box * 32).tolist()
    red = img[0] > 0.5
    ys, xs = torch.nonzero(red, as_tuple=True)
    # the red region and the box agree to a pixel (antialiasing blurs one pixel at the edges)
    assert (
        abs(xs.min() - x1) <= 1
        and abs(xs.max() + 1 - x2) <= 1
        and abs(ys.min() - y1) <= 1
        and abs(ys.max() + 1 - y2) <= 1
    )
    assert (x1 < 16) == flip  # the object moved to the left half exactly when flipped
    inside = red[int(y1) + 1 : int(y2) - 1, int(x1) + 1 : int(x2) - 1]
    assert inside.all()


def test_train_and_eval_pipelines_give_normalised_boxes_and_collate():
    ds = SyntheticLocalization("train", 4, (40, 56), 6)
    ds.transforms = localization_train_transforms(
        32, MEAN, STD, hflip=True, color_jitter=0.3
    )
    batch = localization_collate([ds[i] for i in range(4)])
    x, boxes, labels = batch
    assert (
        x.shape == (4, 3, 32, 32)
        and x.dtype == torch.float32
        and boxes.shape == (4, 4)
        and labels.shape == (4,)
    )
    assert (
        (boxes >= 0).all()
        and (boxes <= 1).all()
        and (boxes[:, 2:] > boxes[:, :2]).all()
    )
    ds.transforms = localization_eval_transforms(32, MEAN, STD)
    _, b, _ = ds[1]
    box, _ = ds.annotation(1)
    assert torch.allclose(b, torch.tensor(box) / torch.tensor([56.0, 40.0, 56.0, 40.0]))


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_box_formats_read_the_same_boxes(tmp_path, fmt):
    """The same annotations written as xywh and cxcywh read back as the xyxy file's corners."""
    path = write_annotated(tmp_path / "d", fmt=fmt)
    ref = AnnotatedLocalization(path)
    corners = torch.tensor([ref.annotation(i)[0] for i in range(len(ref))])
    for box_format in ("xywh", "cxcywh"):
        other = from_xyxy(corners, box_format)
        assert torch.allclose(to_xyxy(other, box_format), corners.double())
        if box_format == "xywh":  # the notes' (x, y, w, h): top-left corner and size
            assert torch.equal(other[:, 2:], (corners[:, 2:] - corners[:, :2]).double())
        if fmt == "csv":
            lines = path.read_text().splitlines()
            rows = [
                ",".join(line.split(",")[:2] + [f"{v:g}" for v in b.tolist()])
                for line, b in zip(lines[1:], other)
            ]
            text = "path,class,x,y,w,h\n" + "\n".join(rows) + "\n"
        else:
            entries = json.loads(path.read_text())
            text = json.dumps([dict(e, box=b.tolist()) for e, b in zip(entries, other)])
        written = path.with_name(f"{box_format}.{fmt}")
        written.write_text(text)
        ds = AnnotatedLocalization(written, box_format=box_format)
        got = torch.tensor([ds.annotation(i)[0] for i in range(len(ds))])
        assert torch.allclose(got, corners) and ds.classes == ref.classes
        with pytest.raises(DataError, match="outside the 60x40 image|negative width"):
            AnnotatedLocalization(
                written
            )  # read as corners, the same numbers are wrong
    with pytest.raises(ConfigError, match="box_format: unknown 'xy'"):
        AnnotatedLocalization(path, box_format="xy")
