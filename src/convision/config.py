"""Settings as plain dataclasses composed from shared sections, filled from defaults, then a YAML
file, then command-line flags.

Every field is one flag (``--lr 0.01``, ``--no-amp``) and one YAML key (flat, same name). One
name means one thing in every task: ``model`` / ``backbone`` / ``weights`` the network,
``scene_size`` the side of the built-in scenes, ``image_size`` the network's input side.
Unknown keys and duplicate YAML keys are errors; values outside a field's ``min`` are errors
naming the setting; renamed settings (a section's ``aliases``) still work, with a one-line note.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import yaml

from convision.errors import ConfigError


def setting(default: Any, help: str, minimum: float | None = None) -> Any:
    """A dataclass field with its ``--help`` text and, optionally, its smallest valid value."""
    return field(default=default, metadata={"help": help, "min": minimum})


_NOTED: set[tuple[str, str]] = set()


def deprecated(old: str, new: str, where: str) -> None:
    """The one-line note for a renamed setting (stderr, once per name and place)."""
    if (old, where) in _NOTED:
        return
    _NOTED.add((old, where))
    if where == "command line":
        old, new = "--" + old.replace("_", "-"), "--" + new.replace("_", "-")
    print(
        f"convision: note: {where}: '{old}' is deprecated, use '{new}'", file=sys.stderr
    )


class Section:
    """Base of every settings section: a renamed setting (``aliases``: old -> new) still reads and
    writes, with a one-line note; setting an attribute that is no setting is an AttributeError
    (a misspelt ``cfg.train.lr_rate = ...`` would otherwise be ignored silently)."""

    aliases: ClassVar[dict[str, str]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.aliases:
            deprecated(name, self.aliases[name], "Python")
            name = self.aliases[name]
        elif name not in self.__dataclass_fields__:  # type: ignore[attr-defined]
            raise AttributeError(f"{type(self).__name__} has no setting {name!r}")
        object.__setattr__(self, name, value)

    def __getattr__(
        self, name: str
    ) -> Any:  # only called for names that are not attributes
        if name in type(self).aliases:
            deprecated(name, type(self).aliases[name], "Python")
            return getattr(self, type(self).aliases[name])
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")


# ---------------------------------------------------------------------------------------------- shared sections


@dataclass
class SourceSection(Section):
    """Where the images come from and how they are loaded."""

    data: str = setting("synthetic", "'synthetic' (built-in scenes) or a data set")
    workers: int = setting(2, "data-loading worker processes", 0)


@dataclass
class ScenesSection(Section):
    """The built-in synthetic scenes (``data: synthetic``)."""

    num_classes: int = setting(6, "synthetic scenes: classes including background", 2)
    num_train: int = setting(400, "synthetic scenes: training images", 1)
    num_val: int = setting(100, "synthetic scenes: validation images", 0)
    scene_size: int = setting(128, "synthetic scenes: image side in pixels", 8)
    data_seed: int = setting(
        0, "synthetic scenes: generator seed (also of hold-out splits)"
    )


@dataclass
class HoldOutSection(Section):
    """A validation split taken from the training data when it has none."""

    val_data: str = setting(
        "", "validation data (empty: the data set's own val split, or a hold-out)"
    )
    val_fraction: float = setting(
        0.2, "hold-out share of each class for validation when there is no val split", 0
    )


@dataclass
class AugmentSection(Section):
    """Photometric and flip augmentation shared by every task."""

    hflip: bool = setting(True, "random horizontal flip")
    color_jitter: float = setting(
        0.2, "brightness/contrast/saturation jitter strength (0 = off)", 0
    )


@dataclass
class ModelNameSection(Section):
    """The architecture (a name of ``convision.models.MODELS``)."""

    model: str = setting("", "architecture")


@dataclass
class BackboneSection(Section):
    """The pretrained network under the task's head."""

    backbone: str = setting("mobilenet_v2", "torchvision network under the task's head")
    weights: str = setting(
        "IMAGENET1K_V1",
        "backbone weights: a torchvision name (IMAGENET1K_V1, DEFAULT), a .pth file, or 'none'",
    )


@dataclass
class TrainConfig(Section):
    epochs: int = setting(20, "training epochs", 1)
    batch_size: int = setting(
        8, "global batch size (split across processes under torchrun)", 1
    )
    optimizer: str = setting("sgd", "sgd (with momentum) | adamw")
    lr: float = setting(0.01, "peak learning rate")
    momentum: float = setting(0.9, "SGD momentum", 0)
    weight_decay: float = setting(5e-4, "weight decay", 0)
    schedule: str = setting("poly", "learning-rate schedule: poly | cosine | constant")
    poly_power: float = setting(0.9, "power of the poly schedule", 0)
    warmup_epochs: float = setting(0.0, "linear warm-up length in epochs", 0)
    grad_clip: float = setting(0.0, "clip the gradient norm to this (0 = off)", 0)
    amp: bool = setting(True, "mixed precision on CUDA (ignored on CPU)")
    class_weights: str = setting(
        "", "comma-separated cross-entropy class weights (empty = none)"
    )
    sync_bn: bool = setting(
        True, "synchronise batch-norm statistics across processes under torchrun"
    )
    seed: int = setting(0, "random seed")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    out: str = setting(
        "runs/segment", "output folder for checkpoints, metrics and pictures"
    )
    resume: bool = setting(False, "continue from OUT/last.pt")
    overwrite: bool = setting(False, "start over even if OUT already holds a run")


