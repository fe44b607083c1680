"""``convision inspect`` end to end: the files it writes for torchvision and convision models and
checkpoints, and bad input as one line with exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convision.cli import main
from tests.helpers import one_error_line


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect_images")
    rng = np.random.default_rng(0)
    for k in range(3):
        array = rng.integers(0, 255, (70 + 10 * k, 90, 3), dtype=np.uint8)
        Image.fromarray(array).save(root / f"im{k}.png")
    return root


def _inspect(model, image, out, *extra):
    return main(
        ["inspect", model, "--image", str(image), "--out", str(out), "--size", "96"]
        + ["--max-layers", "2", "--projections", "1", "--top-k", "2", *extra]
    )


def test_alexnet_writes_every_picture(images, tmp_path, capsys):
    out = tmp_path / "alexnet"
    assert _inspect("alexnet", images / "im0.png", out, "--patches", str(images)) == 0
    report = json.loads((out / "inspect.json").read_text())
    assert report["layer"] == "features.10"  # conv5, the last of the feature extractor
    assert report["projection"] == "deconvnet"  # a plain stack: the explicit deconvnet
    channel = report["channel"]
    expected = {
        "filters_features_0.png",
        "maps/00_features_0.png",
        "maps/01_features_10.png",
        "projection_features_10.png",
        f"patches_features_10_ch{channel}.png",
    }
    assert set(report["files"]) == expected
    for name in expected:
        assert (out / name).stat().st_size > 1000, name
    assert len(report["patches"]) == 3  # one per image of the folder
    activations = [p["activation"] for p in report["patches"]]
    assert activations == sorted(activations, reverse=True)
    assert "projection_features_10.png" in capsys.readouterr().out


def test_resnet_layer_and_segmentation_checkpoint(images, segment_run, tmp_path):
    out = tmp_path / "resnet"
    assert (
        _inspect("resnet18", images / "im1.png", out, "--layer", "layer2.0.conv1") == 0
    )
    report = json.loads((out / "inspect.json").read_text())
    assert (
        report["projection"] == "deconvnet rule" and report["layer"] == "layer2.0.conv1"
    )
    out = tmp_path / "fcn"
    assert _inspect(str(segment_run / "best.pt"), images / "im2.png", out) == 0
    assert (out / "inspect.json").is_file()


def test_detection_checkpoint_inspects_its_trunk(images, detect_run, tmp_path):
    out = tmp_path / "detector"
    assert _inspect(str(detect_run / "best.pt"), images / "im0.png", out) == 0
    report = json.loads((out / "inspect.json").read_text())
    assert (
        out / report["files"][-1]
    ).is_file()  # the projection of the body's last conv


def test_bad_input_is_one_line(images, tmp_path, capsys):
    assert (
        _inspect("alexnet", images / "im0.png", tmp_path / "o", "--layer", "nope") == 2
    )
    line = one_error_line(capsys)
    assert "--layer" in line and "nope" in line and "features.0" in line
    assert _inspect("alexnet", tmp_path / "missing.png", tmp_path / "o") == 2
    assert "missing.png" in one_error_line(capsys)
    assert _inspect("no_such_net", images / "im0.png", tmp_path / "o") == 2
    assert "no_such_net" in one_error_line(capsys)
    assert (
        _inspect("alexnet", images / "im0.png", tmp_path / "o", "--channel", "999") == 2
    )
    assert "--channel" in one_error_line(capsys)
    assert (
        _inspect("alexnet", images / "im0.png", tmp_path / "o", "--weights", "NOPE")
        == 2
    )
    assert "NOPE" in one_error_line(capsys)
