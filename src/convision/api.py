"""The Python entry points: train, load, evaluate, predict.

    import convision
    cfg = convision.SegmentConfig()
    cfg.train.epochs = 2
    run = convision.train(cfg)                      # {"best": path, "last": path, "best_metric": ...}
    model = convision.load(run["best"])             # ready nn.Module in eval mode
    metrics = convision.evaluate(model)             # built-in validation split, original resolution
    masks = convision.predict(model, ["street.jpg"])  # list of HxW class-index arrays
"""
from __future__ import annotations

import copy
import glob
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from convision import __version__
from convision.config import DataConfig, SegmentConfig, parse_class_weights
from convision.errors import CheckpointError, ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _resolve_device(device: str | torch.device | None) -> torch.device:
    from convision.engine.distributed import resolve_device

    return resolve_device("auto" if device is None else device)


def model_kwargs(cfg: SegmentConfig, num_classes: int) -> dict[str, Any]:
    """The builder arguments for ``cfg.model``: only those the chosen architecture takes.

    A setting changed from its default that the architecture does not take is an error
    (``--faithful`` on a model without that option), not silently dropped.
    """
    import inspect

    from convision.config import ModelConfig
    from convision.models import MODELS

    m = cfg.model
    if m.model not in MODELS:
        raise ConfigError(f"model: unknown model {m.model!r} (known: {', '.join(MODELS)})")
    if not MODELS[m.model].__module__.startswith("convision.models.segmentation"):
        known = [n for n, b in MODELS.items() if b.__module__.startswith("convision.models.segmentation")]
        raise ConfigError(f"model: {m.model!r} is not a segmentation model (segmentation: {', '.join(known)})")
    accepted = inspect.signature(MODELS[m.model]).parameters
    weights = None if m.weights.lower() in ("", "none", "null") else m.weights
    wanted = {
        "num_classes": num_classes,
        "backbone": m.backbone,
        "weights": weights,
        "faithful": m.faithful,
        "learnable_upsampling": m.learnable_upsampling,
    }
    defaults = ModelConfig()
    kwargs = {}
    for key, value in wanted.items():
        if key in accepted:
            kwargs[key] = value
        elif key != "num_classes" and getattr(m, key) != getattr(defaults, key):
            raise ConfigError(f"{key}: model {m.model} has no such option")
    return kwargs


def build_datasets(data: DataConfig, crop_size: int | None = None):
    """Training set (with augmentation) and validation set (original resolution)."""
    from convision.data.segmentation import build_segmentation_dataset, default_crop_size
    from convision.data.transforms import segmentation_eval_transforms, segmentation_train_transforms

    train_set = build_segmentation_dataset(data, "train")
    crop = crop_size or data.crop_size or default_crop_size(train_set)
    train_set.transforms = segmentation_train_transforms(
        crop_size=crop, scale_range=(data.scale_min, data.scale_max), hflip=data.hflip, color_jitter=data.color_jitter
    )
    val_set = build_segmentation_dataset(data, "val", transforms=segmentation_eval_transforms())
    return train_set, val_set


def train(cfg: SegmentConfig | None = None, *, progress: bool = True, validate_data: bool = True) -> dict[str, Any]:
    """Train a segmentation model as configured; works unchanged under ``torchrun``.

    Returns ``{"best": path, "last": path, "best_metric": float, "best_epoch": int, "history": [...]}``.
    """
    from convision.engine import seed_everything
    from convision.engine.checkpoint import load_checkpoint, load_matching_state
    from convision.engine.distributed import cleanup, init_distributed
    from convision.engine.trainer import Trainer
    from convision.models import build_model
    from convision.tasks.segment import SegmentationTask

    cfg = cfg if cfg is not None else SegmentConfig()
    dist = init_distributed(cfg.train.device)
    try:
        train_set, val_set = build_datasets(cfg.data)
        if validate_data and dist.is_main:
            train_set.validate(progress=progress)
            val_set.validate(progress=progress)
        classes = list(train_set.classes)
        if val_set.classes != train_set.classes:
            raise DataError(f"{cfg.data.data}: training and validation splits disagree on the classes")
        weights = parse_class_weights(cfg.train.class_weights)
        if weights is not None and len(weights) != len(classes):
            raise ConfigError(f"class_weights: {len(weights)} values given for {len(classes)} classes")

        seed_everything(cfg.train.seed)
        name = cfg.model.model
        kwargs = model_kwargs(cfg, len(classes))
        model = build_model(name, **kwargs)
        # the builder's own record of its arguments includes its defaults, so a checkpoint
        # rebuilds the same network even if a default changes later
        kwargs = dict(getattr(model, "spec", {}).get("kwargs", kwargs))
        if cfg.model.init_from and not cfg.train.resume:
            state = load_checkpoint(cfg.model.init_from)["state_dict"]
            loaded, skipped = load_matching_state(model, state)
            if dist.is_main:
                print(f"init-from {cfg.model.init_from}: {len(loaded)} tensors loaded, new: {', '.join(skipped) or 'none'}")

        from convision.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        meta = {
            "task": "segment",
            "model": {"name": name, "kwargs": kwargs},
            "classes": classes,
            "colors": [list(map(int, c)) for c in train_set.colors],
            "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "config": cfg.to_dict(),
        }
        task = SegmentationTask(len(classes), class_weights=weights)
        trainer = Trainer(
            task=task, model=model, train_set=train_set, val_set=val_set, cfg=cfg.train, meta=meta,
            workers=cfg.data.workers, dist=dist, progress=progress,
        )
        result = trainer.fit()
    finally:
        cleanup()
    out = Path(cfg.train.out)
    return {"best": str(out / "best.pt"), "last": str(out / "last.pt"), **result}


