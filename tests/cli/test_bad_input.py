"""The bad-input list of issue 11: every item gives one clear line naming what is wrong and where,
exit code 2 from the CLI, no traceback (the numbers follow the issue)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convision.cli
from convision.cli import build_parser, main
from convision.engine.checkpoint import save_checkpoint
from convision.errors import CheckpointError
from convision.tasks.base import WHAT
from tests.helpers import SEGMENT_TINY, one_error_line, run_cli

TASKS = ("segment", "classify", "localize", "detect")


def _png(path: Path, size: tuple[int, int] = (40, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    ).save(path)
    return path


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return path


# 1 ------------------------------------------------------------------------------------------------


def test_1_out_naming_a_file_is_one_line(tmp_path, segment_run, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert main(["segment", "train", *SEGMENT_TINY, "--out", str(a_file)]) == 2
    assert f"out: {a_file} is a file, not a folder" in one_error_line(capsys)
    assert (
        main(["segment", "train", *SEGMENT_TINY, "--out", str(a_file / "below")]) == 2
    )
    assert "is a file, not a folder" in one_error_line(capsys)
    image = _png(tmp_path / "in" / "a.png")
    assert (
        main(
            [
                "segment",
                "predict",
                str(image),
                "--checkpoint",
                str(segment_run / "best.pt"),
                "--out",
                str(a_file),
            ]
        )
        == 2
    )
    assert "is a file, not a folder" in one_error_line(capsys)
    assert (
        main(
            [
                "detect",
                "convert",
                "synthetic",
                str(a_file),
                "--to",
                "voc",
                "--num-images",
                "2",
            ]
        )
        == 2
    )
    assert f"dst: {a_file} is a file" in one_error_line(capsys)
    assert (
        main(
            [
                "detect",
                "convert",
                "synthetic",
                str(tmp_path),
                "--to",
                "coco",
                "--num-images",
                "2",
            ]
        )
        == 0
    )
    (tmp_path / "x.json").mkdir()
    assert (
        main(
            [
                "detect",
                "convert",
                "synthetic",
                str(tmp_path / "x.json"),
                "--to",
                "coco",
                "--num-images",
                "2",
            ]
        )
        == 2
    )
    assert "is a folder, not a .json file" in one_error_line(capsys)


def test_1_out_naming_a_file_for_classify_and_detect_train(tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert (
        main(
            [
                "classify",
                "train",
                "--num-train",
                "8",
                "--num-val",
                "4",
                "--scene-size",
                "32",
                "--image-size",
                "32",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--backbone",
                "resnet18",
                "--weights",
                "none",
                "--strategy",
                "scratch",
                "--workers",
                "0",
                "--no-progress",
                "--out",
                str(a_file),
            ]
        )
        == 2
    )
    assert "is a file, not a folder" in one_error_line(capsys)
    assert (
        main(
            [
                "detect",
                "train",
                "--model",
                "rcnn",
                "--num-train",
                "2",
                "--weights",
                "none",
                "--out",
                str(a_file),
            ]
        )
        == 2
    )
    assert "is a file, not a folder" in one_error_line(capsys)


# 2 (settings out of range: tests/test_config.py) ----------------------------------------------------


def test_2_eval_counts_are_checked(segment_run, capsys):
    assert (
        main(
            [
                "segment",
                "eval",
                "--checkpoint",
                str(segment_run / "best.pt"),
                "--workers",
                "-1",
            ]
        )
        == 2
    )
    line = one_error_line(capsys)
    assert "--workers" in line and "must be >= 0, got -1" in line


# 3 ------------------------------------------------------------------------------------------------


def test_3_eval_json_naming_a_folder(tmp_path, segment_run, capsys):
    assert (
        main(
            [
                "segment",
                "eval",
                "--checkpoint",
                str(segment_run / "best.pt"),
                "--workers",
                "0",
                "--no-progress",
                "--json",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"convision: error: --json: {tmp_path} is a folder; give a file name"
    ]


# 4 ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint file per task; the task is read before anything is built."""
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for task in TASKS:
        out[task] = root / f"{task}.pt"
        save_checkpoint(
            out[task],
            {
                "format": 1,
                "task": task,
                "model": {"name": "none", "kwargs": {}},
                "state_dict": {},
                "classes": ["a", "b"],
                "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
            },
        )
    return out


