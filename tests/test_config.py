from __future__ import annotations

import pytest

from convision.cli import build_parser
from convision.config import SegmentConfig, apply, from_args, load_yaml, parse_class_weights
from convision.errors import ConfigError


def test_yaml_then_flags_override(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 0.05\nepochs: 3\nmodel:\n  backbone: resnet18\n")
    args = build_parser().parse_args(["segment", "train", "--config", str(cfg_file), "--epochs", "7", "--no-amp"])
    cfg = from_args(args)
    assert cfg.train.lr == 0.05          # from YAML
    assert cfg.train.epochs == 7         # flag beats YAML
    assert cfg.model.backbone == "resnet18"  # sectioned YAML accepted
    assert cfg.train.amp is False
    assert cfg.train.batch_size == SegmentConfig().train.batch_size  # default untouched


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown setting 'lrr' \(did you mean 'lr'\?\)"):
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
    sub = parser._subparsers._group_actions[0].choices["segment"]._subparsers._group_actions[0].choices["train"]
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
