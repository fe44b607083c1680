"""``convision TASK export`` and ONNX Runtime as a runtime: the exported graphs, their metadata, and
predictions / metrics of a ``.onnx`` equal to PyTorch's on the built-in scenes (tiny random-weight
models, 64 px; see deploy_helpers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import convision
from convision.cli import main
from convision.data.segmentation import SyntheticSegmentation
from convision.export import export_onnx
from tests.deploy_helpers import (
    classify_checkpoint,
    detect_checkpoint,
    segment_checkpoint,
)

torch.set_num_threads(1)
EVAL = ["--workers", "0", "--device", "cpu", "--no-progress"]


def scenes(count: int = 3, size: int | tuple[int, int] = 64) -> list[np.ndarray]:
    """Built-in validation scenes (3 classes) as RGB uint8 arrays of ``size`` (a side or (H, W))."""
    data = SyntheticSegmentation(
        split="val", num_images=count, image_size=size, num_classes=3, seed=1
    )
    return [data[i][0].permute(1, 2, 0).numpy() for i in range(count)]


def metadata(path: Path) -> dict:
    return {
        p.key: json.loads(p.value)
        for p in onnx.load(str(path), load_external_data=False).metadata_props
    }


@pytest.fixture
def fcn(fcn_files) -> tuple[Path, Path]:
    return fcn_files


def test_segment_export_carries_the_metadata(fcn, capsys) -> None:
    ckpt, path = fcn
    meta = metadata(path)
    net = convision.load(ckpt)
    assert (
        meta["task"] == "segment"
        and meta["classes"] == net.classes
        and meta["model"]["name"] == "fcn8s"
    )
    assert (
        meta["colors"] == [list(c) for c in net.colors]
        and meta["normalization"] == net.normalization
    )
    assert meta["input_size"] == [64, 64] and meta["dynamic"] is False
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["images"]


def test_segment_onnx_masks_and_miou_equal_pytorch(fcn, tmp_path, capsys) -> None:
    ckpt, path = fcn
    torch_net, onnx_net = convision.load(ckpt), convision.load(path)
    images = scenes(3, size=64)
    torch_masks = convision.predict(torch_net, images, device="cpu")
    onnx_masks = convision.predict(onnx_net, images, device="cpu")
    assert len({int(v) for m in torch_masks for v in np.unique(m)}) > 1, (
        "the random model must not be constant"
    )
    for a, b in zip(torch_masks, onnx_masks):
        np.testing.assert_array_equal(a, b)
    logits = convision.predict(
        torch_net, images[:1], device="cpu", return_probabilities=True
    )[0]
    onnx_logits = convision.predict(
        onnx_net, images[:1], device="cpu", return_probabilities=True
    )[0]
    assert np.abs(logits - onnx_logits).max() < 1e-4
    results = {}
    for name, model in (("torch", ckpt), ("onnx", path)):
        out = tmp_path / f"{name}.json"
        assert (
            main(
                [
                    "segment",
                    "eval",
                    "--checkpoint",
                    str(model),
                    "--json",
                    str(out),
                    *EVAL,
                ]
            )
            == 0
        )
        results[name] = json.loads(out.read_text())
    assert abs(results["torch"]["miou"] - results["onnx"]["miou"]) <= 0.005
    # predict --runtime onnx (and a .pt given to --runtime onnx: one line pointing at export)
    assert (
        main(
            [
                "segment",
                "predict",
                str(tmp_path / "torch.json"),
                "--runtime",
                "onnx",
                "--model",
                str(ckpt),
            ]
        )
        == 2
    )
    assert (
        "export it first: convision segment export --checkpoint"
        in capsys.readouterr().err
    )
    from PIL import Image

    Image.fromarray(images[0]).save(tmp_path / "scene.png")
    out = tmp_path / "pred"
    assert (
        main(
            [
                "segment",
                "predict",
                str(tmp_path / "scene.png"),
                "--runtime",
                "onnx",
                "--model",
                str(path),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    written = np.asarray(Image.open(out / "masks" / "scene.png"))
    np.testing.assert_array_equal(written, torch_masks[0])
    # the spelling: the model first, then the images
    out2 = tmp_path / "pred2"
    argv = [
        "segment",
        "predict",
        "--runtime",
        "onnx",
        str(path),
        str(tmp_path / "scene.png"),
    ]
    assert main([*argv, "--out", str(out2), "--device", "cpu", "--no-progress"]) == 0
    np.testing.assert_array_equal(
        np.asarray(Image.open(out2 / "masks" / "scene.png")), torch_masks[0]
    )
    assert main(["segment", "predict", str(tmp_path / "scene.png")]) == 2
    assert "--checkpoint: give the model" in capsys.readouterr().err


def test_dynamic_unet_takes_any_batch_and_size(tmp_path) -> None:
    ckpt = segment_checkpoint(tmp_path / "unet.pt", name="unet", base_channels=8)
    info = export_onnx(convision.load(ckpt), tmp_path / "unet.onnx", dynamic=True)
    assert info["input_size"] is None and info["max_abs_diff"] < 1e-3
    x = torch.randn(3, 3, 48, 80)
    with torch.no_grad():
        ref = convision.load(ckpt)(x)
        got = convision.load(tmp_path / "unet.onnx")(x)
    assert got.shape == ref.shape == (3, 3, 48, 80) and (got - ref).abs().max() < 1e-3


def test_int8_export_is_quantized_and_calibrated_on_training_images(
    tmp_path, capsys
) -> None:
    ckpt = segment_checkpoint(tmp_path / "unet.pt", name="unet", base_channels=8)
    assert (
        main(
            [
                "segment",
                "export",
                "--checkpoint",
                str(ckpt),
                "--quantize",
                "int8",
                "--calibration",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "% of arg-max outputs equal PyTorch's" in out
    path = tmp_path / "unet.int8.onnx"
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert metadata(path)["quantization"]["calibration_images"] == 4
    images = scenes(2, size=64)
    a = convision.predict(
        convision.load(ckpt), images, device="cpu", return_probabilities=True
    )
    b = convision.predict(
        convision.load(path), images, device="cpu", return_probabilities=True
    )
    assert all(
        np.abs(p - q).mean() < 0.1 for p, q in zip(a, b)
    )  # close, not equal: 8-bit activations


@pytest.mark.parametrize("task", ["classify", "localize"])
def test_classifier_and_localizer_onnx_equal_pytorch(task: str, tmp_path) -> None:
    ckpt = classify_checkpoint(tmp_path / "best.pt", task=task)
    info = export_onnx(
        convision.load(ckpt), tmp_path / "m.onnx", dynamic=task == "classify"
    )  # both kinds of graph
    assert info["outputs"] == (
        ["logits"] if task == "classify" else ["logits", "boxes"]
    )
    meta = metadata(tmp_path / "m.onnx")
    assert meta["task"] == task and meta["input_size"] == [64, 64]
    images = scenes(4, size=64)
    a = convision.predict(convision.load(ckpt), images, device="cpu")
    b = convision.predict(convision.load(tmp_path / "m.onnx"), images, device="cpu")
    if task == "classify":
        assert [[c for c, _ in top] for top in a] == [[c for c, _ in top] for top in b]
        assert (
            max(abs(p - q) for ta, tb in zip(a, b) for (_, p), (_, q) in zip(ta, tb))
            < 1e-4
        )
    else:
        assert [p["class"] for p in a] == [p["class"] for p in b]
        assert (
            np.abs(
                np.array([p["box"] for p in a]) - np.array([p["box"] for p in b])
            ).max()
            < 1e-2
        )  # px
    ev = convision.evaluate(
        convision.load(ckpt), device="cpu", workers=0, progress=False
    )
    ev_onnx = convision.evaluate(
        convision.load(tmp_path / "m.onnx"), device="cpu", workers=0, progress=False
    )
    assert ev["accuracy"] == ev_onnx["accuracy"]


@pytest.mark.parametrize("name", ["faster_rcnn", "fast_rcnn", "yolov1"])
def test_detectors_export_with_nms_in_the_graph(name: str, tmp_path, capsys) -> None:
    ckpt = detect_checkpoint(tmp_path / "best.pt", name)
    assert (
        main(
            [
                "detect",
                "export",
                "--checkpoint",
                str(ckpt),
                "--out",
                str(tmp_path / "det.onnx"),
            ]
        )
        == 0
    )
    assert "checked with ONNX Runtime" in capsys.readouterr().out
    graph = onnx.load(str(tmp_path / "det.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert "NonMaxSuppression" in ops and ("TopK" in ops) == (
        name == "faster_rcnn"
    )  # the RPN's pre-NMS top-k
    expected_inputs = {
        "faster_rcnn": ["image"],
        "fast_rcnn": ["image", "proposals"],
        "yolov1": ["image", "size"],
    }[name]
    assert [i.name for i in graph.graph.input] == expected_inputs
    torch_net, onnx_net = convision.load(ckpt), convision.load(tmp_path / "det.onnx")
    for image in scenes(3, size=(64, 80)):
        a = convision.predict(torch_net, image, device="cpu")[0]
        b = convision.predict(onnx_net, image, device="cpu")[0]
        assert a["labels"] and a["labels"] == b["labels"]
        assert np.abs(np.array(a["boxes"]) - np.array(b["boxes"])).max() < 1e-2
        assert np.abs(np.array(a["scores"]) - np.array(b["scores"])).max() < 1e-4
        if (
            name == "fast_rcnn"
        ):  # the numpy runtime computes the selective-search proposals itself
            from convision.export.runtime import OnnxModel

            c = OnnxModel(tmp_path / "det.onnx").predict(image)
            assert (
                c["labels"][0] == a["labels"][0]
                and abs(c["scores"][0] - a["scores"][0]) < 0.05
            )
    if name == "faster_rcnn":
        m_torch = convision.evaluate(
            torch_net, device="cpu", workers=0, progress=False, coco=False
        )
        m_onnx = convision.evaluate(
            onnx_net, device="cpu", workers=0, progress=False, coco=False
        )
        assert abs(m_torch["mAP"] - m_onnx["mAP"]) <= 0.005


def test_bad_exports_fail_with_one_line(fcn, tmp_path, capsys) -> None:
    ckpt, path = fcn
    rcnn = tmp_path / "rcnn.pt"
    from convision.tasks.detect import DetectConfig
    from tests.deploy_helpers import random_checkpoint

    random_checkpoint(
        rcnn,
        "detect",
        "rcnn",
        {"num_classes": 2, "backbone": "mobilenet_v2", "weights": None},
        DetectConfig(),
        min_size=64,
        max_size=1000,
    )
    cases = [
        (["detect", "export", "--checkpoint", str(rcnn)], "R-CNN warps every proposal"),
        (
            ["segment", "export", "--checkpoint", str(ckpt), "--format", "tflite"],
            "--format: expected onnx",
        ),
        (["detect", "export", "--checkpoint", str(ckpt)], "not a detector"),
        (
            ["segment", "export", "--checkpoint", str(ckpt), "--opset", "5"],
            "--opset: expected 11..23",
        ),
        (
            ["detect", "export", "--checkpoint", str(rcnn), "--quantize", "int8"],
            "offered for segmentation models",
        ),
        (
            ["classify", "eval", "--checkpoint", str(path)],
            "a segment model, not a classifier",
        ),
        (
            ["segment", "eval", "--checkpoint", str(path), "--runtime", "torch"],
            "is an ONNX file",
        ),
    ]
    cases.append(
        (
            ["detect", "eval", "--checkpoint", str(path), "--nms-thresh", "0.5"],
            "keeps the checkpoint's test-time",
        )
    )
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    cases.append(
        (
            ["segment", "predict", str(bogus), "--checkpoint", str(bogus)],
            "not a readable ONNX model",
        )
    )
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, (argv, err)


NO_TORCH = """
import json, sys
import numpy as np
from PIL import Image
from convision.export.runtime import OnnxModel
model = OnnxModel(sys.argv[1], threads=1)
out = [model.predict(np.asarray(Image.open(p).convert("RGB"))) for p in sys.argv[2:]]
assert "torch" not in sys.modules and "torchvision" not in sys.modules, "the runtime imported torch"
print(json.dumps({"task": model.task, "out": [o.tolist() if hasattr(o, "tolist") else o for o in out]}))
"""


def test_runtime_runs_without_torch(fcn, detector_files, tmp_path) -> None:
    from PIL import Image

    ckpt, path = fcn
    det, det_onnx = detector_files

    def saved(size: tuple[int, int]) -> list[Path]:
        files = []
        for i, image in enumerate(scenes(2, size=size)):
            files.append(tmp_path / f"{i}_{size[1]}.png")
            Image.fromarray(image).save(files[-1])
        return files

    # the segmentation graph is fixed at 64 x 64; the detector takes any size
    for model, onnx_file, files in (
        (ckpt, path, saved((64, 64))),
        (det, det_onnx, saved((64, 80))),
    ):
        run = subprocess.run(
            [sys.executable, "-c", NO_TORCH, str(onnx_file), *map(str, files)],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                "PYTHONPATH": str(Path(convision.__file__).parents[1]),
                "OMP_NUM_THREADS": "1",
            },
        )
        assert run.returncode == 0, run.stderr
        got = json.loads(run.stdout)["out"]
        want = convision.predict(
            convision.load(model), [str(f) for f in files], device="cpu"
        )
        for g, w in zip(got, want):
            if isinstance(
                w, np.ndarray
            ):  # segmentation: no resizing, the same float arithmetic
                np.testing.assert_array_equal(np.array(g, dtype=np.uint8), w)
            else:  # detection: Pillow's resize is not torchvision's, so only the best detection is compared
                assert (
                    g["labels"][0] == w["labels"][0]
                    and abs(g["scores"][0] - w["scores"][0]) < 0.05
                )
