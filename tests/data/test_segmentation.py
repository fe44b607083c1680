from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from convision.data import (
    IGNORE_INDEX,
    VOC_CLASSES,
    SegmentationFolder,
    SyntheticSegmentation,
    VOCSegmentation,
    build_segmentation_dataset,
    detect_format,
    make_scene,
    read_image,
    read_mask,
)
from convision.errors import ConfigError, DataError
from convision.tasks.segment import SegmentDataConfig
from convision.viz import voc_palette


def _one_line_error(excinfo, *fragments: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


def _rgb(h=8, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _palette_png(path: Path, indices: np.ndarray) -> None:
    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    im.putpalette([c for rgb in voc_palette(256) for c in rgb])
    im.save(path)


# ----------------------------------------------------------------------------------- readers


def test_read_image_modes(tmp_path):
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)

    grey = rgb[:, :, 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "l.png")
    out = read_image(tmp_path / "l.png")
    assert out.shape == (8, 10, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 2], grey)

    rgba = np.dstack([rgb, np.full((8, 10), 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(
        read_image(tmp_path / "rgba.png"), rgb
    )  # alpha dropped, colours kept

    Image.fromarray(np.dstack([grey, grey]), mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png")[:, :, 0], grey)

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert read_image(tmp_path / "cmyk.jpg").shape == (8, 10, 3)

    idx = (np.arange(80).reshape(8, 10) % 21).astype(np.uint8)
    _palette_png(tmp_path / "p.png", idx)
    np.testing.assert_array_equal(
        read_image(tmp_path / "p.png"), np.array(voc_palette(21), np.uint8)[idx]
    )


def test_read_image_16_bit_is_scaled(tmp_path):
    a = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")  # I;16 PNG
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    np.testing.assert_array_equal(
        read_image(tmp_path / "g16.png")[0, :, 0], [0, 1, 128, 255]
    )


def test_read_image_errors(tmp_path):
    with pytest.raises(DataError) as e:
        read_image(tmp_path / "missing.jpg")
    _one_line_error(e, "missing.jpg", "not found")

    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError) as e:
        read_image(tmp_path / "junk.png")
    _one_line_error(e, "junk.png")

    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        read_image(tmp_path / "trunc.jpg")
    _one_line_error(e, "trunc.jpg")
    assert str(e.value).startswith(str(tmp_path / "trunc.jpg"))


def test_read_mask_palette_gives_indices_not_colours(tmp_path):
    idx = np.array([[0, 1, 2], [15, 20, 255]], dtype=np.uint8)
    _palette_png(tmp_path / "m.png", idx)
    out = read_mask(tmp_path / "m.png", num_classes=21)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, idx)


def test_read_mask_grey_and_16_bit(tmp_path):
    idx = np.array([[0, 3], [5, 255]], dtype=np.uint8)
    Image.fromarray(idx, mode="L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "l.png", num_classes=6), idx)
    Image.fromarray(idx.astype(np.uint16)).save(tmp_path / "i16.png")
    out = read_mask(tmp_path / "i16.png", num_classes=6)
    np.testing.assert_array_equal(out, idx)
    Image.fromarray(np.dstack([idx] * 3)).save(
        tmp_path / "grey_rgb.png"
    )  # grey saved as RGB is fine
    np.testing.assert_array_equal(read_mask(tmp_path / "grey_rgb.png"), idx)


def test_read_mask_errors(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "colour.png")
    with pytest.raises(DataError) as e:
        read_mask(tmp_path / "colour.png")
    _one_line_error(
        e, "colour.png", "expected a class-index or palette PNG, got an RGB image"
    )

    Image.fromarray(np.array([[0, 7], [255, 2]], np.uint8), mode="L").save(
        tmp_path / "range.png"
    )
    with pytest.raises(DataError) as e:
        read_mask(tmp_path / "range.png", num_classes=6)
    _one_line_error(e, "range.png", "mask has value 7 but the data set has 6 classes")
    read_mask(tmp_path / "range.png", num_classes=8)  # 255 is always allowed

    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(tmp_path / "m.jpg")
    with pytest.raises(DataError) as e:
        read_mask(tmp_path / "m.jpg")
    _one_line_error(e, "m.jpg", "lossless")


# ------------------------------------------------------------------------------- synthetic


def test_synthetic_dataset_types_and_splits():
    tr = SyntheticSegmentation("train", num_images=3, image_size=32)
    va = SyntheticSegmentation("val", num_images=3, image_size=32)
    image, mask = tr[1]
    assert (
        isinstance(image, tv_tensors.Image)
        and image.dtype == torch.uint8
        and image.shape == (3, 32, 32)
    )
    assert (
        isinstance(mask, tv_tensors.Mask)
        and mask.dtype == torch.int64
        and mask.shape == (32, 32)
    )
    scene = make_scene(1, image_size=32)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), scene.image)
    np.testing.assert_array_equal(mask.numpy(), scene.mask)
    assert (
        len(tr) == 3
        and tr.classes[:3] == ["background", "disc", "square"]
        and len(tr.colors) == 6
    )
    assert tr.name(2) == "synthetic/train/000002"
    train_images = {tr[i][0].numpy().tobytes() for i in range(3)}
    assert not train_images & {va[i][0].numpy().tobytes() for i in range(3)}
    tr.validate()
    with pytest.raises(IndexError):
        tr[3]


def test_synthetic_dataset_with_transforms_and_workers():
    calls = []

    def t(image, mask):
        calls.append(1)
        return image.float(), mask + 1

    ds = SyntheticSegmentation(
        "train", num_images=4, image_size=(24, 40), num_classes=3, transforms=t
    )
    image, mask = ds[0]
    assert (
        calls
        and image.dtype == torch.float32
        and image.shape == (3, 24, 40)
        and mask.min() >= 1
    )
    loader = torch.utils.data.DataLoader(
        SyntheticSegmentation("val", num_images=4, image_size=16),
        batch_size=2,
        num_workers=1,
    )
    batches = list(loader)
    assert len(batches) == 2 and batches[0][0].shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(
        batches[1][1][1].numpy(), make_scene(1_000_003, image_size=16).mask
    )


def test_synthetic_dataset_bad_settings():
    with pytest.raises(ConfigError, match="num_classes"):
        SyntheticSegmentation(num_classes=42)
    with pytest.raises(ConfigError, match="split"):
        SyntheticSegmentation(split="test")


# ---------------------------------------------------------------------------------- folder


def _folder(
    root: Path, stems=("a", "b", "c", "d", "e", "f"), classes: int = 4, size=(12, 16)
) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i, s in enumerate(stems):
        Image.fromarray(_rgb(*size, seed=i)).save(
            root / "images" / f"{s}.{'jpg' if i % 2 else 'png'}"
        )
        m = rng.integers(0, classes, size, dtype=np.uint8)
        m[0, 0] = classes - 1
        m[1, 1] = IGNORE_INDEX
        Image.fromarray(m, mode="L").save(root / "masks" / f"{s}.png")
    return root


def test_folder_default_split_and_inferred_classes(tmp_path):
    root = _folder(tmp_path / "d")
    tr, va = SegmentationFolder(root, "train"), SegmentationFolder(root, "val")
    assert [Path(tr.name(i)).stem for i in range(len(tr))] == ["a", "b", "c", "d", "f"]
    assert [Path(va.name(i)).stem for i in range(len(va))] == [
        "e"
    ]  # every fifth sorted stem
    assert tr.classes == ["class_0", "class_1", "class_2", "class_3"]
    assert tr.colors == voc_palette(4)
    image, mask = tr[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 12, 16)
    assert mask.dtype == torch.int64 and mask[1, 1] == IGNORE_INDEX
    tr.validate(progress=True)
    assert detect_format(root) == "folder"


def test_folder_split_files_and_classes_txt(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "train.txt").write_text("a\nb.png\n\n# comment\nc\n")
    (root / "classes.txt").write_text("background\ncat 255 0 0\ndog\nbird 0 0 255\n")
    tr, va = SegmentationFolder(root, "train"), SegmentationFolder(root, "val")
    assert len(tr) == 3 and len(va) == 3  # val: the images not in train.txt
    assert tr.classes == ["background", "cat", "dog", "bird"]
    assert tr.colors[1] == (255, 0, 0) and tr.colors[2] == voc_palette(3)[2]


def test_folder_errors(tmp_path):
    with pytest.raises(DataError) as e:
        SegmentationFolder(tmp_path / "nope")
    _one_line_error(e, "nope", "not found")

    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        SegmentationFolder(tmp_path / "empty")
    _one_line_error(e, "masks")

    root = _folder(tmp_path / "nomask")
    (root / "masks" / "c.png").unlink()
    with pytest.raises(DataError) as e:
        SegmentationFolder(root)
    _one_line_error(
        e, "c.png", str(root / "masks" / "c.png")
    )  # names both image and mask

    root = _folder(tmp_path / "listed")
    (root / "val.txt").write_text("a\nzzz\n")
    with pytest.raises(DataError) as e:
        SegmentationFolder(root, "val")
    _one_line_error(e, "val.txt line 2", "zzz")

    root = _folder(tmp_path / "emptysplit")
    (root / "val.txt").write_text("# nothing yet\n")
    with pytest.raises(DataError) as e:
        SegmentationFolder(root, "val")
    _one_line_error(e, "val.txt", "no images for split 'val'")

    root = _folder(tmp_path / "badclasses")
    (root / "classes.txt").write_text("background\ncat 1 2\n")
    with pytest.raises(DataError) as e:
        SegmentationFolder(root)
    _one_line_error(e, "classes.txt line 2")

    root = _folder(tmp_path / "binary255", classes=1)
    with pytest.raises(DataError) as e:
        SegmentationFolder(root)
    _one_line_error(e, "only class 0")


def test_folder_validate_finds_bad_samples(tmp_path):
    root = _folder(tmp_path / "size")
    Image.fromarray(np.zeros((10, 16), np.uint8), mode="L").save(
        root / "masks" / "b.png"
    )
    ds = SegmentationFolder(root, "train")
    with pytest.raises(DataError) as e:
        ds.validate()
    _one_line_error(e, "b.png", "mask is 16x10 (WxH) but its image b.jpg is 16x12")

    root = _folder(tmp_path / "range")
    (root / "classes.txt").write_text("bg\nx\ny\nz\n")
    Image.fromarray(np.full((12, 16), 9, np.uint8), mode="L").save(
        root / "masks" / "d.png"
    )
    with pytest.raises(DataError) as e:
        SegmentationFolder(root, "train").validate()
    _one_line_error(e, "d.png", "mask has value 9 but the data set has 4 classes")

    root = _folder(tmp_path / "trunc")
    data = (root / "images" / "b.jpg").read_bytes()
    (root / "images" / "b.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        SegmentationFolder(root, "train").validate()
    _one_line_error(e, "b.jpg")


# ------------------------------------------------------------------------------------- VOC


def _voc(base: Path) -> Path:
    voc = base / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    for i, stem in enumerate(("2007_000032", "2007_000039", "2007_000063")):
        Image.fromarray(_rgb(10, 14, seed=i)).save(voc / "JPEGImages" / f"{stem}.jpg")
        idx = np.zeros((10, 14), np.uint8)
        idx[2:6, 3:9] = 15  # person
        idx[2, 3:9] = 255  # boundary
        _palette_png(voc / "SegmentationClass" / f"{stem}.png", idx)
    (voc / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n2007_000039\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000063\n")
    return voc


def test_voc_layout(tmp_path):
    voc = _voc(tmp_path)
    for root in (
        tmp_path,
        tmp_path / "VOCdevkit",
        voc,
    ):  # VOC2012 itself or a folder above it
        tr = VOCSegmentation(root, "train")
        assert (
            len(tr) == 2 and tr.classes == list(VOC_CLASSES) and len(tr.classes) == 21
        )
        assert tr.colors == voc_palette(21)
        image, mask = tr[0]
        assert image.shape == (3, 10, 14) and mask.dtype == torch.int64
        assert sorted(mask.unique().tolist()) == [0, 15, 255]
        assert detect_format(root) == "voc"
    assert len(VOCSegmentation(tmp_path, "val")) == 1
    VOCSegmentation(tmp_path, "val").validate()


def test_voc_errors(tmp_path):
    voc = _voc(tmp_path)
    with pytest.raises(DataError) as e:
        VOCSegmentation(tmp_path, "trainval")
    _one_line_error(e, "trainval.txt", "not found")
    (voc / "SegmentationClass" / "2007_000063.png").unlink()
    with pytest.raises(DataError) as e:
        VOCSegmentation(tmp_path, "val")
    _one_line_error(e, "2007_000063.jpg", "2007_000063.png")
    with pytest.raises(DataError) as e:
        VOCSegmentation(voc / "JPEGImages")
    _one_line_error(e, "JPEGImages", "not a Pascal VOC 2012 folder")


# ----------------------------------------------------------------------------------- build


def test_build_segmentation_dataset(tmp_path):
    cfg = SegmentDataConfig(
        num_train=5, num_val=2, scene_size=24, num_classes=3, data_seed=4
    )
    tr, va = (
        build_segmentation_dataset(cfg, "train"),
        build_segmentation_dataset(cfg, "val"),
    )
    assert isinstance(tr, SyntheticSegmentation) and len(tr) == 5 and len(va) == 2
    assert tr.num_classes == 3 and tr[0][0].shape == (3, 24, 24)
    np.testing.assert_array_equal(
        tr[0][1].numpy(), make_scene(0, seed=4, image_size=24, num_classes=3).mask
    )

    _voc(tmp_path / "v")
    assert isinstance(
        build_segmentation_dataset(
            SegmentDataConfig(data=str(tmp_path / "v")), "train"
        ),
        VOCSegmentation,
    )
    _folder(tmp_path / "f")
    assert isinstance(
        build_segmentation_dataset(
            SegmentDataConfig(data=str(tmp_path / "f"), format="folder"), "val"
        ),
        SegmentationFolder,
    )

    with pytest.raises(ConfigError) as e:
        build_segmentation_dataset(
            SegmentDataConfig(data=str(tmp_path / "f"), format="coco"), "train"
        )
    _one_line_error(e, "format", "coco")
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError) as e:
        build_segmentation_dataset(
            SegmentDataConfig(data=str(tmp_path / "other")), "train"
        )
    _one_line_error(e, "other", "unknown data layout")


def test_default_crop_is_the_data_size_up_to_320(tmp_path):
    """crop_size 0: images smaller than 320 train at their own size (no padding to 320x320);
    larger sides are capped at 320; the training samples have that size."""
    from convision.api import build_datasets
    from convision.data.segmentation import default_crop_size, largest_image_size

    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (h, w) in enumerate([(40, 60), (48, 50), (40, 400)]):
        Image.fromarray(_rgb(h, w, seed=i)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.ones((h, w), np.uint8)).save(root / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("bg\nfg\n")
    (root / "val.txt").write_text("2\n")
    train = SegmentationFolder(root, "train")
    assert largest_image_size(train) == (48, 60) and default_crop_size(train) == (
        48,
        60,
    )
    assert default_crop_size(SegmentationFolder(root, "val")) == (40, 320)
    cfg = SegmentDataConfig(data=str(root), scale_min=1.0, scale_max=1.0)
    train_set, _ = build_datasets(cfg)
    image, mask = train_set[0]
    assert tuple(image.shape) == (3, 48, 60) and tuple(mask.shape) == (48, 60)
    cfg.crop_size = 32
    assert tuple(build_datasets(cfg)[0][0][0].shape) == (
        3,
        32,
        32,
    )  # an explicit crop wins
