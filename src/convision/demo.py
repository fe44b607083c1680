"""``make demo``: FCN-8s on ImageNet MobileNetV2, trained on the built-in synthetic scenes,
evaluated on their validation split, with pictures of its predictions."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from convision.config import SegmentConfig

# The budget: ~4 minutes of training on a 2-core CPU (see README, "Numbers").
DEMO_SETTINGS = {
    "model": "fcn8s",
    "backbone": "mobilenet_v2",
    "weights": "IMAGENET1K_V1",
    "epochs": 20,
    "batch_size": 8,
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "schedule": "poly",
    "warmup_epochs": 0.5,
    "scale_min": 0.75,
    "scale_max": 1.5,
}


def demo_config(out: str, epochs: int | None = None) -> SegmentConfig:
    from convision.config import apply

    cfg = apply(SegmentConfig(), DEMO_SETTINGS, where="demo")
    cfg.train.out = out
    cfg.train.overwrite = True
    if epochs is not None:
        cfg.train.epochs = epochs
    return cfg


def run_demo(out: str = "runs/demo", epochs: int | None = None, progress: bool = True) -> int:
    from convision.api import evaluate, load, train
    from convision.metrics.segmentation import format_table

    cfg = demo_config(out, epochs)
    print(f"convision demo: FCN-8s (MobileNetV2, ImageNet) on {cfg.data.num_train} built-in scenes, "
          f"{cfg.train.epochs} epochs -> {out}/")
    start = time.time()
    result = train(cfg, progress=progress)
    train_s = time.time() - start
    model = load(result["best"])
    metrics = evaluate(model, progress=progress)
    print(format_table(metrics, metrics["classes"]))
    metrics["train_seconds"] = round(train_s, 1)
    Path(out, "eval_val.json").write_text(json.dumps(metrics, indent=2))
    picture = Path(out, "predictions.png")
    save_prediction_grid(model, picture, count=6, seed=cfg.data.data_seed)
    print(f"trained in {train_s / 60:.1f} min; mIoU {metrics['miou']:.3f}; pictures: {picture}, {Path(out, 'curves.png')}")
    return 0


def validation_samples(count: int, seed: int = 0, model=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) pairs from the built-in validation split, as uint8 arrays."""
    from convision.data.segmentation import SyntheticSegmentation

    data = (getattr(model, "train_config", None) or {}).get("data", {}) if model is not None else {}
    ds = SyntheticSegmentation(split="val", num_images=max(count, data.get("num_val", count)),
                               image_size=data.get("image_size", 128), num_classes=data.get("num_classes", 6),
                               seed=data.get("data_seed", seed))
    pairs = []
    for i in range(count):
        image, mask = ds[i]
        pairs.append((image.permute(1, 2, 0).numpy(), mask.numpy().astype(np.uint8)))
    return pairs


def save_prediction_grid(model, path: str | Path, count: int = 6, seed: int = 0) -> None:
    """Rows of image | ground truth | prediction for validation scenes."""
    from convision.api import predict
    from convision.viz import colorize, save_grid

    rows = []
    for image, mask in validation_samples(count, seed, model):
        pred = predict(model, image)[0]
        rows.append([image, colorize(mask, model.colors), colorize(pred, model.colors)])
    save_grid(rows, ["image", "ground truth", f"{model.spec['name']} prediction"], path)
