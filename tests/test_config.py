from __future__ import annotations

import pytest

from convision.cli import build_parser, main
from convision.config import (
    AugmentSection,
    BackboneSection,
    ScenesSection,
    SourceSection,
    apply,
    from_args,
    from_dict,
    load_yaml,
    parse_class_weights,
)
from convision.errors import ConfigError
from convision.tasks import ClassifyConfig, DetectConfig, LocalizeConfig
from convision.tasks.classify import ClassifyModelConfig
from convision.tasks.segment import SegmentConfig, SegmentDataConfig

CONFIGS = (SegmentConfig, ClassifyConfig, LocalizeConfig, DetectConfig)


def test_yaml_then_flags_override(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 0.05\nepochs: 3\nmodel:\n  backbone: resnet18\n")
    args = build_parser().parse_args(
        ["segment", "train", "--config", str(cfg_file), "--epochs", "7", "--no-amp"]
    )
    cfg = from_args(args, SegmentConfig())
    assert cfg.train.lr == 0.05  # from YAML
    assert cfg.train.epochs == 7  # flag beats YAML
    assert cfg.model.backbone == "resnet18"  # sectioned YAML accepted
    assert cfg.train.amp is False
    assert cfg.train.batch_size == SegmentConfig().train.batch_size  # default untouched


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lrr: 0.1\n")
    with pytest.raises(
        ConfigError, match=r"c.yaml: unknown setting 'lrr' \(did you mean 'lr'\?\)"
    ):
        apply(SegmentConfig(), load_yaml(cfg_file), where=str(cfg_file))


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="'epochs' must be int"):
        apply(SegmentConfig(), {"epochs": "many"}, where="x")
    with pytest.raises(ConfigError, match="'amp' must be bool"):
        apply(SegmentConfig(), {"amp": "maybe"}, where="x")


def test_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [0.1\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_help_lists_every_setting_with_its_default():
    parser = build_parser()
    sub = (
        parser._subparsers._group_actions[0]
        .choices["segment"]
        ._subparsers._group_actions[0]
        .choices["train"]
    )
    text = " ".join(sub.format_help().split())
    cfg = SegmentConfig()
    for section in cfg.to_dict().values():
        for name, default in section.items():
            assert "--" + name.replace("_", "-") in text, name
            assert f"(default: {default!r})" in text, name


def test_class_weights_parsing():
    assert parse_class_weights("") is None
    assert parse_class_weights("1,2.5") == [1.0, 2.5]
    with pytest.raises(ConfigError):
        parse_class_weights("1,x")


def test_every_task_config_is_composed_from_the_shared_sections():
    for cls in CONFIGS:
        cfg = cls()
        for section in (SourceSection, ScenesSection, AugmentSection):
            assert isinstance(cfg.data, section), (cls.__name__, section.__name__)
        assert isinstance(cfg.model, BackboneSection), cls.__name__


def test_one_name_per_concept():
    """``backbone`` (never ``arch``), ``scene_size`` for the built-in scenes; ``image_size`` only ever
    the network's input side."""
    for cls in CONFIGS:
        names = {k for section in cls().to_dict().values() for k in section}
        assert "arch" not in names and "backbone" in names and "scene_size" in names, (
            cls.__name__
        )
    assert "image_size" not in SegmentConfig().to_dict()["data"]


def test_renamed_settings_still_work_with_a_one_line_note(tmp_path, capsys):
    args = build_parser().parse_args(["classify", "train", "--arch", "resnet18"])
    assert from_args(args, ClassifyConfig()).model.backbone == "resnet18"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "convision: note: command line: '--arch' is deprecated, use '--backbone'"
    ]
    cfg_file = tmp_path / "old.yaml"
    cfg_file.write_text("image_size: 48\n")
    assert (
        apply(SegmentConfig(), load_yaml(cfg_file), where=str(cfg_file)).data.scene_size
        == 48
    )
    assert "'image_size' is deprecated, use 'scene_size'" in capsys.readouterr().err
    model = ClassifyModelConfig()
    model.arch = "vgg16"  # Python code written against the old name
    assert model.backbone == "vgg16" and model.arch == "vgg16"
    # an older checkpoint's stored settings read with the new names
    assert from_dict(SegmentDataConfig, {"image_size": 40, "gone": 1}).scene_size == 40


def test_a_misspelt_attribute_is_an_error_not_ignored():
    cfg = SegmentConfig()
    with pytest.raises(AttributeError, match="lr_rate"):
        cfg.train.lr_rate = 0.1


def test_duplicate_yaml_keys_are_refused_with_the_line(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("lr: 0.1\nepochs: 2\nlr: 0.2\n")
    with pytest.raises(
        ConfigError, match=r"dup.yaml: line 3: 'lr' is given twice \(first on line 1\)"
    ):
        load_yaml(dup)
    both = tmp_path / "both.yaml"
    both.write_text("epochs: 2\ntrain:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="'epochs' is given twice"):
        load_yaml(both)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["segment", "train", "--workers", "-1"], "workers: must be >= 0, got -1"),
        (["segment", "train", "--crop-size", "-5"], "crop_size: must be >= 0, got -5"),
        (
            ["segment", "train", "--scale-min", "3", "--scale-max", "1"],
            "scale_min/scale_max: need scale_min <= scale_max",
        ),
        (["classify", "train", "--workers", "-1"], "workers: must be >= 0"),
        (["localize", "train", "--hidden", "-2"], "hidden: must be >= 0"),
        (
            ["detect", "train", "--scale-min", "2", "--scale-max", "1"],
            "scale_min/scale_max",
        ),
    ],
)
def test_settings_out_of_range_fail_before_anything_runs(
    flags, needle, tmp_path, capsys
):
    assert main([*flags, "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "never").exists()


def test_model_recipe_sits_between_defaults_and_yaml_and_flags(tmp_path, capsys):
    """`segment train` starts each architecture from its recipe; YAML and flags still win, and
    the recipe of the model named in the YAML (not the default model) is the one used."""
    from convision.models.segmentation import RECIPES, recipe

    assert set(RECIPES) == {
        "fcn32s",
        "fcn16s",
        "fcn8s",
        "segnet",
        "deconvnet",
        "unet",
        "dilated",
    }
    r = recipe("unet")
    fields = {
        f: s
        for s in ("data", "model", "train")
        for f in vars(getattr(SegmentConfig(), s))
    }
    assert any(
        getattr(getattr(SegmentConfig(), fields[k]), k) != v for k, v in r.items()
    )  # it changes something
    cfg = from_args(
        build_parser().parse_args(["segment", "train", "--model", "unet"]),
        SegmentConfig(),
        recipe,
    )
    assert all(getattr(getattr(cfg, fields[k]), k) == v for k, v in r.items())
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model: unet\nlr: 0.05\n")
    args = build_parser().parse_args(
        ["segment", "train", "--config", str(cfg_file), "--optimizer", "sgd"]
    )
    cfg = from_args(args, SegmentConfig(), recipe)
    assert cfg.train.lr == 0.05 and cfg.train.optimizer == "sgd"  # YAML, then the flag
    assert cfg.train.weight_decay == r["weight_decay"]  # the rest from unet's recipe
    assert recipe("not-a-model") == {}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["segment", "train", "--help"])
    text = capsys.readouterr().out
    assert "the model's recipe" in text and "  unet " in text
