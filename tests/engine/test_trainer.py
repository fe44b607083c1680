"""The training loop on a toy segmentation problem: outputs, checkpoints, resume, SIGKILL, NaN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HELPERS = Path(__file__).resolve().parent / "helpers"
sys.path.insert(0, str(HELPERS))

from engine_toy import Interrupt, ToySegmentation, ToyTask, make_cfg, make_trainer  # noqa: E402

from convision.engine import DistInfo, evaluate, load_checkpoint, make_lr_lambda  # noqa: E402
from convision.errors import CheckpointError, ConfigError, TrainingDiverged  # noqa: E402

CHECKPOINT_KEYS = {
    "format",
    "convision_version",
    "task",
    "model",
    "classes",
    "colors",
    "normalization",
    "config",
    "state_dict",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "best_metric",
    "best_epoch",
    "metrics",
    "rng",
}


@pytest.fixture(autouse=True)
def one_thread():
    # 2 shared cores: OpenMP threads spinning against other processes make tiny ops 100x slower
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _records(out: Path) -> list[dict]:
    return [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
    ]


def _assert_same_weights(a: dict, b: dict, exact: bool = True) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            assert torch.allclose(a[k], b[k], atol=1e-6), k


@pytest.fixture(scope="module")
def workers_run(tmp_path_factory):
    """4 epochs with 2 persistent loader workers, random augmentation and AMP requested (CPU: off)."""
    out = tmp_path_factory.mktemp("run") / "w2"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = make_cfg(out, epochs=4, amp=True)
    trainer = make_trainer(cfg, augment=True, workers=2)
    result = trainer.fit()
    torch.set_num_threads(n)
    return out, cfg, trainer, result


def test_training_reduces_loss_and_writes_outputs(workers_run):
    out, cfg, trainer, result = workers_run
    history = result["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.05
    assert history[-1]["miou"] > history[0]["miou"]
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "curves.png",
        "last.pt",
        "metrics.jsonl",
        "run.json",
    ]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "run.json").read_text())["model"]["name"] == "toynet"

    records = _records(out)
    assert records == history
    for r in records:
        assert {
            "epoch",
            "train_loss",
            "lr",
            "images_per_s",
            "time",
            "miou",
            "pixel_accuracy",
            "mean_accuracy",
            "fwiou",
        } <= r.keys()
        assert "per_class_iou" not in r  # only numbers go to metrics.jsonl

    last = torch.load(out / "last.pt", weights_only=True)
    best = torch.load(out / "best.pt", weights_only=True)
    assert set(last) == CHECKPOINT_KEYS and set(best) == CHECKPOINT_KEYS
    assert last["format"] == 1 and last["epoch"] == 4 and last["task"] == "segment"
    assert last["model"] == {"name": "toynet", "kwargs": {"num_classes": 3}}
    assert last["scaler"] is None  # amp is ignored on CPU
    assert not any(k.startswith("module.") for k in last["state_dict"])
    assert last["metrics"]["miou"] == pytest.approx(history[-1]["miou"])
    assert len(last["metrics"]["per_class_iou"]) == 3
    best_epoch = max(history, key=lambda r: r["miou"])["epoch"]
    assert result["best_epoch"] == best["epoch"] == last["best_epoch"] == best_epoch
    assert result["best_metric"] == pytest.approx(max(r["miou"] for r in history))
    assert last["config"]["train"]["epochs"] == 4
    # the unwrapped trained model is what last.pt holds
    _assert_same_weights(last["state_dict"], trainer.model.state_dict())


def test_loader_workers_do_not_change_the_result(workers_run, tmp_path):
    """Samples are loaded with RNGs seeded from (seed, epoch, index): 0 or 2 workers, same run."""
    out, cfg, _, _ = workers_run
    cfg0 = make_cfg(tmp_path / "w0", epochs=4, amp=True)
    make_trainer(cfg0, augment=True, workers=0).fit()
    a = torch.load(out / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "w0" / "last.pt", weights_only=True)["state_dict"]
    _assert_same_weights(a, b)


def test_evaluate_standalone_matches_training_validation(workers_run):
    _, _, trainer, result = workers_run
    metrics = evaluate(
        ToyTask(),
        trainer.model,
        ToySegmentation(7, seed=2),
        batch_size=3,
        workers=0,
        device="cpu",
        progress=False,
    )
    assert metrics["miou"] == pytest.approx(result["history"][-1]["miou"])
    assert metrics["pixel_accuracy"] == pytest.approx(
        result["history"][-1]["pixel_accuracy"]
    )


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    """Poly schedule with warm-up, dropout, random augmentation: the crash at epoch 3 and the resume
    from last.pt (epoch 2) give bit-identical weights, optimizer state and records."""
    kwargs = dict(augment=True, dropout=0.2)
    full = tmp_path / "full"
    make_trainer(make_cfg(full, epochs=4), **kwargs).fit()

    crashed = tmp_path / "crashed"
    with pytest.raises(Interrupt):
        make_trainer(
            make_cfg(crashed, epochs=4), ToyTask(stop_at=7), **kwargs
        ).fit()  # 3 steps/epoch
    assert load_checkpoint(crashed / "last.pt")["epoch"] == 2
    # as if SIGKILL hit between writing metrics.jsonl and last.pt of epoch 3, with a torn line
    with open(crashed / "metrics.jsonl", "a") as f:
        f.write(
            json.dumps({"epoch": 3, "train_loss": 9.9}) + "\n" + '{"epoch": 4, "tra'
        )
    messages: list[str] = []
    result = make_trainer(
        make_cfg(crashed, epochs=4, resume=True), log=messages.append, **kwargs
    ).fit()
    assert any("continuing at epoch 3" in m for m in messages)
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3, 4]

    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(crashed / "last.pt", weights_only=True)
    _assert_same_weights(a["state_dict"], b["state_dict"])
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values()
    ):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 12
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    ra, rb = _records(full), _records(crashed)
    assert [r["epoch"] for r in rb] == [1, 2, 3, 4]
    for x, y in zip(ra, rb):
        assert (x["train_loss"], x["miou"], x["lr"]) == (
            y["train_loss"],
            y["miou"],
            y["lr"],
        )
    assert a["best_epoch"] == b["best_epoch"] and a["best_metric"] == b["best_metric"]


def test_extending_a_finished_run_equals_a_longer_run_with_a_constant_schedule(
    tmp_path,
):
    """With schedule=constant, 2 epochs then --resume --epochs 4 == 4 epochs. (With poly/cosine the
    schedule depends on --epochs, so extending a finished run cannot equal the longer run.)"""
    make_trainer(
        make_cfg(tmp_path / "long", epochs=4, schedule="constant", lr=0.2), dropout=0.2
    ).fit()
    make_trainer(
        make_cfg(tmp_path / "ext", epochs=2, schedule="constant", lr=0.2), dropout=0.2
    ).fit()
    make_trainer(
        make_cfg(tmp_path / "ext", epochs=4, schedule="constant", lr=0.2, resume=True),
        dropout=0.2,
    ).fit()
    a = torch.load(tmp_path / "long" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "ext" / "last.pt", weights_only=True)
    assert b["epoch"] == 4
    _assert_same_weights(a["state_dict"], b["state_dict"])


def test_sigkill_mid_run_loses_at_most_one_epoch(tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        str(HELPERS / "train_script.py"),
        str(out),
        "6",
        "0.15",
    ]  # ~0.5 s per epoch
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None:
            if (out / "last.pt").is_file() and load_checkpoint(out / "last.pt")[
                "epoch"
            ] >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        time.sleep(0.2)  # into the next epoch
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = load_checkpoint(out / "last.pt")  # intact after the kill
    k = saved["epoch"]
    assert 1 <= k < 6
    before = [r for r in _records(out) if r["epoch"] <= k]
    messages: list[str] = []
    result = make_trainer(
        make_cfg(out, epochs=6, resume=True),
        augment=True,
        dropout=0.2,
        log=messages.append,
    ).fit()
    assert any(f"continuing at epoch {k + 1}" in m for m in messages)
    assert [r["epoch"] for r in _records(out)] == [1, 2, 3, 4, 5, 6]
    assert (
        _records(out)[:k] == before
    )  # the epochs before the kill were kept, not redone
    assert [r["epoch"] for r in result["history"]] == [1, 2, 3, 4, 5, 6]
    assert load_checkpoint(out / "last.pt")["epoch"] == 6


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged) as err:
        make_trainer(
            make_cfg(out, epochs=4), ToyTask(nan_at=5)
        ).fit()  # epoch 2, step 2
    msg = str(err.value)
    assert "\n" not in msg
    assert (
        "epoch 2, step 2" in msg
        and f"{out / 'last.pt'} (epoch 1) is the last good checkpoint" in msg
    )
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in _records(out)] == [1]

    out2 = tmp_path / "nan_first"
    with pytest.raises(
        TrainingDiverged, match="epoch 1, step 1.*no checkpoint was written yet"
    ):
        make_trainer(make_cfg(out2, epochs=2), ToyTask(nan_at=1)).fit()
    assert not (out2 / "last.pt").exists()


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "x"
    make_trainer(make_cfg(out, epochs=1)).fit()
    with pytest.raises(
        ConfigError,
        match="already holds a run; pass --resume to continue or --overwrite",
    ):
        make_trainer(make_cfg(out, epochs=1)).fit()
    (out / "metrics.jsonl").write_text('{"epoch": 1, "marker": true}\n{"epoch": 2}\n')
    result = make_trainer(make_cfg(out, epochs=1, overwrite=True)).fit()
    assert [r["epoch"] for r in result["history"]] == [1]
    assert "marker" not in _records(out)[0] and len(_records(out)) == 1  # started over
    with pytest.raises(ConfigError, match="nothing to resume"):
        make_trainer(make_cfg(tmp_path / "empty", epochs=1, resume=True)).fit()


@pytest.mark.parametrize(
    "overrides, dist, pattern",
    [
        (
            {"batch_size": 4},
            DistInfo(world_size=3),
            "batch_size: 4 cannot be split over 3 processes",
        ),
        ({"optimizer": "rmsprop"}, None, "optimizer: unknown 'rmsprop'"),
        ({"schedule": "step"}, None, "schedule: unknown 'step'"),
        ({"epochs": 0}, None, "epochs: must be at least 1"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, overrides, dist, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make_trainer(make_cfg(tmp_path / "bad", **overrides), dist=dist).fit()
    assert not (tmp_path / "bad" / "last.pt").exists()


def test_lr_schedules():
    warm = make_lr_lambda("poly", total_iters=110, warmup_iters=10, poly_power=2.0)
    assert [warm(i) for i in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert warm(10) == 1.0 and warm(60) == pytest.approx(0.25) and warm(110) == 0.0
    cosine = make_lr_lambda("cosine", total_iters=100, warmup_iters=0, poly_power=0.9)
    assert (
        cosine(0) == 1.0
        and cosine(50) == pytest.approx(0.5)
        and cosine(100) == pytest.approx(0.0)
    )
    const = make_lr_lambda("constant", total_iters=100, warmup_iters=0, poly_power=0.9)
    assert const(0) == const(99) == 1.0
    with pytest.raises(ConfigError):
        make_lr_lambda("linear", 10, 0, 0.9)


def test_grad_clip_bounds_each_step(tmp_path):
    cfg = make_cfg(
        tmp_path / "clip",
        epochs=1,
        grad_clip=1e-6,
        momentum=0.0,
        weight_decay=0.0,
        schedule="constant",
        warmup_epochs=0.0,
        lr=0.5,
    )
    trainer = make_trainer(cfg)
    before = torch.cat(
        [p.detach().flatten().clone() for p in trainer.model.parameters()]
    )
    trainer.fit()
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    change = (after - before).norm().item()
    assert 0 < change <= 3 * 0.5 * 1e-6 * 1.001  # 3 steps of at most lr * clip


def test_adamw_trains_only_parameters_that_require_grad(tmp_path):
    cfg = make_cfg(tmp_path / "adamw", epochs=1, optimizer="adamw", lr=0.01)
    trainer = make_trainer(cfg)
    trainer.model.conv1.requires_grad_(False)
    frozen = trainer.model.conv1.weight.detach().clone()
    head = trainer.model.head.weight.detach().clone()
    trainer.fit()
    assert torch.equal(trainer.model.conv1.weight, frozen)
    assert not torch.equal(trainer.model.head.weight, head)
    opt = torch.load(tmp_path / "adamw" / "last.pt", weights_only=True)["optimizer"]
    assert len(opt["param_groups"][0]["params"]) == 2 and "exp_avg" in opt["state"][0]


def test_resume_checks_the_model_and_a_finished_run_is_left_alone(tmp_path):
    out = tmp_path / "r"
    make_trainer(make_cfg(out, epochs=1)).fit()
    with pytest.raises(
        CheckpointError, match=r"last.pt: does not match the model \(Missing key"
    ):
        make_trainer(make_cfg(out, epochs=2, resume=True), bn=True).fit()
    before = (out / "last.pt").read_bytes()
    messages: list[str] = []
    result = make_trainer(
        make_cfg(out, epochs=1, resume=True), log=messages.append
    ).fit()
    assert [r["epoch"] for r in result["history"]] == [1]
    assert any("nothing to do" in m for m in messages)
    assert (out / "last.pt").read_bytes() == before


def test_meta_must_load_with_weights_only(tmp_path):
    trainer = make_trainer(make_cfg(tmp_path / "m", epochs=1))
    trainer.meta["config"] = {
        "data": Path("data")
    }  # a Path would make every checkpoint unloadable
    with pytest.raises(TypeError, match="plain types"):
        trainer.fit()
    assert not (tmp_path / "m" / "last.pt").exists()