def load(path: str | os.PathLike, device: str | torch.device | None = "cpu") -> torch.nn.Module:
    """Rebuild a model from a convision checkpoint alone, in eval mode.

    The module carries what prediction needs: ``.classes``, ``.colors``, ``.normalization``,
    ``.task`` and ``.spec`` (architecture name and arguments).
    """
    from convision.engine.checkpoint import load_checkpoint
    from convision.models import build_model

    ckpt = load_checkpoint(path)
    for key in ("model", "state_dict", "classes", "normalization"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: not a convision model checkpoint (no '{key}')")
    spec = ckpt["model"]
    kwargs = dict(spec["kwargs"])
    kwargs["weights"] = None  # the checkpoint's own weights replace any pretrained ones
    model = build_model(spec["name"], **kwargs)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit {spec['name']}: {first}") from None
    model.classes = list(ckpt["classes"])
    model.colors = [tuple(c) for c in ckpt.get("colors") or []]
    model.normalization = dict(ckpt["normalization"])
    model.task = ckpt.get("task", "segment")
    model.spec = copy.deepcopy(spec)
    model.train_config = ckpt.get("config", {})
    return model.to(_resolve_device(device)).eval()


def _as_model(model: torch.nn.Module | str | os.PathLike, device) -> torch.nn.Module:
    if isinstance(model, (str, os.PathLike)):
        return load(model, device=device)
    if not hasattr(model, "normalization"):
        raise ConfigError("model: pass a path or a model returned by convision.load()")
    return model.to(device).eval()


def evaluate(
    model: torch.nn.Module | str | os.PathLike,
    data: str | DataConfig | None = None,
    *,
    split: str = "val",
    batch_size: int = 4,
    workers: int = 2,
    device: str | None = "auto",
    progress: bool = True,
    fmt: str = "auto",
    crf: dict[str, Any] | bool | None = None,
) -> dict[str, Any]:
    """Metrics over a whole split at the original resolution (pixel acc, mean acc, mIoU, fwIoU,
    boundary F, per class).

    ``data`` defaults to the data set the model was trained on (for the built-in scenes, the same
    generator settings); a folder path or a DataConfig selects another.

    ``crf``: None (default) for the network's argmax; ``True`` or a dict of
    :func:`convision.nn.crf.dense_crf` settings (``{"iterations": 5, "sxy_bilateral": 20, ...}``,
    missing ones take the defaults) to refine each image's softmax with a dense CRF first. The CRF
    needs the raw uint8 image, so the data set is then read without transforms and every image
    goes through :func:`convision.tasks.segment.predict_probabilities` on its own (batch 1, the
    same normalisation as the eval transforms; ``batch_size`` is not used); the settings are
    recorded as ``metrics["crf"]``.
    """
    from convision.data.segmentation import build_segmentation_dataset
    from convision.data.transforms import segmentation_eval_transforms
    from convision.engine.trainer import evaluate as run_evaluation
    from convision.nn.crf import crf_settings
    from convision.tasks.segment import SegmentationTask

    settings = crf_settings(crf)
    dev = _resolve_device(device)
    net = _as_model(model, dev)
    data_cfg = _data_config(net, data, fmt)
    transforms = None if settings else segmentation_eval_transforms(
        mean=net.normalization["mean"], std=net.normalization["std"])
    dataset = build_segmentation_dataset(data_cfg, split, transforms=transforms)
    if len(dataset.classes) != len(net.classes):
        raise DataError(f"{data_cfg.data}: the data set has {len(dataset.classes)} classes but the model predicts {len(net.classes)}")
    task = SegmentationTask(len(net.classes))
    if settings:
        metrics = _evaluate_with_crf(task, net, dataset, settings, workers=workers, device=dev, progress=progress)
        metrics["crf"] = dict(settings)
    else:
        metrics = run_evaluation(task, net, dataset, batch_size=batch_size, workers=workers, device=dev,
                                 progress=progress)
    metrics["classes"] = list(net.classes)
    metrics["num_images"] = len(dataset)
    return metrics


@torch.no_grad()
def _evaluate_with_crf(task, net: torch.nn.Module, dataset, settings: dict[str, Any], *, workers: int,
                       device: torch.device, progress: bool) -> dict[str, Any]:
    """One image at a time: softmax at the original resolution -> dense CRF -> argmax -> metric.
    Under torchrun every process takes every W-th image and the metric is all-reduced."""
    import sys

    import torch.distributed as dist
    from tqdm import tqdm

    from convision.nn.crf import dense_crf
    from convision.tasks.segment import predict_probabilities

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    indices = list(range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=None, num_workers=workers,
        persistent_workers=False)
    metric = task.new_metric()
    for image, mask in tqdm(loader, total=len(indices), desc="val+crf", leave=False, file=sys.stderr,
                            disable=not progress or rank != 0, dynamic_ncols=True):
        rgb = torch.as_tensor(image).permute(1, 2, 0).numpy()
        probs = predict_probabilities(net, rgb, net.normalization, device).cpu().numpy()
        refined = dense_crf(rgb, probs, **settings)
        metric.update(torch.from_numpy(refined.argmax(0))[None], torch.as_tensor(mask).long()[None])
    metric.reduce_()
    return metric.compute()


def _data_config(model: torch.nn.Module, data: str | DataConfig | None, fmt: str) -> DataConfig:
    if isinstance(data, DataConfig):
        return data
    trained = (getattr(model, "train_config", None) or {}).get("data", {})
    cfg = DataConfig(**{k: v for k, v in trained.items() if k in DataConfig.__dataclass_fields__})
    if data is not None:
        cfg.data = str(data)
    if fmt != "auto" or data is not None:
        cfg.format = fmt
    return cfg


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Image files from paths, folders (their images, sorted) and glob patterns."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files: list[Path] = []
    for item in items:
        text = str(item)
        p = Path(text)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(text, recursive=True) if Path(q).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{text}: pattern matches no images")
            files.extend(found)
        else:
            raise DataError(f"{text}: no such file or folder")
    if not files:
        raise DataError("predict: no input images given")
    return files


def predict(
    model: torch.nn.Module | str | os.PathLike,
    images: str | os.PathLike | np.ndarray | Sequence[str | os.PathLike | np.ndarray],
    *,
    device: str | None = "auto",
    return_probabilities: bool = False,
    crf: dict[str, Any] | bool | None = None,
) -> list[np.ndarray]:
    """Class-index masks (uint8 HxW, original resolution) for images given as paths, a folder,
    a glob, or RGB uint8 arrays. With ``return_probabilities`` the list holds CxHxW float arrays.
    ``crf`` (True or a dict of :func:`convision.nn.crf.dense_crf` settings) refines each image's
    softmax with a dense CRF on the image first (the probabilities returned are then the CRF's)."""
    from convision.data.io import read_image
    from convision.nn.crf import crf_settings, dense_crf
    from convision.tasks.segment import predict_probabilities

    settings = crf_settings(crf)
    dev = _resolve_device(device)
    net = _as_model(model, dev)
    if isinstance(images, np.ndarray):
        arrays = [images]
    elif isinstance(images, (list, tuple)) and images and all(isinstance(i, np.ndarray) for i in images):
        arrays = list(images)
    else:
        arrays = [read_image(p) for p in expand_inputs(images)]
    out = []
    for arr in arrays:
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise DataError(f"predict: expected an RGB uint8 array HxWx3, got {arr.dtype} {tuple(arr.shape)}")
        probs = predict_probabilities(net, arr, net.normalization, dev)
        if settings:
            probs = dense_crf(arr, probs, **settings)
        out.append(probs.cpu().numpy() if return_probabilities else probs.argmax(0).to(torch.uint8).cpu().numpy())
    return out


def predict_to_folder(
    model: torch.nn.Module, inputs: Any, out: str | os.PathLike, *, alpha: float = 0.5, device: str | None = "auto",
    crf: dict[str, Any] | bool | None = None,
) -> int:
    """Segment every input image and write ``out/masks`` (palette PNG of class indices, as VOC),
    ``out/color`` (RGB colour masks) and ``out/overlay`` (colour over the image). Returns the count.
    ``crf``: as for :func:`predict`."""
    from convision.nn.crf import crf_settings
    from PIL import Image
    from tqdm import tqdm

    from convision.data.io import read_image
    from convision.viz import colorize, overlay, voc_palette

    settings = crf_settings(crf)
    files = expand_inputs(inputs)
    dev = _resolve_device(device)
    colors = list(model.colors) or voc_palette(len(model.classes))
    palette = [v for c in (colors + voc_palette(256))[:256] for v in c]
    root = Path(out)
    for sub in ("masks", "color", "overlay"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for path in tqdm(files, desc="predict", unit="img", disable=len(files) < 2):
        stem = path.stem if path.stem not in seen else f"{path.parent.name}_{path.stem}"
        seen.add(stem)
        image = read_image(path)
        mask = predict(model, image, device=dev, crf=settings)[0]
        indexed = Image.fromarray(mask, mode="P")
        indexed.putpalette(palette)
        indexed.save(root / "masks" / f"{stem}.png")
        Image.fromarray(colorize(mask, colors)).save(root / "color" / f"{stem}.png")
        Image.fromarray(overlay(image, mask, colors, alpha=alpha)).save(root / "overlay" / f"{stem}.png")
    return len(files)
