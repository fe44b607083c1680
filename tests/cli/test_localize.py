"""`convision localize train|eval|predict` end to end on tiny data, and the bad-annotation contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convision import load
from convision.cli import main
from convision.tasks.localize import evaluate
from tests.data.test_localization import write_annotated

torch.set_num_threads(1)

TINY = [
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--no-progress",
    "--device",
    "cpu",
    "--backbone",
    "resnet18",
    "--weights",
    "none",
    "--strategy",
    "scratch",
    "--hidden",
    "16",
]


@pytest.fixture(scope="module")
def ann(tmp_path_factory) -> Path:
    return write_annotated(
        tmp_path_factory.mktemp("data") / "d", n_per_class=4, fmt="json"
    )


@pytest.fixture(scope="module")
def trained(ann, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert (
        main(
            [
                "localize",
                "train",
                *TINY,
                "--data",
                str(ann),
                "--val-fraction",
                "0.25",
                "--box-loss",
                "smooth_l1",
                "--box-weight",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_train_writes_a_localization_checkpoint(trained):
    for name in ("best.pt", "last.pt", "metrics.jsonl", "curves.png"):
        assert (trained / name).is_file(), name
    record = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert (
        record["num_images"] == 2
        and 0 <= record["accuracy"] <= record["class_accuracy"] <= 1
    )
    model = load(trained / "best.pt")
    assert (
        model.classes == ["cat", "dog"]
        and model.image_size == 32
        and model.spec["name"] == "localizer"
    )
    assert (
        model.spec["kwargs"]["hidden"] == 16
        and model.train_config["train"]["box_loss"] == "smooth_l1"
    )


def test_eval_prints_metrics_and_writes_json(trained, ann, capsys):
    js = trained / "ev.json"
    assert (
        main(
            [
                "localize",
                "eval",
                "--checkpoint",
                str(trained / "best.pt"),
                "--data",
                str(ann),
                "--workers",
                "0",
                "--no-progress",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "class right and IoU > 0.5" in printed
    metrics = json.loads(js.read_text())
    assert (
        metrics["num_images"] == 8 and 0 <= metrics["mean_iou"] <= 1
    )  # the whole file
    again = evaluate(trained / "best.pt", ann, workers=0, progress=False, device="cpu")
    assert again["accuracy"] == metrics["accuracy"] and again[
        "mean_iou"
    ] == pytest.approx(metrics["mean_iou"])


def test_eval_reads_xywh_annotations_with_box_format(trained, ann, tmp_path, capsys):
    """The training file rewritten as (x, y, w, h) evaluates the same with --box-format xywh;
    an unknown format is one line, exit 2."""
    entries = json.loads(ann.read_text())
    for e in entries:
        x1, y1, x2, y2 = e["box"]
        e["box"] = [x1, y1, x2 - x1, y2 - y1]
    xywh = ann.with_name("ann_xywh.json")
    xywh.write_text(json.dumps(entries))
    args = ["--workers", "0", "--no-progress", "--device", "cpu"]
    ckpt = str(trained / "best.pt")
    for data, fmt, js in ((ann, "xyxy", "a.json"), (xywh, "xywh", "b.json")):
        assert (
            main(
                ["localize", "eval", "--checkpoint", ckpt, "--data", str(data)]
                + ["--box-format", fmt, "--json", str(tmp_path / js), *args]
            )
            == 0
        )
    a, b = (json.loads((tmp_path / js).read_text()) for js in ("a.json", "b.json"))
    assert a["mean_iou"] == pytest.approx(b["mean_iou"]) and a["num_images"] == 8
    capsys.readouterr()
    bad = ["localize", "eval", "--checkpoint", ckpt, "--data", str(xywh)]
    assert main(bad + ["--box-format", "xy", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "box_format: unknown 'xy'" in err[0], err


def test_predict_draws_boxes_and_writes_json_in_original_pixels(
    trained, tmp_path, capsys
):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8)).save(
        tmp_path / "a.png"
    )
    Image.fromarray(rng.integers(0, 255, (70, 33), dtype=np.uint8)).save(
        tmp_path / "b.jpg"
    )  # grayscale
    out = tmp_path / "pred"
    assert (
        main(
            [
                "localize",
                "predict",
                str(tmp_path / "a.png"),
                str(tmp_path / "b.jpg"),
                "--checkpoint",
                str(trained / "best.pt"),
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "2 image(s) localized" in capsys.readouterr().out
    preds = json.loads((out / "predictions.json").read_text())
    for name, (w, h) in (("a.png", (90, 50)), ("b.jpg", (33, 70))):
        p = preds[str(tmp_path / name)]
        x1, y1, x2, y2 = p["box"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and p["class"] in ("cat", "dog")
        drawn = np.asarray(Image.open(out / (Path(name).stem + ".png")))
        assert drawn.shape == (h, w, 3)
    original = np.asarray(Image.open(tmp_path / "a.png"))
    assert (
        np.asarray(Image.open(out / "a.png")) != original
    ).any()  # something was drawn


def test_synthetic_default_data_trains(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "localize",
                "train",
                *TINY,
                "--num-train",
                "8",
                "--num-val",
                "4",
                "--scene-size",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    m = load(out / "best.pt")
    assert m.classes == ["disc", "square", "triangle", "ring", "cross"]


def test_bad_annotation_is_one_line_exit_2(tmp_path):
    ann = write_annotated(tmp_path / "d", n_per_class=2)
    lines = ann.read_text().splitlines()
    name = lines[1].split(",")[0]
    lines[2] = f"{name},cat,30,10,20,30"  # x2 < x1
    ann.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "convision",
            "localize",
            "train",
            *TINY,
            "--data",
            str(ann),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert (
        len(err) == 1
        and err[0].startswith(f"convision: error: {ann} line 3:")
        and "width/height" in err[0]
    ), r.stderr
    assert (
        main(
            [
                "localize",
                "train",
                *TINY,
                "--box-loss",
                "l2",
                "--out",
                str(tmp_path / "r2"),
            ]
        )
        == 2
    )
