"""``convision detect train|eval|predict|export --model mask_rcnn`` on tiny built-in scenes, and the
bad instance data the CLI turns into one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convision.cli import main
from convision.data.instance_masks import decode_rles
from tests.helpers import DETECT_TINY, one_error_line


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mask") / "run"
    args = ["detect", "train", *DETECT_TINY, "--model", "mask_rcnn", "--mask-dim", "16"]
    fewer = ["--num-train", "4", "--num-val", "2", "--rpn-post-nms-test", "50"]
    assert main([*args, *fewer, "--out", str(out)]) == 0
    return out


def test_train_eval_predict_and_load(mask_run: Path, tmp_path: Path, capsys) -> None:
    import convision
    from convision.models.detection.mask_rcnn import MaskRCNN

    ckpt = mask_run / "best.pt"
    assert isinstance(convision.load(ckpt), MaskRCNN)
    assert main(["detect", "eval", "--checkpoint", str(ckpt), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "COCO mask (pycocotools) mAP" in printed and "mask AP per class" in printed
    metrics = json.loads((mask_run / "eval_val.json").read_text())
    for key in ("coco", "coco_mask"):
        assert 0.0 <= metrics[key]["mAP"] <= 1.0 and "AP50" in metrics[key]
    assert set(metrics["coco_mask"]["AP_per_class"]) == {"disc", "square"}

    from convision.data.synthetic import make_scene

    image = tmp_path / "scene.png"
    Image.fromarray(make_scene(3, image_size=(48, 72), num_classes=3).image).save(image)
    out = tmp_path / "pred"
    assert (
        main(
            [
                "detect",
                "predict",
                str(image),
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out),
                "--score-threshold",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((out / "coco_results.json").read_text())
    assert results and all("segmentation" in r for r in results)
    m = decode_rles(results[0]["segmentation"])
    assert m.shape == (48, 72)  # the original image's pixels
    assert np.asarray(Image.open(out / "scene.png")).shape == (48, 72, 3)

    capsys.readouterr()
    assert main(["detect", "export", "--checkpoint", str(ckpt)]) == 2
    assert "mask_rcnn cannot be exported to ONNX" in one_error_line(capsys)


def _coco(tmp_path: Path, segmentation) -> Path:
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [2, 2, 10, 10],
                "segmentation": segmentation,
            }
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "segmentation, message",
    [
        (
            [[2, 2, 90, 2, 90, 12, 2, 12]],
            "polygon point (90, 2) is outside the 40x30 image",
        ),
        ([[2, 2, 12, 2, 22, 2]], "covers no pixel (empty mask)"),
    ],
)
def test_bad_instance_data_is_one_line_and_exit_2(
    tmp_path: Path, capsys, segmentation, message
) -> None:
    path = _coco(tmp_path, segmentation)
    code = main(
        [
            "detect",
            "train",
            "--model",
            "mask_rcnn",
            "--data",
            str(path),
            "--val-data",
            str(path),
            "--weights",
            "none",
            "--workers",
            "0",
            "--no-progress",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    line = one_error_line(capsys)
    assert message in line and "ann.json annotation 0" in line


def test_an_instance_id_without_a_class_is_one_line_and_exit_2(tmp_path: Path, capsys):
    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "instances").mkdir()
    ids = np.zeros((30, 40), np.uint8)
    ids[2:8, 3:9], ids[10:18, 12:28] = 1, 2
    for stem in ("a", "b"):
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(
            root / "images" / f"{stem}.png"
        )
        Image.fromarray(ids).save(root / "instances" / f"{stem}.png")
        (root / "instances" / f"{stem}.json").write_text(json.dumps({"1": "cat"}))
    args = [
        "detect",
        "train",
        "--model",
        "mask_rcnn",
        "--data",
        str(root),
        "--weights",
        "none",
    ]
    assert main([*args, "--no-progress", "--out", str(tmp_path / "run")]) == 2
    assert "instance id 2 has no class in a.json" in one_error_line(capsys)
