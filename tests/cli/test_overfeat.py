"""`convision classify heatmap --scales/--localizer/--json`: OverFeat detection end to end from
checkpoints, its outputs, and the bad-input contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convision
from convision.cli import main
from convision.engine.checkpoint import FORMAT, save_checkpoint
from convision.models import build_model
from convision.tasks import base
from convision.tasks.classify import ClassifyConfig
from convision.tasks.localize import LocalizeConfig
from convision.tasks.overfeat import overfeat

torch.set_num_threads(1)
CLASSES = ["disc", "square", "triangle"]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def write_checkpoint(path: Path, task: str, name: str, cfg, **kwargs) -> Path:
    """A checkpoint as training writes it (the engine's format, meta and weights), untrained."""
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    cfg.data.image_size = 64
    meta = base.checkpoint_meta(
        task, name, kwargs, CLASSES, cfg, mean=MEAN, std=STD, image_size=64
    )
    save_checkpoint(path, {**meta, "format": FORMAT, "state_dict": model.state_dict()})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("overfeat")
    common = {"num_classes": 3, "weights": None, "strategy": "scratch"}
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / "scene.png")
    return {
        "classifier": write_checkpoint(
            root / "cls.pt",
            "classify",
            "classifier",
            ClassifyConfig(),
            arch="alexnet",
            **common,
        ),
        "localizer": write_checkpoint(
            root / "loc.pt",
            "localize",
            "localizer",
            LocalizeConfig(),
            arch="resnet18",
            hidden=8,
            box_input="spatial",
            **common,
        ),
        "image": root / "scene.png",
    }


def test_cli_writes_detections_json_and_picture(files, tmp_path, capsys):
    js, png = tmp_path / "det.json", tmp_path / "overfeat.png"
    args = ["classify", "heatmap", str(files["image"]), "--checkpoint"]
    args += [str(files["classifier"]), "--localizer", str(files["localizer"])]
    args += ["--scales", "1.0,1.5", "--min-prob", "0", "--max-detections", "100"]
    args += ["--box-format", "xywh", "--json", str(js), "--out", str(png)]
    assert main([*args, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "scales 1: 2x3 cells" in printed and "1.5: 3x5 cells" in printed
    r = json.loads(js.read_text())
    assert r["box_format"] == "xywh" and r["localizer"] is True
    cands, dets = r["candidates"], r["detections"]
    assert len(cands) == 2 * 3 + 3 * 5  # min-prob 0: every window of the top class
    assert any(c["box"] != c["window"] for c in cands)  # boxes come from the regressor
    # every window ends up in exactly one merged box, whose score sums their probabilities
    assert sum(d["windows"] for d in dets) == len(cands)
    assert sum(d["score"] for d in dets) == pytest.approx(
        sum(c["probability"] for c in cands)
    )
    for d in dets:
        x, y, w, h = d["box"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 96
    assert Image.open(png).size[0] > 600  # three panels


def test_python_entry_point_without_localizer_merges_windows(files):
    model = convision.load(files["classifier"])
    r = overfeat(
        model,
        files["image"],
        scales=[1.0],
        min_prob=0.0,
        merge_threshold=1e9,
        device="cpu",
    )
    assert len(r["detections"]) == 1 and r["detections"][0]["windows"] == 6
    # one merged box = the mean of the six 64x64 windows at stride 32 on a 128x96 image
    assert r["detections"][0]["box"] == pytest.approx([32.0, 16.0, 96.0, 80.0])
    # the no-object class is never reported, even when it is the most probable one
    found = r["detections"][0]["class"]
    r = overfeat(
        model,
        files["image"],
        scales=[1.0],
        min_prob=0.0,
        top_classes=3,
        background=found,
        device="cpu",
    )
    assert r["candidates"] and found not in {c["class"] for c in r["candidates"]}


def test_regress_crops_is_the_localizer_on_each_window(files):
    model, loc = convision.load(files["classifier"]), convision.load(files["localizer"])
    r = overfeat(
        model,
        files["image"],
        localizer=loc,
        regress="crops",
        min_prob=0.0,
        device="cpu",
    )
    image = torch.from_numpy(np.array(Image.open(files["image"]))).permute(2, 0, 1)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    x = (image.float() / 255 - mean) / std
    for c in r["candidates"][:3]:
        x1, y1, x2, y2 = (int(v) for v in c["window"])  # 64x64: the localizer's size
        with torch.no_grad():
            box = loc(x[None, :, y1:y2, x1:x2])["boxes"][0].double() * 64
        assert torch.allclose(
            torch.tensor(c["box"]).double(),
            box + torch.tensor([x1, y1, x1, y1]),
            atol=1e-3,
        )


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--scales", "1.0,-1"], "scales: every scale must be positive"),
        (["--scales", "1.0,0"], "scales: every scale must be positive"),
        (["--scales", "1,big"], "scales: 'big' is not a number"),
        (["--scales", "0.5"], "smaller than the 64x64 window"),
        (["--json", "x.json", "--box-format", "xy"], "box_format: unknown 'xy'"),
    ],
)
def test_bad_input_is_one_line_exit_2(files, tmp_path, capsys, extra, words):
    args = ["classify", "heatmap", str(files["image"]), "--checkpoint"]
    args += [str(files["classifier"]), "--out", str(tmp_path / "o.png"), *extra]
    assert main([*args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
