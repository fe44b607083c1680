"""End to end through the command line: train, eval, predict on tiny generated data, and the
bad-input contract (one line on stderr, exit 2, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convision.cli import main
from tests.helpers import SEGMENT_TINY, assert_clean_error, one_error_line, run_cli

TINY = SEGMENT_TINY


@pytest.fixture(scope="module")
def trained(segment_run) -> Path:
    return segment_run


def test_train_writes_a_self_describing_run(trained):
    for name in ("best.pt", "last.pt", "metrics.jsonl", "curves.png"):
        assert (trained / name).is_file(), name
    record = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= record["miou"] <= 1.0


def test_eval_prints_metrics_and_writes_json(trained, capsys):
    out_json = trained / "e.json"
    assert (
        main(
            [
                "segment",
                "eval",
                "--checkpoint",
                str(trained / "best.pt"),
                "--workers",
                "0",
                "--no-progress",
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for word in ("pixel", "mean", "IoU", "background"):
        assert word.lower() in printed.lower()
    metrics = json.loads(out_json.read_text())
    assert set(metrics) >= {
        "pixel_accuracy",
        "mean_accuracy",
        "miou",
        "fwiou",
        "per_class_iou",
    }
    assert metrics["num_images"] == 4
    assert "by object size" in printed and "small" in printed
    by_size = metrics["by_size"]
    assert by_size["thresholds"] == [1024, 9216] and by_size["excluded_classes"] == [0]


def test_eval_size_thresholds(trained, capsys):
    out_json = trained / "sizes.json"
    args = ["segment", "eval", "--checkpoint", str(trained / "best.pt")]
    args += ["--workers", "0", "--no-progress", "--json", str(out_json)]
    assert main([*args, "--size-thresholds", "64,256"]) == 0
    buckets = json.loads(out_json.read_text())["by_size"]["buckets"]
    assert [b["range"] for b in buckets.values()] == [[0, 64], [64, 256], [256, None]]
    assert sum(b["objects"] for b in buckets.values()) > 0  # the 4 scenes hold shapes
    capsys.readouterr()
    assert main([*args, "--size-thresholds", "256,64"]) == 2
    assert "--size-thresholds" in one_error_line(capsys)


def test_predict_writes_masks_colour_masks_and_overlays(trained, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(
        images / "a.png"
    )
    Image.fromarray(rng.integers(0, 255, (33, 41), dtype=np.uint8)).save(
        images / "b.jpg"
    )  # grayscale JPEG
    out = tmp_path / "pred"
    assert (
        main(
            [
                "segment",
                "predict",
                str(images),
                "--checkpoint",
                str(trained / "best.pt"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    mask = np.array(Image.open(out / "masks" / "a.png"))
    assert mask.shape == (50, 70) and mask.max() < 4
    assert np.array(Image.open(out / "masks" / "b.png")).shape == (33, 41)
    assert np.array(Image.open(out / "color" / "a.png")).shape == (50, 70, 3)
    assert np.array(Image.open(out / "overlay" / "b.png")).shape == (33, 41, 3)


def test_missing_data_folder(tmp_path):
    proc = run_cli(
        [
            "segment",
            "train",
            *TINY,
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert_clean_error(proc, "nope")


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\nlearning_rate: 0.1\n")
    proc = run_cli(["segment", "train", "--config", str(cfg)])
    assert_clean_error(proc, "c.yaml", "learning_rate")


def test_mask_of_the_wrong_size(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(5):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(
            root / "images" / f"im{i}.png"
        )
        mask = np.zeros((32, 32) if i != 3 else (30, 32), np.uint8)
        mask[4:12, 4:12] = 1
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    proc = run_cli(
        ["segment", "train", *TINY, "--data", str(root), "--out", str(tmp_path / "o")]
    )
    assert_clean_error(proc, "im3.png")


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = run_cli(["segment", "eval", "--checkpoint", str(bad)])
    assert_clean_error(proc, "bad.pt")


def test_predict_missing_input(trained, tmp_path):
    proc = run_cli(
        [
            "segment",
            "predict",
            str(tmp_path / "missing.png"),
            "--checkpoint",
            str(trained / "best.pt"),
            "--out",
            str(tmp_path / "p"),
        ]
    )
    assert_clean_error(proc, "missing.png")


def test_bad_flag_value_and_unknown_model(tmp_path):
    assert_clean_error(run_cli(["segment", "train", "--epochs", "two"]), "epochs")
    assert_clean_error(
        run_cli(
            [
                "segment",
                "train",
                *TINY,
                "--model",
                "fcn4s",
                "--out",
                str(tmp_path / "o"),
            ]
        ),
        "fcn4s",
    )


def test_existing_run_is_not_overwritten_without_asking(trained):
    proc = run_cli(["segment", "train", *TINY, "--out", str(trained)])
    assert_clean_error(proc, "--resume")


def _folder(root: Path, n: int = 5, size: tuple[int, int] = (32, 32)) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(
            root / "images" / f"im{i}.png"
        )
        mask = np.zeros(size, np.uint8)
        mask[4:12, 4:12] = 1
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    return root


def test_truncated_image(tmp_path):
    root = _folder(tmp_path / "ds")
    Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    ).save(root / "images" / "im2.jpg")
    (root / "images" / "im2.png").unlink()
    data = (root / "images" / "im2.jpg").read_bytes()
    (root / "images" / "im2.jpg").write_bytes(data[: len(data) // 2])
    proc = run_cli(
        ["segment", "train", *TINY, "--data", str(root), "--out", str(tmp_path / "o")]
    )
    assert_clean_error(proc, "im2.jpg")


def test_mask_value_beyond_the_classes(tmp_path):
    root = _folder(tmp_path / "ds")
    (root / "classes.txt").write_text("background\nobject\n")
    bad = np.zeros((32, 32), np.uint8)
    bad[0, 0] = 7
    Image.fromarray(bad).save(root / "masks" / "im4.png")
    proc = run_cli(
        ["segment", "train", *TINY, "--data", str(root), "--out", str(tmp_path / "o")]
    )
    assert_clean_error(proc, "im4.png", "7")


def test_empty_data_set(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    proc = run_cli(
        ["segment", "train", *TINY, "--data", str(root), "--out", str(tmp_path / "o")]
    )
    assert_clean_error(proc, "ds")


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli(
        [
            "--debug",
            "segment",
            "train",
            *TINY,
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_staged_training_init_from(tmp_path, capsys):
    s32, s16 = tmp_path / "s32", tmp_path / "s16"
    assert (
        main(["segment", "train", *TINY, "--model", "fcn32s", "--out", str(s32)]) == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "segment",
                "train",
                *TINY,
                "--model",
                "fcn16s",
                "--init-from",
                str(s32 / "best.pt"),
                "--out",
                str(s16),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "init-from" in printed and "score_pool4" in printed
    import torch

    a = torch.load(s32 / "best.pt", weights_only=True)
    assert a["model"]["name"] == "fcn32s"
    b = torch.load(s16 / "best.pt", weights_only=True)
    assert b["model"]["name"] == "fcn16s"


def test_init_from_an_unrelated_file(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"junk")
    proc = run_cli(
        [
            "segment",
            "train",
            *TINY,
            "--init-from",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert_clean_error(proc, "x.pt")
