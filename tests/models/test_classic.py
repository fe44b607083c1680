"""The notes' own networks (AlexNet 2012, ZFNet): the numbers the notes and the papers state."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from convision.cli import main
from convision.errors import ConfigError
from convision.models import build_classifier
from convision.models.classic import TowerLRN, alexnet2012, zfnet
from convision.nn.receptive_field import summarize
from convision.tasks.summary import build

torch.set_num_threads(1)


def _rows(model, side):
    return {layer.name: layer for layer in summarize(model, (3, side, side))}


def test_alexnet2012_counts_the_notes_parameters():
    rows = _rows(alexnet2012(), 227)
    # seed 002: "11x11x3x48x2 = 35k" for the first layer (+ 96 biases)
    assert rows["features.0"].params == 11 * 11 * 3 * 48 * 2 + 96 == 34_944
    # the two-tower split: conv2, conv4, conv5 see only their own tower's maps
    assert rows["features.4"].params == 5 * 5 * 48 * 128 * 2 + 256
    assert rows["features.8"].params == 3 * 3 * 128 * 2 * 192 * 2 + 384
    assert rows["features.10"].params == 3 * 3 * 192 * 192 * 2 + 384
    assert rows["features.12"].params == 3 * 3 * 192 * 128 * 2 + 256
    assert rows["classifier.1"].params == 6 * 6 * 256 * 4096 + 4096
    # the paper's map sides 55, 27, 13, 6 and its "60 million parameters"
    assert tuple(rows["features.0"].output_shape) == (96, 55, 55)
    assert tuple(rows["features.3"].output_shape) == (96, 27, 27)
    assert tuple(rows["features.14"].output_shape) == (256, 6, 6)
    assert sum(r.params for r in rows.values()) == 60_965_224
    # receptive fields: 11 -> 19 (overlapping 3x3/2 pool) -> 51 -> 67 -> 99 -> 131 -> 163 -> 195
    rf = [rows[f"features.{i}"].rf for i in (0, 3, 4, 7, 8, 10, 12, 14)]
    assert rf == [11, 19, 51, 67, 99, 131, 163, 195]
    assert rows["features.14"].stride == (32, 32)


def test_zfnet_geometry_of_the_paper():
    rows = _rows(zfnet(), 224)
    assert rows["features.0"].params == 7 * 7 * 3 * 96 + 96
    # Zeiler & Fergus fig. 3: 110 -> 55 -> 26 -> 13 -> 6
    sides = [rows[f"features.{i}"].output_shape[-1] for i in (0, 2, 4, 6, 14)]
    assert sides == [110, 55, 26, 13, 6]
    assert rows["features.0"].rf == 7 and rows["features.0"].stride == (2, 2)
    assert rows["features.4"].rf == 27 and rows["features.14"].rf == 171
    assert rows["features.10"].params == 3 * 3 * 384 * 384 + 384  # dense, one tower


def test_tower_lrn_is_the_papers_formula_within_each_tower():
    x = torch.randn(1, 8, 3, 3) * 10
    out = TowerLRN(groups=2)(x)
    # Krizhevsky et al. eq. in sec. 3.3, by hand: b_i = a_i / (2 + 1e-4 * sum_{|j-i|<=2, same tower} a_j^2)^0.75
    expected = torch.empty_like(x)
    for i in range(8):
        lo, hi = (0, 4) if i < 4 else (4, 8)
        js = range(max(lo, i - 2), min(hi, i + 3))
        expected[:, i] = x[:, i] / (2 + 1e-4 * sum(x[:, j] ** 2 for j in js)) ** 0.75
    assert torch.allclose(out, expected, atol=1e-6)
    # one tower of 8 channels would mix channels 3 and 4
    assert not torch.allclose(
        F.local_response_norm(x, 5, 5e-4, 0.75, 2.0), expected, atol=1e-6
    )


def test_summary_cli_names_them(capsys, tmp_path):
    js = tmp_path / "a.json"
    assert main(["summary", "alexnet2012", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    first = next(line for line in out.splitlines() if line.startswith("features.0 "))
    assert first.split()[:4] == ["features.0", "Conv2d", "96x55x55", "34,944"]
    data = json.loads(js.read_text())
    assert data["input_size"] == [3, 227, 227] and data["total_params"] == 60_965_224
    assert main(["summary", "zfnet", "--num-classes", "10", "--rows", "3"]) == 0
    assert "96x110x110" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="no published weights"):
        build("zfnet", weights="IMAGENET1K_V1")


def test_they_are_classifier_backbones():
    torch.manual_seed(0)
    model = build_classifier("zfnet", 3, strategy="scratch")
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)
    assert len(model.stages()) == 4
    with pytest.raises(ConfigError, match="no published weights"):
        build_classifier("alexnet2012", 3, weights="IMAGENET1K_V1")