class Settings:
    """Base of the task configs (dataclasses of ``data``, ``model``, ``train`` sections).

    A section's ``aliases`` maps deprecated setting names to their new names; a config's
    ``ordered`` lists ``(low, high)`` pairs of settings that must satisfy ``low <= high``.
    """

    ordered: ClassVar[tuple[tuple[str, str], ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            s.name: dataclasses.asdict(getattr(self, s.name))
            for s in dataclasses.fields(self)
        }

    def check(self) -> None:
        """Every value within its field's ``min`` and every ``ordered`` pair in order; raises ConfigError."""
        fields = _flat_fields(self)
        for name, (section, f) in fields.items():
            low = f.metadata.get("min")
            value = getattr(section, name)
            if low is not None and value < low:
                raise ConfigError(f"{name}: must be >= {low:g}, got {value}")
        for low_name, high_name in self.ordered:
            low, high = (
                getattr(fields[low_name][0], low_name),
                getattr(fields[high_name][0], high_name),
            )
            if low > high:
                raise ConfigError(
                    f"{low_name}/{high_name}: need {low_name} <= {high_name}, got {low:g} > {high:g}"
                )


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
            if isinstance(value, bool) or (
                isinstance(value, float) and not value.is_integer()
            ):
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


def aliases(cfg: Any) -> dict[str, str]:
    """Deprecated name -> current name, over the sections of ``cfg``."""
    return {
        old: new
        for section in _sections(cfg)
        for old, new in getattr(section, "aliases", {}).items()
    }


def apply(cfg: Any, values: dict[str, Any], where: str) -> Any:
    """Set flat ``values`` on the sections of ``cfg``; unknown names are errors, deprecated ones noted."""
    fields = _flat_fields(cfg)
    renamed = aliases(cfg)
    for name, value in values.items():
        key = str(name).replace("-", "_")
        if key in renamed and key not in fields:
            deprecated(key, renamed[key], where)
            key = renamed[key]
        if key not in fields:
            raise _unknown(str(name), sorted(fields), where)
        section, f = fields[key]
        setattr(section, key, _coerce(key, value, f.type, where))
    return cfg


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """``cls`` (a settings section) from a checkpoint's stored dict: renamed keys mapped, unknown ones dropped."""
    names = {f.name for f in dataclasses.fields(cls)}
    renamed = getattr(cls, "aliases", {})
    kept = {
        renamed.get(k, k): v for k, v in values.items() if renamed.get(k, k) in names
    }
    return cls(**kept)


def _unique_key_loader() -> type:
    """A yaml SafeLoader whose mappings refuse a key given twice, naming it and its lines."""

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"{loader.name}: line {line}: '{key}' is given twice (first on line {seen[key]})"
                )
            seen[key] = line
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping
    )
    return Loader


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The settings of a YAML file as one flat mapping (``data:`` / ``model:`` / ``train:`` sections accepted)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        with open(p) as stream:
            data = yaml.load(stream, Loader=_unique_key_loader())
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
            for k, v in value.items():  # sectioned files are accepted too
                if k in flat:
                    raise ConfigError(f"{p}: '{k}' is given twice")
                flat[k] = v
        elif key in flat:
            raise ConfigError(f"{p}: '{key}' is given twice")
        else:
            flat[key] = value
    return flat


def add_arguments(parser: argparse.ArgumentParser, cfg: Any) -> None:
    """One flag per setting; --help shows each default. Deprecated names are hidden flags."""
    for section, title in zip(_sections(cfg), ("data", "model", "training")):
        group = parser.add_argument_group(f"{title} settings")
        hints = typing.get_type_hints(type(section))
        for f in dataclasses.fields(section):
            flag = "--" + f.name.replace("_", "-")
            default = getattr(section, f.name)
            help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
            if hints[f.name] is bool:
                group.add_argument(
                    flag,
                    dest=f.name,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=help_text,
                )
            else:
                group.add_argument(
                    flag,
                    dest=f.name,
                    default=None,
                    metavar=hints[f.name].__name__.upper(),
                    help=help_text,
                )
    for old in aliases(cfg):
        parser.add_argument(
            "--" + old.replace("_", "-"), dest=old, default=None, help=argparse.SUPPRESS
        )


def from_args(
    args: argparse.Namespace,
    cfg: Any,
    recipe: Callable[[str], dict[str, Any]] | None = None,
) -> Any:
    """Defaults, then the model's ``recipe(model name)`` (if given), then ``--config`` YAML, then
    the flags that were given."""
    values = load_yaml(args.config) if getattr(args, "config", None) else {}
    names = [*_flat_fields(cfg), *aliases(cfg)]
    given = {
        name: getattr(args, name)
        for name in names
        if getattr(args, name, None) is not None
    }
    if recipe is not None:
        model = given.get(
            "model",
            values.get("model", getattr(getattr(cfg, "model", None), "model", "")),
        )
        apply(cfg, recipe(str(model)), where=f"recipe of {model}")
    if values:
        apply(cfg, values, where=str(args.config))
    apply(cfg, given, where="command line")
    return cfg


def parse_class_weights(text: str) -> list[float] | None:
    if not text.strip():
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"class_weights: expected comma-separated numbers, got {text!r}"
        ) from None
