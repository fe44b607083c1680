"""Classification metric, task, and feature caching (equal to training through the frozen backbone)."""
from __future__ import annotations

import math

import pytest
import torch

from convision.data.classification import ImageFolderClassification, classification_eval_transforms
from convision.metrics.classification import ClassificationMetric, format_table
from convision.models.classification import build_classifier
from convision.tasks.classify import (
    ClassificationTask,
    ClassifyTrainConfig,
    FeatureDataset,
    GroupedTrainer,
    compute_features,
)
from test_classification_data import write_folder

torch.set_num_threads(1)


def test_metric_counts_by_hand():
    m = ClassificationMetric(3)
    logits = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 5, 0], [0, 0, 5], [0, 5, 0]])
    m.update(logits, torch.tensor([0, 1, 2, 2, 1]))
    r = m.compute()
    assert r["accuracy"] == pytest.approx(0.8)
    assert r["confusion_matrix"] == [[1, 0, 0], [0, 2, 0], [0, 1, 1]]
    assert r["per_class_precision"] == pytest.approx([1.0, 2 / 3, 1.0])
    assert r["per_class_recall"] == pytest.approx([1.0, 1.0, 0.5])
    assert r["per_class_f1"] == pytest.approx([1.0, 0.8, 2 / 3])
    assert "top5" not in r
    text = format_table({**r, "num_images": 5}, ["a", "b", "c"])
    assert "accuracy 0.800" in text and "c " in text


def test_top5_and_absent_classes():
    m = ClassificationMetric(7, keep_predictions=True)
    logits = torch.arange(7.0).repeat(2, 1)  # ranking 6 > 5 > ... > 0
    m.update(logits, torch.tensor([2, 1]))  # class 2 is 5th, class 1 is 6th
    r = m.compute()
    assert r["top5"] == pytest.approx(0.5) and r["accuracy"] == 0.0
    assert r["per_class_precision"][0] is None and r["per_class_f1"][1] == 0.0 and r["per_class_f1"][0] is None
    assert math.isclose(r["macro_f1"], 0.0)
    assert m.predictions == [6, 6] and m.targets == [2, 1] and 0 < m.confidences[0] < 1


def test_feature_cache_trains_the_head_like_the_uncached_path(tmp_path):
    root = write_folder(tmp_path / "d", per_class=3, size=(32, 32))
    data = ImageFolderClassification(root, transforms=classification_eval_transforms(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    heads = []
    for cached in (False, True):
        torch.manual_seed(0)
        model = build_classifier("mobilenet_v2", 4, weights="IMAGENET1K_V1", strategy="feature-extract")
        init = model.head.weight.detach().clone()
        train_set = data
        if cached:
            feats, labels = compute_features(model, data, batch_size=6)
            assert feats.shape == (12, 1280)
            train_set = FeatureDataset(feats, labels, data.classes)
        cfg = ClassifyTrainConfig(epochs=1, batch_size=6, device="cpu", out=str(tmp_path / f"run{cached}"), lr=0.01)
        trainer = GroupedTrainer(task=ClassificationTask(4), model=model, train_set=train_set, val_set=train_set, cfg=cfg,
                                 meta={"task": "classify"}, workers=0, progress=False, head_lr_mult=100, log=lambda m: None)
        result = trainer.fit()
        heads.append((model.head.weight.detach().clone(), result["history"][0]["train_loss"], result["best_metric"]))
    (w0, loss0, acc0), (w1, loss1, acc1) = heads
    assert not torch.allclose(w0, init)  # the head did train
    torch.testing.assert_close(w0, w1, rtol=1e-4, atol=1e-6)
    assert loss0 == pytest.approx(loss1, rel=1e-5) and acc0 == acc1
