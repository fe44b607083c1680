"""Classification metric, task, and feature caching (equal to training through the frozen backbone)."""

from __future__ import annotations

import math

import pytest
import torch

from convision.data.classification import (
    ImageFolderClassification,
    classification_eval_transforms,
)
from convision.metrics.classification import ClassificationMetric, format_table
from convision.models.classification import build_classifier
from convision.tasks.classify import (
    ClassificationTask,
    ClassifyTrainConfig,
    FeatureDataset,
    GroupedTrainer,
    compute_features,
)
from tests.data.test_classification import write_folder

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
    assert (
        r["per_class_precision"][0] is None
        and r["per_class_f1"][1] == 0.0
        and r["per_class_f1"][0] is None
    )
    assert math.isclose(r["macro_f1"], 0.0)
    assert m.predictions == [6, 6] and m.targets == [2, 1] and 0 < m.confidences[0] < 1


def test_feature_cache_trains_the_head_like_the_uncached_path(tmp_path):
    root = write_folder(tmp_path / "d", per_class=3, size=(32, 32))
    data = ImageFolderClassification(
        root,
        transforms=classification_eval_transforms(
            32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        ),
    )
    heads = []
    for cached in (False, True):
        torch.manual_seed(0)
        model = build_classifier(
            "mobilenet_v2", 4, weights="IMAGENET1K_V1", strategy="feature-extract"
        )
        init = model.head.weight.detach().clone()
        train_set = data
        if cached:
            feats, labels = compute_features(model, data, batch_size=6)
            assert feats.shape == (12, 1280)
            train_set = FeatureDataset(feats, labels, data.classes)
        cfg = ClassifyTrainConfig(
            epochs=1,
            batch_size=6,
            device="cpu",
            out=str(tmp_path / f"run{cached}"),
            lr=0.01,
        )
        trainer = GroupedTrainer(
            task=ClassificationTask(4),
            model=model,
            train_set=train_set,
            val_set=train_set,
            cfg=cfg,
            meta={"task": "classify"},
            workers=0,
            progress=False,
            head_lr_mult=100,
            log=lambda m: None,
        )
        result = trainer.fit()
        heads.append(
            (
                model.head.weight.detach().clone(),
                result["history"][0]["train_loss"],
                result["best_metric"],
            )
        )
    (w0, loss0, acc0), (w1, loss1, acc1) = heads
    assert not torch.allclose(w0, init)  # the head did train
    torch.testing.assert_close(w0, w1, rtol=1e-4, atol=1e-6)
    assert loss0 == pytest.approx(loss1, rel=1e-5) and acc0 == acc1


def test_gradual_unfreezing_opens_one_stage_from_the_top_per_epoch(tmp_path):
    root = write_folder(tmp_path / "d", per_class=2, size=(32, 32))
    data = ImageFolderClassification(
        root,
        transforms=classification_eval_transforms(
            32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        ),
    )
    torch.manual_seed(0)
    model = build_classifier("resnet18", 4, weights=None, strategy="finetune")
    stage_names = [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]

    def by_stage(state: dict) -> list[dict]:
        return [
            {k: v.clone() for k, v in state.items() if k.split(".")[1] in names}
            for names in stage_names
        ]

    snapshots = [{k: v.clone() for k, v in model.state_dict().items()}]
    logs: list[str] = []

    class Recording(GroupedTrainer):
        def _train_epoch(self, *args, **kwargs):
            result = super()._train_epoch(*args, **kwargs)
            snapshots.append({k: v.clone() for k, v in self.model.state_dict().items()})
            return result

    cfg = ClassifyTrainConfig(
        epochs=3, batch_size=4, device="cpu", out=str(tmp_path / "run"), lr=0.01
    )
    Recording(
        task=ClassificationTask(4),
        model=model,
        train_set=data,
        val_set=None,
        cfg=cfg,
        meta={"task": "classify"},
        workers=0,
        progress=False,
        head_lr_mult=10,
        unfreeze_every=1,
        log=logs.append,
    ).fit()
    stages = [by_stage(s) for s in snapshots]
    for epoch, trainable in ((1, 0), (2, 1), (3, 2)):
        before, after = stages[epoch - 1], stages[epoch]
        moved = [
            any(not torch.equal(v, after[i][k]) for k, v in before[i].items())
            for i in range(5)
        ]
        assert moved == [False] * (5 - trainable) + [True] * trainable, (epoch, moved)
        assert not torch.equal(
            snapshots[epoch - 1]["head.weight"], snapshots[epoch]["head.weight"]
        )
    assert any("top 2 of 5 backbone stages" in line for line in logs)
