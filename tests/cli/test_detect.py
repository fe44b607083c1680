"""``convision detect train|eval|predict|convert`` end to end on tiny built-in scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convision.cli import main
from tests.helpers import DETECT_TINY

TINY = DETECT_TINY


@pytest.fixture(scope="module")
def faster_run(detect_run) -> Path:
    return detect_run


def test_train_writes_checkpoints_and_a_validation_map(faster_run: Path) -> None:
    assert (faster_run / "best.pt").is_file() and (faster_run / "last.pt").is_file()
    record = json.loads((faster_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert (
        0.0 <= record["val"]["mAP"] <= 1.0
        if "val" in record
        else 0.0 <= record["mAP"] <= 1.0
    )


def test_eval_prints_voc_and_coco_and_writes_json_and_curves(
    faster_run: Path, capsys
) -> None:
    assert (
        main(
            [
                "detect",
                "eval",
                "--checkpoint",
                str(faster_run / "best.pt"),
                "--workers",
                "0",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "COCO" in printed
    metrics = json.loads((faster_run / "eval_val.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0 and 0.0 <= metrics["mAP_07"] <= 1.0
    assert set(metrics["AP"]) == {"disc", "square"}
    assert -1.0 <= metrics["coco"]["mAP"] <= 1.0 and "AP50" in metrics["coco"]
    assert (faster_run / "pr_val.png").stat().st_size > 1000


def test_predict_maps_boxes_to_original_pixels_and_writes_outputs(
    faster_run: Path, tmp_path: Path
) -> None:
    from convision import load
    from convision.tasks.detect import predict

    rng = np.random.default_rng(0)
    img = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "pred"
    assert (
        main(
            [
                "detect",
                "predict",
                str(img),
                "--checkpoint",
                str(faster_run / "best.pt"),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--score-threshold",
                "0",
            ]
        )
        == 0
    )
    preds = json.loads((out / "predictions.json").read_text())
    p = preds[str(img)]
    assert len(p["boxes"]) == len(p["labels"]) == len(p["scores"]) == len(p["classes"])
    for x1, y1, x2, y2 in p["boxes"]:
        assert -1e-3 <= x1 <= x2 <= 90 + 1e-3 and -1e-3 <= y1 <= y2 <= 50 + 1e-3
    assert Image.open(out / "wide.png").size == (90, 50)
    assert isinstance(json.loads((out / "coco_results.json").read_text()), list)
    # the Python API gives the same boxes as the CLI
    model = load(faster_run / "best.pt")
    again = predict(model, np.asarray(Image.open(img)), device="cpu")[0]
    assert np.allclose(
        np.array(again["boxes"]).reshape(-1, 4),
        np.array(p["boxes"]).reshape(-1, 4),
        atol=1e-3,
    )


def test_convert_round_trip_from_the_built_in_scenes(tmp_path: Path) -> None:
    voc, coco = tmp_path / "voc", tmp_path / "scenes.json"
    assert (
        main(
            [
                "detect",
                "convert",
                "synthetic",
                str(voc),
                "--to",
                "voc",
                "--num-images",
                "5",
                "--scene-size",
                "48",
            ]
        )
        == 0
    )
    assert len(list((voc / "Annotations").glob("*.xml"))) == 5
    assert (
        main(
            [
                "detect",
                "convert",
                str(voc),
                str(coco),
                "--to",
                "coco",
                "--split",
                "train",
            ]
        )
        == 0
    )
    data = json.loads(coco.read_text())
    assert len(data["images"]) == 5 and data["annotations"]


def test_bad_inputs_fail_with_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert (
        main(["detect", "train", *TINY, "--model", "ssd", "--out", str(tmp_path / "x")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ssd" in err[0]
    assert (
        main(
            [
                "detect",
                "train",
                *TINY,
                "--anchor-sizes",
                "16,abc",
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )
    assert "anchor_sizes" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert (
        main(
            [
                "detect",
                "train",
                *TINY,
                "--data",
                str(broken),
                "--out",
                str(tmp_path / "z"),
            ]
        )
        == 2
    )
    assert "broken.json" in capsys.readouterr().err
    assert (
        main(["detect", "convert", "synthetic", str(tmp_path / "c"), "--to", "pascal"])
        == 2
    )
    assert main(["detect", "eval", "--checkpoint", str(tmp_path / "missing.pt")]) == 2


def test_a_segmentation_checkpoint_is_refused(tmp_path: Path, capsys) -> None:
    from convision.engine.checkpoint import FORMAT, save_checkpoint

    ckpt = tmp_path / "seg.pt"
    from convision.models import build_model

    net = build_model("fcn32s", num_classes=3, backbone="mobilenet_v2", weights=None)
    save_checkpoint(
        ckpt,
        {
            "format": FORMAT,
            "task": "segment",
            "model": {
                "name": "fcn32s",
                "kwargs": {"num_classes": 3, "backbone": "mobilenet_v2"},
            },
            "state_dict": net.state_dict(),
            "classes": ["a", "b", "c"],
            "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]},
        },
    )
    assert main(["detect", "eval", "--checkpoint", str(ckpt)]) == 2
    assert "not a detector" in capsys.readouterr().err
    assert torch.load(ckpt, weights_only=True)["task"] == "segment"


@pytest.mark.parametrize(
    "model,extra",
    [
        ("fast_rcnn", ["--max-proposals", "300"]),
        ("yolov1", ["--image-size", "64"]),
        ("rcnn", ["--warp-size", "32", "--max-proposals", "200"]),
    ],
)
def test_every_detector_trains_evaluates_and_predicts(
    model: str, extra: list[str], tmp_path: Path
) -> None:
    from convision import load
    from convision.tasks.detect import predict

    out = tmp_path / model
    assert (
        main(["detect", "train", *TINY, "--model", model, *extra, "--out", str(out)])
        == 0
    )
    assert (
        main(
            [
                "detect",
                "eval",
                "--checkpoint",
                str(out / "best.pt"),
                "--workers",
                "0",
                "--device",
                "cpu",
                "--no-progress",
                "--no-coco",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "eval_val.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0
    net = load(out / "best.pt")
    image = np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    p = predict(net, image, device="cpu")[0]
    assert all(0 <= c < 2 for c in p["labels"]) and p["scores"] == sorted(
        p["scores"], reverse=True
    )
    if model in ("fast_rcnn", "rcnn"):
        assert any((out / "proposals").iterdir()), (
            "selective-search proposals are cached under <out>/proposals"
        )


@pytest.mark.parametrize("name", ["faster_rcnn", "fast_rcnn", "yolov1"])
def test_a_pretrained_detector_rebuilds_from_its_checkpoint_arguments(
    name: str,
) -> None:
    """load() rebuilds with weights=None: the modules (frozen, folded batch norms ...) must not change."""
    from convision.models import build_model
    from convision.tasks.detect import DetectConfig, model_kwargs

    cfg = DetectConfig()
    cfg.model.model, cfg.model.weights = name, "IMAGENET1K_V1"
    kwargs = model_kwargs(cfg, 3, 128)
    pretrained = build_model(name, **kwargs)
    rebuilt = build_model(name, **{**kwargs, "weights": None})
    rebuilt.load_state_dict(
        pretrained.state_dict()
    )  # raises on any missing / unexpected / mis-shaped tensor
    x = [torch.rand(3, 96, 112)]
    pretrained.eval(), rebuilt.eval()
    extra = (
        {
            "proposals": [
                torch.tensor([[4.0, 6.0, 60.0, 70.0], [30.0, 20.0, 100.0, 90.0]])
            ]
        }
        if name == "fast_rcnn"
        else {}
    )
    with torch.no_grad():
        a, b = pretrained(x, **extra)[0], rebuilt(x, **extra)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory) -> tuple[Path, Path]:
    """A VOC folder with train / val / test splits (built-in scenes) and a 1-epoch Faster R-CNN on it."""
    root = tmp_path_factory.mktemp("voc")
    voc = root / "voc"
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        assert (
            main(
                [
                    "detect",
                    "convert",
                    "synthetic",
                    str(voc),
                    "--to",
                    "voc",
                    "--split",
                    split,
                    "--num-images",
                    str(n),
                    "--scene-size",
                    "64",
                    "--num-classes",
                    "3",
                ]
            )
            == 0
        )
    out = root / "run"
    args = [
        a
        for a in TINY
        if a
        not in (
            "--num-train",
            "6",
            "--num-val",
            "4",
            "--scene-size",
            "64",
            "--num-classes",
            "3",
        )
    ]
    assert (
        main(
            [
                "detect",
                "train",
                *args,
                "--data",
                str(voc),
                "--min-size",
                "64",
                "--anchor-sizes",
                "auto",
                "--roi-batch-size",
                "64",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return voc, out


def test_auto_anchors_come_from_the_training_boxes(voc_run: tuple[Path, Path]) -> None:
    from convision.data.detection import build_detection_dataset
    from convision.engine.checkpoint import load_checkpoint
    from convision.tasks.detect import box_sides_at, suggest_anchor_sizes

    voc, out = voc_run
    sides = box_sides_at(build_detection_dataset(str(voc), "train"), 64, 1000)
    chosen = load_checkpoint(out / "best.pt")["model"]["kwargs"]["anchor_sizes"]
    assert chosen == suggest_anchor_sizes(sides) and len(sides) > 0


def test_suggested_anchors_cover_the_box_sizes_by_octaves() -> None:
    from convision.tasks.detect import suggest_anchor_sizes

    sides = np.random.default_rng(0).uniform(16, 70, 500)
    anchors = suggest_anchor_sizes(sides)
    assert anchors[0] == round(np.percentile(sides, 5)) and all(
        b == 2 * a for a, b in zip(anchors, anchors[1:])
    )
    lo, hi = np.percentile(sides, [5, 95])
    for s in sides[
        (sides >= lo) & (sides <= hi)
    ]:  # every box within a factor sqrt(2) of an anchor: IoU >= 0.5
        assert min(max(s / a, a / s) for a in anchors) <= np.sqrt(2) + 0.05
    assert suggest_anchor_sizes(np.full(10, 300.0)) == [300]


def test_eval_on_the_test_split_with_test_time_settings(
    voc_run: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    voc, out = voc_run
    ckpt = str(out / "best.pt")
    base = ["--checkpoint", ckpt, "--workers", "0", "--device", "cpu", "--no-progress"]
    assert main(["detect", "eval", *base, "--split", "test"]) == 0
    metrics = json.loads((out / "eval_test.json").read_text())
    assert metrics["split"] == "test" and 0.0 <= metrics["mAP"] <= 1.0
    assert main(["detect", "eval", *base, "--split", "holdout"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holdout" in err[0]
    pred = tmp_path / "pred"
    images = sorted((voc / "JPEGImages").iterdir())[:3]
    assert (
        main(
            [
                "detect",
                "predict",
                *map(str, images),
                "--checkpoint",
                ckpt,
                "--out",
                str(pred),
                "--device",
                "cpu",
                "--score-thresh",
                "0",
                "--detections-per-image",
                "1",
                "--nms-thresh",
                "0.5",
            ]
        )
        == 0
    )
    preds = json.loads((pred / "predictions.json").read_text())
    assert len(preds) == 3 and all(len(p["boxes"]) <= 1 for p in preds.values())
    predict = [
        "detect",
        "predict",
        str(images[0]),
        "--checkpoint",
        ckpt,
        "--out",
        str(pred),
    ]
    for flag, value in (("--nms-thresh", "1.5"), ("--tile", "8")):
        assert main([*predict, flag, value]) == 2


def test_bad_detector_settings_fail_with_one_line(tmp_path: Path, capsys) -> None:
    for flag, value in (
        ("--freeze", "most"),
        ("--freeze-bn", "maybe"),
        ("--nms-thresh", "2"),
        ("--rpn-post-nms-test", "0"),
    ):
        assert (
            main(["detect", "train", *TINY, flag, value, "--out", str(tmp_path / "x")])
            == 2
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag.lstrip("-").replace("-", "_") in err[0]
