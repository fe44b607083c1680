"""Classification data: ImageFolder / CSV / IDX / synthetic, fraction, hold-out, grayscale, errors."""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from convision.data.classification import (
    CSVClassification,
    IDXClassification,
    ImageFolderClassification,
    SyntheticClassification,
    build_classification_dataset,
    classification_eval_transforms,
    classification_train_transforms,
    detect_format,
    holdout_split,
    read_idx,
    stratified_indices,
)
from convision.errors import DataError
from convision.tasks.classify import ClassifyDataConfig

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_folder(
    root: Path,
    classes=("cat", "dog", "fox", "owl"),
    per_class=5,
    size=(20, 24),
    gray=False,
) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            shape = size if gray else (*size, 3)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(
                root / c / f"{k}.png"
            )
    return root


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_idx_folder(root: Path, n_train=40, n_val=10) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_val)):
        write_idx(
            root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28))
        )
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def test_image_folder_conventions_and_grayscale(tmp_path):
    root = write_folder(tmp_path / "d", gray=True)
    (tmp_path / "d" / "cat" / "notes.txt").write_text("not an image")
    ds = ImageFolderClassification(root)
    assert ds.classes == ["cat", "dog", "fox", "owl"] and len(ds) == 20
    assert ds.targets == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    image, label = ds[7]
    assert image.shape == (3, 20, 24) and image.dtype == torch.uint8 and label == 1
    assert torch.equal(image[0], image[2])  # grey repeated to three channels
    x, _ = ds.with_transforms(classification_eval_transforms(32, MEAN, STD))[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    x, _ = ds.with_transforms(classification_train_transforms(32, MEAN, STD))[0]
    assert x.shape == (3, 32, 32)


def test_idx_parsing_and_fashion_names(tmp_path):
    root = write_idx_folder(tmp_path / "fm")
    arr = read_idx(root / "train-images-idx3-ubyte.gz")
    assert arr.shape == (40, 28, 28) and arr.dtype == np.uint8
    assert detect_format(str(root)) == "idx"
    train = IDXClassification(root, "train")
    val = IDXClassification(root, "val")
    assert (
        len(train) == 40
        and len(val) == 10
        and train.classes[0] == "T-shirt/top"
        and len(train.classes) == 10
    )
    image, label = train[13]
    assert image.shape == (3, 28, 28) and label == 3
    assert np.array_equal(image[1].numpy(), arr[13])
    # a truncated file and a bad magic number are one-line DataErrors naming the file
    bad = tmp_path / "bad" / "train-labels-idx1-ubyte.gz"
    bad.parent.mkdir()
    with gzip.open(bad, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 100) + bytes(10))
    with pytest.raises(
        DataError, match="train-labels-idx1-ubyte.gz: IDX header says 100"
    ):
        read_idx(bad)
    with gzip.open(bad, "wb") as f:
        f.write(b"PK\x03\x04hello")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(bad)


def test_fraction_is_stratified_and_deterministic():
    targets = [c for c in range(4) for _ in range(100)] + [4] * 7
    keep = stratified_indices(targets, 0.1, seed=3)
    counts = Counter(targets[i] for i in keep)
    assert counts == {0: 10, 1: 10, 2: 10, 3: 10, 4: 1}
    assert keep == stratified_indices(targets, 0.1, seed=3) and keep == sorted(keep)
    assert keep != stratified_indices(targets, 0.1, seed=4)
    assert len(stratified_indices(targets, 0.01)) == 5  # at least one per class
    assert stratified_indices(targets, 1.0) == list(range(len(targets)))
    train, val = holdout_split(targets, 0.2, seed=0)
    assert not set(train) & set(val) and len(train) + len(val) == len(targets)
    assert Counter(targets[i] for i in val)[0] == 20


def test_build_from_config_folder_holdout_idx_fraction(tmp_path):
    root = write_folder(tmp_path / "d")
    cfg = ClassifyDataConfig(data=str(root), val_fraction=0.2)
    tr = build_classification_dataset(cfg, "train")
    va = build_classification_dataset(cfg, "val", classes=tr.classes)
    assert (
        len(tr) == 16
        and len(va) == 4
        and not {tr.name(i) for i in range(16)} & {va.name(i) for i in range(4)}
    )
    split_root = tmp_path / "s"
    write_folder(split_root / "train")
    write_folder(split_root / "val", per_class=2)
    cfg = ClassifyDataConfig(data=str(split_root))
    assert (
        len(build_classification_dataset(cfg, "train")) == 20
        and len(build_classification_dataset(cfg, "val")) == 8
    )
    cfg = ClassifyDataConfig(
        data=str(write_idx_folder(tmp_path / "fm", n_train=100)), fraction=0.1
    )
    tr = build_classification_dataset(cfg, "train")
    assert len(tr) == 10 and sorted(tr.targets) == list(range(10))


def test_csv(tmp_path):
    root = write_folder(tmp_path / "d", per_class=2)
    rows = ["path,label"] + [
        f"d/{c}/{k}.png,{c}" for c in ("owl", "cat") for k in range(2)
    ]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    ds = CSVClassification(tmp_path / "list.csv")
    assert (
        ds.classes == ["cat", "owl"]
        and ds.targets == [1, 1, 0, 0]
        and ds[0][0].shape == (3, 20, 24)
    )
    assert root.is_dir()
    (tmp_path / "bad.csv").write_text("d/cat/0.png,cat\nd/cat/missing.png,cat\n")
    with pytest.raises(DataError) as e:
        CSVClassification(tmp_path / "bad.csv")
    msg = str(e.value)
    assert "bad.csv line 2" in msg and "missing.png" in msg and "\n" not in msg


def test_folder_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match="nope: folder not found"):
        ImageFolderClassification(tmp_path / "nope")
    root = write_folder(tmp_path / "d", per_class=1)
    (root / "empty").mkdir()
    with pytest.raises(DataError) as e:
        ImageFolderClassification(root)
    assert "empty: class folder holds no images" in str(e.value) and "\n" not in str(
        e.value
    )
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        ImageFolderClassification(tmp_path / "flat")
    with pytest.raises(DataError, match="no such file or folder"):
        detect_format(str(tmp_path / "missing"))


def test_synthetic_labels_are_shapes():
    ds = SyntheticClassification(
        "train", num_images=12, image_size=32, num_classes=4, seed=0
    )
    assert ds.classes == ["disc", "square", "triangle"]
    from convision.data.synthetic import make_scene

    for i in range(12):
        image, label = ds[i]
        assert image.shape == (3, 32, 32)
        assert (
            label
            == make_scene(i, seed=0, image_size=32, num_classes=4, max_objects=1).label
            - 1
        )
    val = SyntheticClassification("val", num_images=3, image_size=32, num_classes=4)
    assert not torch.equal(val[0][0], ds[0][0])
    sub = ds.select([3, 5])
    assert len(sub) == 2 and sub.targets == [ds.targets[3], ds.targets[5]]
    cfg = SimpleNamespace(
        **{
            **ClassifyDataConfig().__dict__,
            "num_train": 30,
            "scene_size": 32,
            "fraction": 0.5,
        }
    )
    assert len(build_classification_dataset(cfg, "train")) < 30
