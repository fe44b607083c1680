"""Settings as plain dataclasses, filled from defaults, then a YAML file, then command-line flags.

Every field is one flag (``--lr 0.01``, ``--no-amp``) and one YAML key (flat, same name).
Unknown keys are errors, not silently ignored.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convision.errors import ConfigError


@dataclass
class DataConfig:
    data: str = field(default="synthetic", metadata={"help": "'synthetic' (built-in scenes) or a data set folder"})
    format: str = field(default="auto", metadata={"help": "folder layout: auto | folder | voc"})
    num_classes: int = field(default=6, metadata={"help": "synthetic scenes: classes including background"})
    image_size: int = field(default=128, metadata={"help": "synthetic scenes: image side in pixels"})
    num_train: int = field(default=400, metadata={"help": "synthetic scenes: training images"})
    num_val: int = field(default=100, metadata={"help": "synthetic scenes: validation images"})
    data_seed: int = field(default=0, metadata={"help": "synthetic scenes: generator seed"})
    crop_size: int = field(default=0, metadata={"help": "training crop side; 0 = the images' own size, each side at most 320 (synthetic: image size)"})
    scale_min: float = field(default=0.5, metadata={"help": "random-scale augmentation, lower bound"})
    scale_max: float = field(default=2.0, metadata={"help": "random-scale augmentation, upper bound"})
    hflip: bool = field(default=True, metadata={"help": "random horizontal flip"})
    color_jitter: float = field(default=0.2, metadata={"help": "brightness/contrast/saturation jitter strength (0 = off)"})
    workers: int = field(default=2, metadata={"help": "data-loading worker processes"})


@dataclass
class ModelConfig:
    model: str = field(default="fcn8s", metadata={"help": "architecture: fcn32s | fcn16s | fcn8s | segnet | deconvnet | unet | dilated"})
    backbone: str = field(default="mobilenet_v2", metadata={"help": "vgg16 | vgg16_bn | mobilenet_v2 | resnet18 | resnet34 | resnet50 | resnet101 (unet: also none = the paper's encoder; dilated: vgg16 = the paper's or mobilenet_v2)"})
    weights: str = field(default="IMAGENET1K_V1", metadata={"help": "backbone weights: a torchvision name (IMAGENET1K_V1, DEFAULT), a .pth file, or 'none'"})
    faithful: bool = field(default=False, metadata={"help": "FCN: the paper's pad-100-and-crop alignment (VGG16 only)"})
    learnable_upsampling: bool = field(default=False, metadata={"help": "FCN: train the bilinear-initialised transposed convolutions"})
    init_from: str = field(default="", metadata={"help": "checkpoint to initialise matching layers from (FCN-32s -> 16s -> 8s)"})


@dataclass
class TrainConfig:
    epochs: int = field(default=20, metadata={"help": "training epochs"})
    batch_size: int = field(default=8, metadata={"help": "global batch size (split across processes under torchrun)"})
    optimizer: str = field(default="sgd", metadata={"help": "sgd (with momentum) | adamw"})
    lr: float = field(default=0.01, metadata={"help": "peak learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "weight decay"})
    schedule: str = field(default="poly", metadata={"help": "learning-rate schedule: poly | cosine | constant"})
    poly_power: float = field(default=0.9, metadata={"help": "power of the poly schedule"})
    warmup_epochs: float = field(default=0.0, metadata={"help": "linear warm-up length in epochs"})
    grad_clip: float = field(default=0.0, metadata={"help": "clip the gradient norm to this (0 = off)"})
    amp: bool = field(default=True, metadata={"help": "mixed precision on CUDA (ignored on CPU)"})
    class_weights: str = field(default="", metadata={"help": "comma-separated cross-entropy class weights (empty = none)"})
    sync_bn: bool = field(default=True, metadata={"help": "synchronise batch-norm statistics across processes under torchrun"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    out: str = field(default="runs/segment", metadata={"help": "output folder for checkpoints, metrics and pictures"})
    resume: bool = field(default=False, metadata={"help": "continue from OUT/last.pt"})
    overwrite: bool = field(default=False, metadata={"help": "start over even if OUT already holds a run"})


@dataclass
class SegmentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {section.name: dataclasses.asdict(getattr(self, section.name)) for section in dataclasses.fields(self)}


def _sections(cfg: Any) -> list[Any]:
    return [getattr(cfg, f.name) for f in dataclasses.fields(cfg)]


def _flat_fields(cfg: Any) -> dict[str, tuple[Any, dataclasses.Field]]:
    out: dict[str, tuple[Any, dataclasses.Field]] = {}
    for section in _sections(cfg):
        hints = typing.get_type_hints(type(section))
        for f in dataclasses.fields(section):
            f.type = hints[f.name]
            out[f.name] = (section, f)
    return out


def _coerce(name: str, value: Any, typ: Any, where: str) -> Any:
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if isinstance(value, (list, tuple)):
                return ",".join(str(v) for v in value)
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{where}: '{name}' must be {typ.__name__}, got {value!r}")


def _unknown(name: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{where}: unknown setting '{name}'{hint}")


def apply(cfg: Any, values: dict[str, Any], where: str) -> Any:
    """Set flat ``values`` on the sections of ``cfg``; unknown names are errors."""
    fields = _flat_fields(cfg)
    for name, value in values.items():
        key = str(name).replace("-", "_")
        if key not in fields:
            raise _unknown(str(name), sorted(fields), where)
        section, f = fields[key]
        setattr(section, key, _coerce(key, value, f.type, where))
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{line} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of setting: value")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("data", "model", "train") and isinstance(value, dict):
            flat.update(value)  # sectioned files are accepted too
        else:
            flat[key] = value
    return flat


def add_arguments(parser: argparse.ArgumentParser, cfg: Any) -> None:
    """One flag per setting; --help shows each default."""
    for section in _sections(cfg):
        group = parser.add_argument_group(f"{type(section).__name__.removesuffix('Config').lower()} settings")
        hints = typing.get_type_hints(type(section))
        for f in dataclasses.fields(section):
            flag = "--" + f.name.replace("_", "-")
            default = getattr(section, f.name)
            help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
            if hints[f.name] is bool:
                group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            else:
                group.add_argument(flag, dest=f.name, default=None, metavar=hints[f.name].__name__.upper(), help=help_text)


def from_args(args: argparse.Namespace, cfg: Any | None = None) -> SegmentConfig:
    """Defaults, then ``--config`` YAML, then the flags that were given."""
    cfg = cfg if cfg is not None else SegmentConfig()
    if getattr(args, "config", None):
        apply(cfg, load_yaml(args.config), where=str(args.config))
    given = {name: getattr(args, name) for name in _flat_fields(cfg) if getattr(args, name, None) is not None}
    apply(cfg, given, where="command line")
    return cfg


def parse_class_weights(text: str) -> list[float] | None:
    if not text.strip():
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"class_weights: expected comma-separated numbers, got {text!r}") from None
