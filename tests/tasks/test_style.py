"""Neural style transfer: optimisation lowers the style loss, a seed fixes the result, options work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convision
from convision.cli import main
from convision.errors import ConfigError
from convision.tasks.style import _TO_YCBCR, _load, transfer

torch.set_num_threads(1)
SIDE = 48


def _content() -> np.ndarray:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    img = np.stack([xx, yy, 0.5 + 0 * xx], axis=2)
    img[(yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.08] = (0.9, 0.2, 0.1)  # a red disc
    return (img * 255).astype(np.uint8)


def _style() -> np.ndarray:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    stripes = ((xx + yy) // 4) % 2  # diagonal stripes, yellow and blue
    return np.where(stripes[..., None], [230, 200, 20], [20, 40, 160]).astype(np.uint8)


def test_a_few_steps_reduce_the_style_loss_for_both_statistics():
    for kind in ("gram", "moments"):
        r = transfer(
            _content(),
            _style(),
            style_loss_kind=kind,
            size=SIDE,
            steps=8,
            progress=False,
        )
        first, last = r["style_loss"]
        assert last < 0.7 * first, (kind, first, last)
        assert (
            r["content_loss"][0] == 0.0 < r["content_loss"][1]
        )  # started from the content
        assert r["image"].shape == (SIDE, SIDE, 3) and r["image"].dtype == np.uint8
        assert [h["step"] for h in r["history"]] == list(range(1, 9))


def test_the_seed_fixes_the_result(tmp_path):
    kw = dict(
        weights="none", init="noise", size=32, steps=3, progress=False, optimizer="adam"
    )
    a = transfer(_content(), _style(), seed=1, **kw)["image"]
    b = transfer(_content(), _style(), seed=1, **kw)["image"]
    c = transfer(_content(), _style(), seed=2, **kw)["image"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_preserve_color_keeps_the_contents_chrominance_and_save_every(tmp_path):
    out = tmp_path / "r" / "result.png"
    r = convision.style_transfer(
        _content(),
        _style(),
        out=out,
        size=32,
        steps=4,
        preserve_color=True,
        save_every=2,
        progress=False,
    )
    assert out.is_file() and [p.split("/")[-1] for p in r["intermediate"]] == [
        "result.step0002.png"
    ]
    to = _TO_YCBCR.numpy()
    content = _load(_content(), "content", 32)[0].permute(1, 2, 0).numpy() @ to.T
    kept = (r["image"] / 255.0) @ to.T
    plain = transfer(_content(), _style(), size=32, steps=4, progress=False)["image"]
    plain = (plain / 255.0) @ to.T
    # the content's chrominance (up to 8-bit rounding), the plain result's luminance
    assert np.abs(kept[..., 1:] - content[..., 1:]).mean() < 0.001
    assert np.abs(kept[..., 0] - plain[..., 0]).mean() < 0.002
    # without the option the colours moved towards the style's (measured: 0.0033 vs 0.0004)
    assert np.abs(plain[..., 1:] - content[..., 1:]).mean() > 0.0025


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    good = tmp_path / "good.png"
    from PIL import Image

    Image.fromarray(_content()).save(good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image")
    cases = [
        ([str(tmp_path / "missing.jpg"), str(good)], "missing.jpg"),
        ([str(good), str(corrupt)], "corrupt.jpg"),
        ([str(good), str(good), "--style-layers", "features.1,conv9_9"], "conv9_9"),
        (
            [
                str(good),
                str(good),
                "--network",
                "vgg16",
                "--weights",
                "none",
                "--content-layers",
                "relu6_1",
            ],
            "relu6_1",
        ),
        ([str(good), str(good), "--style-loss", "mean"], "--style-loss"),
        ([str(good), str(good), "--style-layer-weights", "1,2"], "style_layer_weights"),
        ([str(good), str(good), "--out", str(tmp_path)], "folder"),
    ]
    for args, needle in cases:
        if "--out" not in args:
            args = [*args, "--out", str(tmp_path / "o.png")]
        code = main(["style", *args, "--steps", "1", "--size", "32", "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("convision: error:"), (
            args,
            err,
        )
        assert needle in err[0], (needle, err)
    with pytest.raises(ConfigError, match="save_every"):
        transfer(_content(), _style(), save_every=2, steps=2, progress=False)


def test_cli_writes_the_result(tmp_path, capsys):
    from PIL import Image

    c, s = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(_content()).save(c)
    Image.fromarray(_style()).save(s)
    out = tmp_path / "result.png"
    code = main(
        [
            "style",
            str(c),
            str(s),
            "--out",
            str(out),
            "--size",
            "32",
            "--steps",
            "3",
            "--style-loss",
            "moments",
            "--optimizer",
            "adam",
            "--no-progress",
        ]
    )
    assert code == 0 and out.is_file()
    assert Image.open(out).size == (32, 32)
    assert "style loss" in capsys.readouterr().out
