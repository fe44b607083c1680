"""`convision summary MODEL`: table, JSON, every kind of MODEL, and the one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest
import torch

from convision.cli import main
from convision.engine.checkpoint import save_checkpoint
from convision.models import build_model

torch.set_num_threads(1)


def summary(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["summary", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_alexnet_table_and_json(capsys, tmp_path):
    js = tmp_path / "s" / "alexnet.json"
    code, out, err = summary(capsys, "alexnet", "--json", str(js))
    assert code == 0, err
    first = next(line for line in out.splitlines() if line.startswith("features.0 "))
    assert first.split() == [
        "features.0",
        "Conv2d",
        "64x55x55",
        "23,296",
        "70,276,800",
        "11",
        "4",
    ]
    assert "total params: 61,100,840 (trainable 61,100,840, frozen 0)" in out
    data = json.loads(js.read_text())
    assert data["model"] == "alexnet" and data["input_size"] == [3, 224, 224]
    assert (
        data["total_params"]
        == 61_100_840
        == sum(layer["params"] for layer in data["layers"])
    )
    assert data["total_mult_adds"] == sum(
        layer["mult_adds"] for layer in data["layers"]
    )
    pool5 = next(layer for layer in data["layers"] if layer["name"] == "features.12")
    assert (
        pool5["receptive_field"] == [195, 195]
        and pool5["stride"] == [32, 32]
        and pool5["output_shape"] == [256, 6, 6]
    )


def test_segmentation_model_with_backbone_classes_and_input_size(capsys, tmp_path):
    js = tmp_path / "fcn.json"
    code, out, err = summary(
        capsys,
        "fcn32s",
        "--backbone",
        "resnet18",
        "--num-classes",
        "5",
        "--input-size",
        "64x96",
        "--json",
        str(js),
    )
    assert code == 0, err
    data = json.loads(js.read_text())
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert layers["score_fr"]["stride"] == [32, 32] and layers["score_fr"][
        "output_shape"
    ] == [5, 2, 3]
    assert layers["upscore"]["output_shape"] == [5, 64, 96] and layers["upscore"][
        "stride"
    ] == [1, 1]
    assert (
        data["total_params"] > data["trainable_params"]
    )  # the fixed bilinear upsampling is frozen


def test_classifier_needs_a_backbone_and_uses_num_classes(capsys):
    code, out, err = summary(
        capsys,
        "classifier",
        "--backbone",
        "resnet18",
        "--num-classes",
        "7",
        "--input-size",
        "64",
    )
    assert code == 0, err
    head = [line for line in out.splitlines() if line.startswith("head ")]
    assert (
        head and head[0].split()[2] == "7" and head[0].split()[3] == f"{512 * 7 + 7:,}"
    )
    code, out, err = summary(capsys, "classifier")
    assert (
        code == 2
        and len(err.strip().splitlines()) == 1
        and "--backbone" in err
        and "resnet18" in err
    )


def test_torchvision_name_with_functional_global_pooling(capsys, tmp_path):
    js = tmp_path / "m.json"
    code, _, err = summary(
        capsys, "mobilenet_v2", "--input-size", "64", "--json", str(js)
    )
    assert code == 0, err
    layers = {layer["name"]: layer for layer in json.loads(js.read_text())["layers"]}
    last_map = layers["features.18.2"]
    assert last_map["output_shape"] == [1280, 2, 2] and last_map["stride"] == [32, 32]
    # F.adaptive_avg_pool2d in forward(), seen through the function mode: one more 2x2 window at stride 32
    assert (
        layers["classifier.1"]["receptive_field"][0]
        == last_map["receptive_field"][0] + 32
    )


def test_checkpoint_path_rebuilds_the_model(capsys, tmp_path):
    kwargs = {"num_classes": 3, "base_channels": 4}
    model = build_model("unet", **kwargs)
    ckpt = tmp_path / "best.pt"
    save_checkpoint(
        ckpt,
        {
            "format": 1,
            "task": "segment",
            "model": {"name": "unet", "kwargs": kwargs},
            "state_dict": model.state_dict(),
            "classes": ["a", "b", "c"],
            "colors": [[0, 0, 0]] * 3,
            "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
        },
    )
    code, out, err = summary(capsys, str(ckpt), "--input-size", "32")
    assert code == 0, err
    total = sum(p.numel() for p in model.parameters())
    assert f"total params: {total:,}" in out and "UNet" in out
    code, _, err = summary(capsys, str(tmp_path / "missing.pt"))
    assert code == 2 and "missing.pt" in err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["nosuchnet"], "accepted"),
        (["alexnet", "--input-size", "big"], "--input-size"),
        (["segnet", "--backbone", "resnet18"], "--backbone"),
        (
            ["alexnet", "--input-size", "8"],
            "--input-size",
        ),  # too small for AlexNet's pooling
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, args, needle):
    code, out, err = summary(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("convision: error:")
        and needle in lines[0]
    )
    if args[0] == "nosuchnet":
        for name in (
            "fcn8s",
            "unet",
            "classifier",
            "alexnet",
            "vgg16",
            "resnet50",
            "checkpoint",
        ):
            assert name in lines[0]
