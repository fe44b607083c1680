"""`torchrun --nproc_per_node 2 -m convision segment train` (gloo on CPU) ends with the same
weights as one process trained on the same global batches."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

ARGS = [
    "segment",
    "train",
    "--num-train",
    "8",
    "--num-val",
    "4",
    "--scene-size",
    "48",
    "--num-classes",
    "3",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--backbone",
    "resnet18",
    "--weights",
    "none",
    "--workers",
    "0",
    "--scale-min",
    "1",
    "--scale-max",
    "1",
    "--no-hflip",
    "--color-jitter",
    "0",
    "--optimizer",
    "sgd",
    "--lr",
    "0.05",
    "--no-progress",
]


def _run(cmd: list[str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_two_processes_match_one(tmp_path):
    single, double = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, "-m", "convision", *ARGS, "--out", str(single)])
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "convision",
            *ARGS,
            "--out",
            str(double),
        ]
    )
    a = torch.load(single / "last.pt", weights_only=True)
    b = torch.load(double / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for name, tensor in a["state_dict"].items():
        if tensor.is_floating_point():
            assert torch.allclose(
                tensor, b["state_dict"][name], atol=1e-4, rtol=1e-3
            ), name
    # training did happen: the zero-initialised score layers have moved
    scores = [
        t for n, t in b["state_dict"].items() if "score" in n and n.endswith("weight")
    ]
    assert scores and all(t.abs().sum() > 0 for t in scores)
    # the validation metric is all-reduced over both processes: same value as one process
    assert abs(a["metrics"]["miou"] - b["metrics"]["miou"]) < 1e-6


def test_detection_trains_under_torchrun_and_its_validation_map_is_gathered(tmp_path):
    """Two processes train Faster R-CNN; the epoch's validation mAP (each process scores half of the
    images, the detections are gathered) equals one process scoring the whole set with the same weights."""
    from convision.tasks.detect import evaluate

    out = tmp_path / "detect_ddp"
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "convision",
            "detect",
            "train",
            "--num-train",
            "4",
            "--num-val",
            "6",
            "--scene-size",
            "64",
            "--num-classes",
            "3",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--backbone",
            "resnet18",
            "--weights",
            "none",
            "--workers",
            "0",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["task"] == "detect"
    # batch 1 as each process validated with (batch 2 over 2 processes): other batch sizes change the
    # convolution arithmetic in the last bits, which can reorder near-tied scores
    single = evaluate(
        out / "last.pt",
        batch_size=1,
        workers=0,
        device="cpu",
        progress=False,
        coco=False,
    )
    assert single["num_images"] == 6
    assert abs(ckpt["metrics"]["mAP"] - single["mAP"]) < 1e-6


def test_classification_and_localization_train_under_torchrun(tmp_path):
    """Both tasks run on the shared engine under torchrun; the gathered validation metric equals one
    process evaluating the saved weights on the whole validation set."""
    from convision.tasks.classify import evaluate as evaluate_classifier
    from convision.tasks.localize import evaluate as evaluate_localizer

    common = [
        "--num-train",
        "8",
        "--num-val",
        "6",
        "--scene-size",
        "48",
        "--num-classes",
        "3",
        "--image-size",
        "48",
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
    ]
    for task, evaluate, key in (
        ("classify", evaluate_classifier, "accuracy"),
        ("localize", evaluate_localizer, "accuracy"),
    ):
        out = tmp_path / task
        _run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                "2",
                "-m",
                "convision",
                task,
                "train",
                *common,
                "--out",
                str(out),
            ]
        )
        ckpt = torch.load(out / "last.pt", weights_only=True)
        assert ckpt["epoch"] == 1 and ckpt["task"] == task
        single = evaluate(
            out / "last.pt", batch_size=2, workers=0, device="cpu", progress=False
        )
        assert abs(ckpt["metrics"][key] - single[key]) < 1e-6, task


def test_gradual_unfreezing_under_torchrun_matches_one_process(tmp_path):
    """The frozen stages change between epochs (DDP with find_unused_parameters): two processes end
    with one process's weights, and the stages still frozen at the end never moved."""
    from convision.engine import seed_everything
    from convision.models.classification import build_classifier

    args = [
        "classify",
        "train",
        "--num-train",
        "8",
        "--num-val",
        "4",
        "--scene-size",
        "48",
        "--num-classes",
        "3",
        "--image-size",
        "48",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--backbone",
        "resnet18",
        "--weights",
        "none",
        "--strategy",
        "finetune",
        "--unfreeze-every",
        "1",
        "--scale-min",
        "1",
        "--no-hflip",
        "--workers",
        "0",
        "--lr",
        "0.01",
        "--no-progress",
    ]
    single, double = tmp_path / "single", tmp_path / "ddp"
    _run([sys.executable, "-m", "convision", *args, "--out", str(single)])
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "convision",
            *args,
            "--out",
            str(double),
        ]
    )
    a = torch.load(single / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(double / "last.pt", weights_only=True)["state_dict"]
    for name, tensor in a.items():
        if tensor.is_floating_point():
            assert torch.allclose(tensor, b[name], atol=1e-4, rtol=1e-3), name
    seed_everything(0)  # what train() does before building the model
    init = build_classifier(
        "resnet18", 2, weights=None, strategy="finetune"
    ).state_dict()
    for name, tensor in b.items():
        stage = name.split(".")[1]
        if stage in (
            "conv1",
            "bn1",
            "layer1",
            "layer2",
            "layer3",
        ):  # epoch 2 trains only layer4 and the head
            assert torch.equal(tensor, init[name]), name
    assert not torch.equal(
        b["net.layer4.1.conv2.weight"], init["net.layer4.1.conv2.weight"]
    )
