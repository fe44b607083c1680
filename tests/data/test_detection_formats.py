"""Detection annotation formats: VOC / COCO / YOLO readers, writers, conversion and error messages."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convision.data.detection_formats import (
    DetectionRecord,
    clip_tolerance,
    convert,
    detect_format,
    load_record_image,
    read_coco,
    read_detection,
    read_voc,
    read_yolo,
    write_coco,
    write_yolo,
)
from convision.data.synthetic import make_scene
from convision.errors import DataError

W, H = 40, 30


def _png(path: Path, w: int = W, h: int = H, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def _voc_xml(
    filename: str,
    objects: list[tuple[str, int, int, int, int, int]],
    w: int = W,
    h: int = H,
) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>"
        for n, a, b, c, e, d in objects
    )
    return (
        f"<annotation><filename>{filename}</filename><size><width>{w}</width><height>{h}</height>"
        f"<depth>3</depth></size>{objs}</annotation>"
    )


def _make_voc(root: Path, items: dict[str, list], split: str = "train") -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for stem, objects in items.items():
        _png(root / "JPEGImages" / f"{stem}.png")
        (root / "Annotations" / f"{stem}.xml").write_text(
            _voc_xml(f"{stem}.png", objects)
        )
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text(
        "".join(s + "\n" for s in items)
    )
    return root


VOC_ITEMS = {
    "a": [("dog", 1, 1, 10, 12, 0), ("cat", 21, 5, 40, 30, 1)],
    "b": [("cat", 3, 4, 7, 9, 0)],
    "c": [],  # negative image
}


def test_read_voc_converts_one_based_inclusive_and_keeps_difficult(
    tmp_path: Path,
) -> None:
    records, classes = read_voc(_make_voc(tmp_path / "voc", VOC_ITEMS), "train")
    assert classes == ["cat", "dog"]
    assert [r.name for r in records] == ["a.png", "b.png", "c.png"]
    a = records[0]
    np.testing.assert_array_equal(a.boxes, [[0, 0, 10, 12], [20, 4, 40, 30]])
    assert a.labels.tolist() == [1, 0] and a.difficult.tolist() == [False, True]
    assert (a.width, a.height) == (W, H)
    assert len(records[2].boxes) == 0 and records[2].boxes.shape == (0, 4)


def _by_name(records: list[DetectionRecord], classes: list[str]) -> dict[str, tuple]:
    out = {}
    for r in records:
        order = np.lexsort(r.boxes.T[::-1])
        out[Path(r.name).stem] = (
            r.boxes[order],
            [classes[k] for k in r.labels[order]],
            r.difficult[order].tolist(),
        )
    return out


@pytest.mark.filterwarnings("error::UserWarning")
def test_round_trip_voc_coco_yolo_voc(tmp_path: Path) -> None:
    src = _make_voc(tmp_path / "voc", VOC_ITEMS)
    ref = _by_name(*read_voc(src, "train"))
    coco = convert(src, tmp_path / "coco", "coco", split="train")
    assert detect_format(coco) == "coco" and coco.name == "train.json"
    got = _by_name(*read_coco(coco))
    for k in ref:  # COCO keeps difficult (as iscrowd)
        np.testing.assert_array_equal(got[k][0], ref[k][0])
        assert got[k][1:] == ref[k][1:]
    yolo = convert(coco, tmp_path / "yolo", "yolo")
    assert detect_format(yolo) == "yolo"
    back = convert(yolo, tmp_path / "voc2", "voc", split=None)
    assert detect_format(back) == "voc"
    records, classes = read_voc(back, "train")
    assert classes == ["cat", "dog"]
    got = _by_name(records, classes)
    assert set(got) == set(ref)
    for (
        k
    ) in ref:  # YOLO keeps boxes up to its float precision, labels, but not difficult
        np.testing.assert_allclose(got[k][0], ref[k][0], atol=1e-3)
        assert got[k][1] == ref[k][1]
        assert got[k][2] == [False] * len(ref[k][2])
    xml = (
        back / "Annotations" / "a.xml"
    ).read_text()  # VOC's 1-based inclusive pixels: [0, 0, 10, 12]
    assert (
        "<xmin>1</xmin>" in xml
        and "<ymin>1</ymin>" in xml
        and "<xmax>10</xmax>" in xml
        and "<ymax>12</ymax>" in xml
    )
    with Image.open(records[0].image) as im:
        assert im.size == (W, H)


def test_written_coco_loads_in_pycocotools(tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    records, classes = read_voc(_make_voc(tmp_path / "voc", VOC_ITEMS), "train")
    out = write_coco(records, classes, tmp_path / "out" / "ann.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(out))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "dog"]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[records[0].image_id]))
    assert sorted(a["bbox"] for a in anns) == [[0, 0, 10, 12], [20, 4, 20, 26]]
    assert sorted(a["iscrowd"] for a in anns) == [0, 1]
    assert len(coco.getImgIds()) == 3  # the negative image is kept


def test_export_synthetic_scenes_pixels_and_boxes(tmp_path: Path) -> None:
    out = convert(
        "synthetic",
        tmp_path / "syn",
        "yolo",
        num_images=3,
        image_size=32,
        num_classes=4,
        seed=5,
    )
    records, classes = read_yolo(out)
    assert classes == ["disc", "square", "triangle"]
    for k, r in enumerate(records):
        s = make_scene(k, seed=5, image_size=32, num_classes=4)
        np.testing.assert_allclose(r.boxes, s.boxes, atol=1e-3)
        assert r.labels.tolist() == (s.labels - 1).tolist()
        np.testing.assert_array_equal(load_record_image(r), s.image)  # PNG is lossless


def test_yolo_ultralytics_layout_yaml_names_and_negatives(tmp_path: Path) -> None:
    root = tmp_path / "y"
    _png(root / "images" / "train" / "p.png", 50, 20)
    _png(root / "images" / "train" / "q.png")
    _png(root / "images" / "val" / "r.png")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "p.txt").write_text(
        "1 0.5 0.5 0.2 0.5\n0 0.1 0.25 0.2 0.5\n"
    )
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: car\n  1: bus\n"
    )
    records, classes = read_yolo(root, "train")
    assert classes == ["car", "bus"]
    p, q = records
    assert (p.width, p.height) == (50, 20)
    np.testing.assert_allclose(p.boxes, [[20, 5, 30, 15], [0, 0, 10, 10]], atol=1e-4)
    assert p.labels.tolist() == [1, 0]
    assert q.boxes.shape == (0, 4)  # no label file: negative image
    assert len(read_yolo(root / "data.yaml", "val")[0]) == 1
    with pytest.raises(DataError, match="holds splits train, val"):
        read_yolo(root)


def test_yolo_writer_split_layout_reads_back(tmp_path: Path) -> None:
    records, classes = read_voc(_make_voc(tmp_path / "voc", VOC_ITEMS), "train")
    out = write_yolo(records, classes, tmp_path / "y", split="val")
    assert (out / "images" / "val" / "a.png").is_file() and (
        out / "labels" / "val" / "c.txt"
    ).read_text() == ""
    back, names = read_yolo(out, "val")
    assert names == classes and [len(r.boxes) for r in back] == [2, 1, 0]


def test_slightly_outside_boxes_are_clipped_with_a_warning(tmp_path: Path) -> None:
    root = _make_voc(
        tmp_path / "voc", {"a": [("dog", 0, 1, 41, 30, 0)]}
    )  # 0-based xmin, xmax one past
    with pytest.warns(UserWarning, match=r"a\.xml: clipped 1 box"):
        records, _ = read_voc(root, "train")
    np.testing.assert_array_equal(records[0].boxes, [[0, 0, 40, 30]])
    assert clip_tolerance(1000) == 10.0 and clip_tolerance(40) == 2.0


def test_clipped_boxes_of_a_data_set_are_summarised_in_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    items = {
        stem: [("dog", 0, 1, 41, 30, 0), ("dog", 1, 1, 10, 10, 0)]
        for stem in ("a", "b", "c")
    }
    root = _make_voc(tmp_path / "voc", items)
    with (
        warnings.catch_warnings(record=True) as caught,
        caplog.at_level("DEBUG", logger="convision.data"),
    ):
        warnings.simplefilter("always")
        records, _ = read_detection(root, "train")
    texts = [str(w.message) for w in caught]
    assert (
        len(texts) == 1
        and "clipped 3 box(es) in 3 file(s)" in texts[0]
        and "--debug" in texts[0]
    )
    assert sorted(
        r.getMessage().split(":")[0].rsplit("/", 1)[-1] for r in caplog.records
    ) == ["a.xml", "b.xml", "c.xml"]
    assert all(float(r.boxes.max()) <= 40 for r in records)


def test_round_off_is_clipped_silently(tmp_path: Path) -> None:
    root = tmp_path / "y"
    _png(root / "images" / "p.png")
    (root / "labels").mkdir(parents=True)
    (root / "classes.txt").write_text("car\n")
    (root / "labels" / "p.txt").write_text("0 0.7500001 0.5 0.5000001 1.0000001\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records, _ = read_yolo(root)
    np.testing.assert_allclose(records[0].boxes, [[20, 0, 40, 30]], atol=1e-4)
    assert records[0].boxes.max() <= 40 and records[0].boxes.min() >= 0


def _expect(match: str, fn, *args) -> None:
    with pytest.raises(DataError, match=match) as info:
        fn(*args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "objects, match",
    [
        (
            [("dog", 1, 1, 5, 5, 0), ("dog", 9, 1, 5, 5, 0)],
            r"b\.xml object 1: box .* zero or negative width",
        ),
        (
            [("dog", 1, 1, 5, 5, 0), ("dog", 1, 1, 50, 5, 0)],
            r"b\.xml object 1: box .* outside the 40x30 image",
        ),
        ([("emu", 1, 1, 5, 5, 0)], r"b\.xml object 0: unknown class 'emu'"),
    ],
)
def test_voc_bad_boxes_name_file_and_object(
    tmp_path: Path, objects: list, match: str
) -> None:
    root = _make_voc(tmp_path / "voc", {"a": [("dog", 1, 1, 5, 5, 0)], "b": objects})
    _expect(match, read_voc, root, "train", ["cat", "dog"])


def test_voc_missing_image_and_malformed_xml(tmp_path: Path) -> None:
    root = _make_voc(tmp_path / "voc", {"a": [("dog", 1, 1, 5, 5, 0)], "b": []})
    (root / "JPEGImages" / "b.png").unlink()
    _expect(r"b\.xml: image .*b\.png not found", read_voc, root, "train")
    _png(root / "JPEGImages" / "b.png")
    (root / "Annotations" / "a.xml").write_text("<annotation><object>")
    _expect(r"a\.xml: cannot be read as XML", read_voc, root, "train")
    _expect(r"val\.txt: split file not found \(splits: train\)", read_voc, root, "val")


def _coco(tmp_path: Path, anns: list, text: str | None = None) -> Path:
    _png(tmp_path / "images" / "x.png")
    p = tmp_path / "ann.json"
    data = {
        "images": [{"id": 7, "file_name": "x.png", "width": W, "height": H}],
        "annotations": anns,
        "categories": [{"id": 3, "name": "b"}, {"id": 1, "name": "a"}],
    }
    p.write_text(text if text is not None else json.dumps(data))
    return p


def test_coco_reader_classes_in_id_order_crowd_and_errors(tmp_path: Path) -> None:
    good = {"image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4], "iscrowd": 1}
    records, classes = read_coco(_coco(tmp_path, [good]))
    assert classes == ["a", "b"] and records[0].image_id == 7
    np.testing.assert_array_equal(records[0].boxes, [[1, 2, 4, 6]])
    assert records[0].labels.tolist() == [1] and records[0].difficult.tolist() == [True]
    _expect(
        r"ann\.json annotation 1: unknown category_id 2",
        read_coco,
        _coco(tmp_path, [good, dict(good, category_id=2)]),
    )
    _expect(
        r"ann\.json annotation 0: bbox .* zero or negative",
        read_coco,
        _coco(tmp_path, [dict(good, bbox=[1, 1, 0, 3])]),
    )
    _expect(
        r"ann\.json annotation 0 box 0: .* outside the 40x30",
        read_coco,
        _coco(tmp_path, [dict(good, bbox=[30, 1, 30, 3])]),
    )
    _expect(
        r"ann\.json: cannot be read as JSON", read_coco, _coco(tmp_path, [], text="{")
    )
    (tmp_path / "images" / "x.png").unlink()
    p = tmp_path / "ann.json"
    p.write_text(
        json.dumps(
            {
                "images": [{"id": 7, "file_name": "x.png", "width": W, "height": H}],
                "categories": [{"id": 1, "name": "a"}],
            }
        )
    )
    _expect(r"ann\.json image 0: image .*x\.png not found", read_coco, p)


def test_yolo_errors_name_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "y"
    _png(root / "images" / "p.png")
    (root / "labels").mkdir(parents=True)
    (root / "classes.txt").write_text("car\nbus\n")
    lab = root / "labels" / "p.txt"
    lab.write_text("0 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n")
    _expect(r"p\.txt line 2: class id 2 out of range \(0\.\.1\)", read_yolo, root)
    lab.write_text("0 0.5 0.5 0.1\n")
    _expect(r"p\.txt line 1: expected 'class cx cy w h'", read_yolo, root)
    lab.write_text(
        "0 0.5 0.5 0.1 0.1\n\n0 0.5 0.5 0.1 -0.1\n"
    )  # the bad box is the second, on line 3
    _expect(r"p\.txt line 3: .* zero or negative", read_yolo, root)
    lab.write_text("")
    (root / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    _expect(r"ghost\.txt: label file without an image", read_yolo, root)


def test_detect_format_unknown(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _expect(r"empty: unknown detection data format", detect_format, tmp_path / "empty")
    _expect(r"nowhere: not found", detect_format, tmp_path / "nowhere")
