"""`convision classify train|eval|predict|heatmap` end to end on tiny data, and the bad-input contract."""

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
from convision.models.classification import build_classifier
from convision.tasks.classify import heatmap
from tests.data.test_classification import write_folder, write_idx_folder

torch.set_num_threads(1)

TINY = [
    "--image-size",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--no-progress",
    "--device",
    "cpu",
]


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "convision", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(
        tmp_path_factory.mktemp("data") / "d", per_class=5, size=(32, 32)
    )


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert (
        main(
            [
                "classify",
                "train",
                *TINY,
                "--data",
                str(folder),
                "--backbone",
                "resnet18",
                "--weights",
                "none",
                "--strategy",
                "scratch",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_train_writes_a_classification_run(trained):
    for name in ("best.pt", "last.pt", "metrics.jsonl", "curves.png"):
        assert (trained / name).is_file(), name
    record = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= record["accuracy"] <= 1.0 and "top5" not in record
    model = load(trained / "best.pt")
    assert (
        model.classes == ["cat", "dog", "fox", "owl"]
        and model.image_size == 32
        and model.arch == "resnet18"
    )


def test_eval_table_json_and_pictures(trained, capsys):
    out = trained / "ev"
    assert (
        main(
            [
                "classify",
                "eval",
                "--checkpoint",
                str(trained / "best.pt"),
                "--workers",
                "0",
                "--no-progress",
                "--split",
                "train",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "precision" in printed and "owl" in printed and "accuracy" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["num_images"] == 16
        and np.asarray(metrics["confusion_matrix"]).sum() == 16
    )
    for name in ("confusion_matrix.png", "misclassified.png"):
        assert Image.open(out / name).size[0] > 100


def test_predict_prints_topk_for_rgb_and_gray(trained, tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(
        tmp_path / "a.png"
    )
    Image.fromarray(rng.integers(0, 255, (33, 41), dtype=np.uint8)).save(
        tmp_path / "b.jpg"
    )  # grayscale
    js = tmp_path / "p.json"
    assert (
        main(
            [
                "classify",
                "predict",
                str(tmp_path / "a.png"),
                str(tmp_path / "b.jpg"),
                "--checkpoint",
                str(trained / "best.pt"),
                "--topk",
                "2",
                "--device",
                "cpu",
                "--json",
                str(js),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith(str(tmp_path / "b.jpg"))
    result = json.loads(js.read_text())
    top = result[str(tmp_path / "a.png")]
    assert (
        len(top) == 2
        and top[0][1] >= top[1][1]
        and top[0][0] in ("cat", "dog", "fox", "owl")
    )


def test_feature_extract_on_idx_with_fraction(tmp_path):
    root = write_idx_folder(tmp_path / "fm", n_train=40, n_val=10)
    out = tmp_path / "run"
    assert (
        main(
            [
                "classify",
                "train",
                *TINY,
                "--data",
                str(root),
                "--fraction",
                "0.5",
                "--strategy",
                "feature-extract",
                "--backbone",
                "mobilenet_v2",
                "--weights",
                "IMAGENET1K_V1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    run = json.loads((out / "run.json").read_text())
    assert run["feature_cache"] is True and run["head_lr_mult"] == 10
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "top5" in record  # 10 classes
    ckpt = torch.load(out / "best.pt", weights_only=True)
    ref = build_classifier("mobilenet_v2", 10, weights="IMAGENET1K_V1").state_dict()
    assert torch.equal(
        ckpt["state_dict"]["net.features.0.0.weight"], ref["net.features.0.0.weight"]
    )  # frozen


def test_heatmap_alexnet(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("alexnet", 3).eval()
    model.task, model.classes, model.image_size = "classify", ["a", "b", "c"], 64
    model.normalization = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    image = np.random.default_rng(0).integers(0, 255, (128, 160, 3), dtype=np.uint8)
    r = heatmap(model, image, class_name="b", out_png=tmp_path / "h.png", device="cpu")
    assert r["map"].shape == (3, 4) and r["class"] == "b"
    i, j = r["cell"]
    assert r["box"] == (32.0 * j, 32.0 * i, 32.0 * j + 64, 32.0 * i + 64)
    assert r["probability"] == pytest.approx(float(r["map"].max()))
    assert Image.open(tmp_path / "h.png").size[0] > 100


def test_bad_inputs_exit_2_with_one_line(trained, folder, tmp_path):
    cases = [
        (
            [
                "classify",
                "train",
                *TINY,
                "--data",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "o"),
            ],
            "nope",
        ),
        (
            [
                "classify",
                "heatmap",
                str(folder / "cat" / "0.png"),
                "--checkpoint",
                str(trained / "best.pt"),
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "h.png"),
                "--scale",
                "0.5",
            ],
            "window is 32x32",
        ),
        (
            ["classify", "train", "--strategy", "freeze", "--out", str(tmp_path / "o")],
            "strategy",
        ),
    ]
    (tmp_path / "empty_cls" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
        tmp_path / "empty_cls" / "a" / "x.png"
    )
    (tmp_path / "empty_cls" / "b").mkdir()
    cases.append(
        (
            [
                "classify",
                "train",
                *TINY,
                "--data",
                str(tmp_path / "empty_cls"),
                "--out",
                str(tmp_path / "o"),
            ],
            "class folder holds no images",
        )
    )
    (tmp_path / "l.csv").write_text(
        f"{folder}/cat/0.png,cat\n{tmp_path}/ghost.png,dog\n"
    )
    cases.append(
        (
            [
                "classify",
                "train",
                *TINY,
                "--data",
                str(tmp_path / "l.csv"),
                "--out",
                str(tmp_path / "o"),
            ],
            "l.csv line 2",
        )
    )
    for args, needle in cases:
        proc = run_cli(args) if args is cases[0][0] else None
        if (
            proc is not None
        ):  # one real subprocess: exit code and stderr exactly as a user sees them
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and needle in lines[0], proc.stderr
            continue
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(args)
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], err.getvalue()