@pytest.mark.parametrize("task", TASKS)
def test_4_every_task_refuses_the_checkpoints_of_the_others(
    task, checkpoints, tmp_path, capsys
):
    image = _png(tmp_path / "a.png")
    for other in TASKS:
        if other == task:
            continue
        assert (
            main(
                [
                    task,
                    "eval",
                    "--checkpoint",
                    str(checkpoints[other]),
                    "--workers",
                    "0",
                ]
            )
            == 2
        )
        assert one_error_line(capsys).endswith(
            f"{checkpoints[other]}: a {other} checkpoint, not {WHAT[task]}"
        )
        out = tmp_path / f"pred_{other}"
        args = ["--out", str(out)] if task != "classify" else []
        assert (
            main(
                [
                    task,
                    "predict",
                    str(image),
                    "--checkpoint",
                    str(checkpoints[other]),
                    *args,
                ]
            )
            == 2
        )
        assert f"a {other} checkpoint, not {WHAT[task]}" in one_error_line(capsys)
        assert not out.exists()  # no empty output folder left behind


# 5 ------------------------------------------------------------------------------------------------


def test_5_a_last_batch_of_one_image_is_dropped(tmp_path):
    """ResNet-18 at 32 px ends in 1x1 maps, where batch norm needs more than one image per batch."""
    out = tmp_path / "run"
    assert (
        main(
            [
                "classify",
                "train",
                "--num-train",
                "5",
                "--num-val",
                "2",
                "--scene-size",
                "32",
                "--image-size",
                "32",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--backbone",
                "resnet18",
                "--weights",
                "none",
                "--strategy",
                "scratch",
                "--workers",
                "0",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and np.isfinite(record["train_loss"])


# 6 ------------------------------------------------------------------------------------------------


def test_6_detect_predict_on_a_sliver_of_an_image(tmp_path, detect_run, capsys):
    sliver = _png(tmp_path / "sliver.png", size=(2000, 3))
    assert (
        main(
            [
                "detect",
                "predict",
                str(sliver),
                "--checkpoint",
                str(detect_run / "best.pt"),
                "--out",
                str(tmp_path / "p"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    line = one_error_line(capsys)
    assert "sliver.png: image is 2000x3 px" in line and "below the 32 px" in line


# 7 ------------------------------------------------------------------------------------------------


def test_7_a_failed_checkpoint_write_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})

    def disk_full(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 32\nmore"
        )

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(path, {"epoch": 2})
    assert str(e.value) == (
        f"{path}: could not write the checkpoint ([enforce fail at inline_container.cc:672] . "
        "unexpected pos 64 vs 32); the previous last.pt is intact"
    )
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert not (tmp_path / "last.pt.tmp").exists()


# 8 ------------------------------------------------------------------------------------------------


def test_8_a_voc_class_without_its_list_is_warned(tmp_path):
    from convision.data.detection_formats import convert, read_voc

    voc = convert(
        "synthetic", tmp_path / "voc", "voc", num_images=3, image_size=48, num_classes=3
    )
    listed = sorted((voc / "ImageSets" / "Main").glob("*_train.txt"))
    listed[0].unlink()  # one class loses its per-class list
    with pytest.warns(
        UserWarning,
        match=r"class '.*' \(1 class\(es\) in all\) is in Annotations/ but has no ImageSets",
    ):
        read_voc(voc, "train")


def test_8_a_stray_mask_value_without_classes_txt_is_warned(tmp_path):
    from convision.data.segmentation import SegmentationFolder

    for i in range(3):
        _png(tmp_path / "images" / f"{i}.png", size=(8, 8))
        mask = np.zeros((8, 8), np.uint8)
        mask[:2, :2] = 1
        if i == 2:
            mask[7, 7] = 7  # one stray pixel
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png") if (
            tmp_path / "masks"
        ).is_dir() else (
            (tmp_path / "masks").mkdir(),
            Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png"),
        )
    with pytest.warns(
        UserWarning,
        match=r"classes are the mask values 0\.\.7 \(8 classes\), but 5 of them never occur "
        r"\(first: 2; value 7 first in .*2\.png\)",
    ):
        ds = SegmentationFolder(tmp_path, split="train")
    assert len(ds.classes) == 8
    (tmp_path / "classes.txt").write_text("".join(f"c{k}\n" for k in range(8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SegmentationFolder(tmp_path, split="train")


# 9 (duplicate YAML keys: tests/test_config.py) ------------------------------------------------------
# 10 -----------------------------------------------------------------------------------------------


def test_10_a_csv_header_row_is_recognised(tmp_path):
    from convision.data.classification import CSVClassification
    from convision.data.localization import AnnotatedLocalization

    for i in range(2):
        _png(tmp_path / f"{i}.png")
    (tmp_path / "labels.csv").write_text(
        f"filename,category\n{tmp_path}/0.png,cat\n{tmp_path}/1.png,dog\n"
    )
    ds = CSVClassification(tmp_path / "labels.csv")
    assert len(ds) == 2 and ds.classes == ["cat", "dog"]
    (tmp_path / "boxes.csv").write_text(
        f"file,label,left,top,right,bottom\n{tmp_path}/0.png,cat,1,1,9,9\n"
        f"{tmp_path}/1.png,dog,2,2,8,8\n"
    )
    assert len(AnnotatedLocalization(tmp_path / "boxes.csv")) == 2


# 11 -----------------------------------------------------------------------------------------------


def test_11_a_corrupt_image_in_predict_is_skipped_then_reported(
    tmp_path, segment_run, detect_run, capsys
):
    inputs = tmp_path / "in"
    _corrupt(inputs / "a_bad.png")
    _png(inputs / "b_good.png")
    out = tmp_path / "seg"
    with pytest.warns(UserWarning, match="skipped: .*a_bad.png"):
        code = main(
            [
                "segment",
                "predict",
                str(inputs),
                "--checkpoint",
                str(segment_run / "best.pt"),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
    assert code == 2
    err = capsys.readouterr().err
    assert (
        f"{inputs / 'a_bad.png'}: could not be read (1 image(s) skipped; the other 1 were written to {out}/)"
        in err
    )
    assert list(json.loads((out / "predictions.json").read_text())) == [
        str(inputs / "b_good.png")
    ]
    assert (out / "masks" / "b_good.png").is_file()
    det = tmp_path / "det"
    assert (
        main(
            [
                "detect",
                "predict",
                str(inputs),
                "--checkpoint",
                str(detect_run / "best.pt"),
                "--out",
                str(det),
                "--device",
                "cpu",
                "--strict",
                "--no-progress",
            ]
        )
        == 2
    )
    assert (
        "a_bad.png" in one_error_line(capsys)
        and not (det / "predictions.json").exists()
    )
    with pytest.warns(UserWarning, match="skipped: .*a_bad.png"):
        code = main(
            [
                "detect",
                "predict",
                str(inputs),
                "--checkpoint",
                str(detect_run / "best.pt"),
                "--out",
                str(det),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
    assert code == 2
    assert list(json.loads((det / "predictions.json").read_text())) == [
        str(inputs / "b_good.png")
    ]
    assert (det / "coco_results.json").is_file()


# 12 -----------------------------------------------------------------------------------------------


def test_12_warnings_are_one_line_without_their_source(tmp_path):
    from convision.data.detection_formats import convert

    voc = convert(
        "synthetic", tmp_path / "voc", "voc", num_images=3, image_size=48, num_classes=3
    )
    sorted((voc / "ImageSets" / "Main").glob("*_train.txt"))[0].unlink()
    proc = run_cli(
        [
            "detect",
            "convert",
            str(voc),
            str(tmp_path / "c.json"),
            "--to",
            "coco",
            "--split",
            "train",
        ],
        PYTHONWARNINGS="default",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("convision: warning: ")
        and "has no ImageSets" in lines[0]
    )


def test_12_debug_output_does_not_suggest_debug(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(convision.cli.summary, "run", broken)
    assert main(["--debug", "summary", "fcn8s"]) == 1
    err = capsys.readouterr().err
    assert (
        "Traceback" in err
        and err.strip().splitlines()[-1]
        == "convision: internal error: RuntimeError: boom"
    )
    assert main(["summary", "fcn8s"]) == 1
    assert (
        one_error_line(capsys)
        == "convision: internal error: RuntimeError: boom (run with --debug for the traceback)"
    )


def test_12_init_from_that_matches_nothing_names_the_file(tmp_path, capsys):
    other = tmp_path / "other.pt"
    save_checkpoint(
        other, {"format": 1, "state_dict": {"nothing.like.fcn": torch.zeros(3)}}
    )
    assert (
        main(
            [
                "segment",
                "train",
                *SEGMENT_TINY,
                "--init-from",
                str(other),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert str(other) in one_error_line(capsys)


def test_12_usage_errors_name_the_program_once(capsys):
    assert main(["segment", "train", "--bogus"]) == 2
    assert (
        one_error_line(capsys)
        == "convision: error: unrecognized arguments: --bogus (see --help)"
    )
    assert main(["segment", "train", "--epochs"]) == 2
    assert (
        one_error_line(capsys)
        == "convision: error: segment train: argument --epochs: expected one argument (see --help)"
    )


def test_12_every_predict_has_no_progress_and_help_reads_well():
    parser = build_parser()
    for task in TASKS:
        args = [task, "predict", "x.png", "--checkpoint", "c.pt", "--no-progress"]
        assert parser.parse_args(args).no_progress is True
    tasks = parser._subparsers._group_actions[0].choices
    detect_train = (
        tasks["detect"]._subparsers._group_actions[0].choices["train"].format_help()
    )
    assert "data settings" in detect_train and "detectdata" not in detect_train
    segment_help = " ".join(tasks["segment"].format_help().split())
    assert "U-Net" in segment_help and "SegNet" in segment_help
