"""The models ``convision summary`` describes: a convision model name, the notes' own networks
(``alexnet2012``, ``zfnet``: :mod:`convision.models.classic`), a torchvision classifier name, or a checkpoint; random weights, nothing downloaded (see :mod:`convision.nn.receptive_field`)."""

from __future__ import annotations

import contextlib
import inspect
import io
import sys
from pathlib import Path

import torchvision
from torch import nn

from convision.errors import ConfigError
from convision.models import MODELS, build_model
from convision.models.backbones import is_none
from convision.models.classic import PAPER_NETS
from convision.models.classification import ARCHS
from convision.tasks.base import load


def torchvision_classifiers() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def build(
    name: str,
    *,
    num_classes: int | None = None,
    backbone: str | None = None,
    weights: str | None = None,
) -> tuple[nn.Module, int]:
    """``(model, default input side)`` for a convision model name, a torchvision classifier name or a
    checkpoint path; random weights unless ``weights`` names a torchvision weight set (of the
    classifier, or of a convision model's backbone) available offline. Raises ``ConfigError``
    (one line) for anything else."""
    path = Path(name)
    if path.suffix in (".pt", ".pth", ".ckpt") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{name}: no such checkpoint")
        if weights:
            raise ConfigError(
                f"--weights: {name} is a checkpoint, with its own weights"
            )
        model = load(path)
        data = (model.train_config or {}).get(
            "data"
        ) or {}  # classify / localize: the input; segment: the scenes
        return model, int(
            getattr(model, "image_size", 0) or data.get("scene_size") or 224
        )
    if name in PAPER_NETS:
        if weights and not is_none(weights):
            raise ConfigError(
                f"--weights: {name} has no published weights; it is summarised with random ones"
            )
        builder, side = PAPER_NETS[name]
        kwargs = {"num_classes": num_classes} if num_classes is not None else {}
        return builder(**kwargs), side
    if name in MODELS:
        with _offline_weights(name, weights):
            model = _build_convision(
                name, num_classes=num_classes, backbone=backbone, weights=weights
            )
        return model, 224
    known = torchvision_classifiers()
    if name in known:
        kwargs = {"num_classes": num_classes} if num_classes is not None else {}
        if weights:
            try:
                kwargs["weights"] = torchvision.models.get_model_weights(name)[weights]
            except KeyError:
                raise ConfigError(
                    f"--weights: {name} has no weights {weights!r}"
                ) from None
        with _offline_weights(name, weights):
            return torchvision.models.get_model(name, **kwargs), 224
    raise ConfigError(
        f"summary: unknown model {name!r} (accepted: convision models {', '.join(MODELS)} (classifier takes --backbone); "
        f"the papers' networks {', '.join(PAPER_NETS)}; "
        f"torchvision classifiers {', '.join(known)}; or a convision checkpoint .pt)"
    )


@contextlib.contextmanager
def _offline_weights(name: str, weights: str | None):
    """A failed weight download (offline) as one line: torch.hub
    stderr is shown only if the download works."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            yield
    except (OSError, RuntimeError) as e:
        if not weights:
            sys.stdout.write(said.getvalue())
            raise
        raise ConfigError(
            f"--weights: {name} {weights} cannot be loaded here ({type(e).__name__}; offline, "
            "only MobileNetV2's IMAGENET1K_V1 is cached)"
        ) from None
    sys.stdout.write(said.getvalue())


def _build_convision(
    name: str, *, num_classes: int | None, backbone: str | None, weights: str | None
) -> nn.Module:
    params = inspect.signature(MODELS[name]).parameters
    kwargs: dict = {"weights": weights}
    # classifier, localizer: the backbone is a whole torchvision network (the builder's ``arch``)
    key = "arch" if "arch" in params else "backbone"
    if key == "arch":
        if backbone is None and params["arch"].default is inspect.Parameter.empty:
            raise ConfigError(
                f"--backbone: {name!r} needs a backbone network (known: {', '.join(ARCHS)})"
            )
        if "strategy" in params and weights is None:
            kwargs["strategy"] = "scratch"  # random weights
    if backbone is not None:
        if key not in params:
            raise ConfigError(f"--backbone: model {name} has no backbone option")
        kwargs[key] = backbone
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    elif (
        "num_classes" in params
        and params["num_classes"].default is inspect.Parameter.empty
    ):
        kwargs["num_classes"] = 10
    return build_model(name, **kwargs)
