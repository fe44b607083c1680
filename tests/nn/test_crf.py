"""Dense CRF post-processing: it snaps blurry probabilities to colour edges, validates its settings,
and runs through the API and `convision segment eval|predict --crf`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convision.cli import main
from convision.errors import ConfigError, DataError
from convision.nn.crf import CRF_DEFAULTS, crf_settings, dense_crf
from tests.helpers import SEGMENT_TINY


def edge_scene(centre: float, width: float = 4.0, size: int = 64):
    """Red | blue halves split at column size/2; class-1 probability a soft ramp centred at ``centre``."""
    image = np.zeros((size, size, 3), np.uint8)
    image[:, : size // 2] = (200, 40, 40)
    image[:, size // 2 :] = (40, 40, 200)
    ramp = 1.0 / (1.0 + np.exp(-(np.arange(size) - centre) / width))
    p1 = np.broadcast_to(ramp, (size, size))
    return image, np.stack([1.0 - p1, p1]).astype(np.float32)


def first_class1_column(labels: np.ndarray) -> np.ndarray:
    return np.argmax(labels == 1, axis=1)


@pytest.mark.parametrize("centre", [26.0, 38.0])
def test_crf_moves_a_blurry_boundary_to_the_colour_edge(centre):
    image, probs = edge_scene(centre)
    before = first_class1_column(probs.argmax(0))
    assert (
        before == (27 if centre < 32 else 39)
    ).all()  # the network's boundary is off the edge
    refined = dense_crf(image, probs)
    assert refined.shape == probs.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-5)
    assert (first_class1_column(refined.argmax(0)) == 32).all()
    # and it is sharper: the pixels next to the edge are confident now
    assert refined[1, :, 32].min() > probs[1, :, 32].max()
    assert refined[0, :, 31].min() > 0.9


def test_crf_without_pairwise_terms_returns_the_input_and_keeps_tensors_on_their_device():
    image, probs = edge_scene(30.0)
    same = dense_crf(image, probs, compat_gaussian=0, compat_bilateral=0)
    np.testing.assert_allclose(
        same, probs, atol=1e-5
    )  # unary = -log p, so mean field gives p back
    out = dense_crf(
        torch.from_numpy(image), torch.from_numpy(probs), iterations=2, sxy_bilateral=20
    )
    assert (
        isinstance(out, torch.Tensor)
        and out.shape == (2, 64, 64)
        and out.device.type == "cpu"
    )


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"iterations": 0}, "crf_iterations"),
        ({"iterations": 2.5}, "crf_iterations"),
        ({"sxy_bilateral": -1.0}, "crf_sxy_bilateral"),
        ({"srgb_bilateral": 0}, "crf_srgb_bilateral"),
        ({"sxy_gaussian": float("nan")}, "crf_sxy_gaussian"),
        ({"compat_bilateral": -3}, "crf_compat_bilateral"),
    ],
)
def test_bad_settings_are_one_line_config_errors(kwargs, needle):
    image, probs = edge_scene(30.0)
    with pytest.raises(ConfigError) as info:
        dense_crf(image, probs, **kwargs)
    message = str(info.value)
    assert message.startswith(needle) and "\n" not in message


def test_settings_and_inputs_are_checked():
    assert crf_settings(None) is None and crf_settings(False) is None
    assert crf_settings(True) == CRF_DEFAULTS
    assert crf_settings({"sxy_bilateral": 20})["sxy_bilateral"] == 20.0
    with pytest.raises(ConfigError, match="unknown setting 'sxy'"):
        crf_settings({"sxy": 3})
    image, probs = edge_scene(30.0)
    with pytest.raises(DataError, match="do not match"):
        dense_crf(image, probs[:, :10])
    with pytest.raises(DataError, match="uint8"):
        dense_crf(image.astype(np.float32), probs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("crf_run")
    assert main(["segment", "train", *SEGMENT_TINY, "--out", str(out)]) == 0
    return out


def test_cli_eval_with_crf_writes_metrics_and_settings(trained, capsys):
    plain_json, crf_json = trained / "plain.json", trained / "crf.json"
    common = [
        "segment",
        "eval",
        "--checkpoint",
        str(trained / "best.pt"),
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main([*common, "--json", str(plain_json)]) == 0
    assert (
        main(
            [
                *common,
                "--crf",
                "--crf-sxy-bilateral",
                "20",
                "--crf-iterations",
                "3",
                "--json",
                str(crf_json),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "boundary F" in printed and "mean IoU" in printed
    plain, refined = (
        json.loads(plain_json.read_text()),
        json.loads(crf_json.read_text()),
    )
    assert "crf" not in plain
    assert refined["crf"] == {**CRF_DEFAULTS, "sxy_bilateral": 20.0, "iterations": 3}
    for m in (plain, refined):
        assert (
            0.0 <= m["miou"] <= 1.0
            and 0.0 <= m["boundary_f"] <= 1.0
            and m["num_images"] == 4
        )


def test_crf_evaluation_path_matches_the_batched_one_when_the_crf_does_nothing(trained):
    from convision.tasks.segment import evaluate

    model = trained / "best.pt"
    plain = evaluate(model, batch_size=4, workers=0, progress=False, device="cpu")
    # no pairwise terms: the CRF returns the softmax, so only the uint8 -> normalise path differs
    same = evaluate(
        model,
        workers=0,
        progress=False,
        device="cpu",
        crf={"compat_gaussian": 0, "compat_bilateral": 0, "iterations": 1},
    )
    assert abs(plain["pixel_accuracy"] - same["pixel_accuracy"]) < 1e-3
    assert abs(plain["miou"] - same["miou"]) < 1e-3


def test_cli_predict_with_crf_writes_outputs(trained, tmp_path, capsys):
    from convision.tasks.segment import validation_samples

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, (image, _) in enumerate(validation_samples(2, model=None)):
        Image.fromarray(np.ascontiguousarray(image[:64, :64])).save(
            inputs / f"scene{i}.png"
        )
    out = tmp_path / "pred"
    assert (
        main(
            [
                "segment",
                "predict",
                str(inputs),
                "--checkpoint",
                str(trained / "best.pt"),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--crf",
                "--crf-compat-bilateral",
                "5",
            ]
        )
        == 0
    )
    for sub in ("masks", "color", "overlay"):
        files = sorted((out / sub).glob("*.png"))
        assert [f.name for f in files] == ["scene0.png", "scene1.png"], sub
    mask = np.array(Image.open(out / "masks" / "scene0.png"))
    assert mask.shape == (64, 64) and mask.max() < 4
    capsys.readouterr()
    # a CRF flag without --crf is a usage error, one line, exit 2
    assert (
        main(
            [
                "segment",
                "predict",
                str(inputs),
                "--checkpoint",
                str(trained / "best.pt"),
                "--crf-iterations",
                "3",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["convision: error: --crf-iterations: needs --crf"]


def test_api_predict_with_crf_returns_refined_probabilities(trained):
    from convision import load
    from convision.tasks.segment import predict

    model = load(trained / "best.pt")
    image, _ = edge_scene(30.0)
    plain = predict(model, image, device="cpu", return_probabilities=True)[0]
    refined = predict(
        model, image, device="cpu", return_probabilities=True, crf={"sxy_bilateral": 20}
    )[0]
    assert refined.shape == plain.shape == (4, 64, 64)
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-4)
    assert not np.allclose(refined, plain, atol=1e-3)
    with pytest.raises(ConfigError, match="crf_iterations"):
        predict(model, image, device="cpu", crf={"iterations": -1})
