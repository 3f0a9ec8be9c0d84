"""The retrain's fit step: synthetic items from the project's augment rules reach the training side only."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from core.label_config import kind_of
from core.project_settings import ProjectSettings
from plugins.models.linear import LogisticModel
from plugins.holdout import assign_holdout, split_indices
from worker.train import fit_and_measure

CONFIG = ('<View><Image name="img" value="$image"/><Choices name="label" toName="img">'
          '<Choice value="ok"/><Choice value="scratch"/></Choices></View>')


class RecordingModel(LogisticModel):
    """The logistic model, recording what each fit and each prediction saw."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fits: list[tuple[np.ndarray, np.ndarray]] = []
        self.predicted: list[np.ndarray] = []

    def fit(self, x, y, progress=None, augment=None):
        self.fits.append((np.array(x), np.array(y)))
        return super().fit(x, y, progress, augment)

    def predict_proba(self, x):
        self.predicted.append(np.array(x))
        return super().predict_proba(x)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """Real 8x8 digits as uint8 images: 0s are 'ok', 1s 'scratch' (two classes, 60 items)."""
    data = load_digits()
    keep = np.flatnonzero(data.target < 2)[:60]
    return (data.images[keep] * (255 / 16)).astype(np.uint8), data.target[keep].astype(np.int64)


def _run(settings: ProjectSettings):
    kind = kind_of(CONFIG)
    x, y = _digits()
    tasks = list(range(len(y)))
    train_idx, held_idx = split_indices(tasks, assign_holdout(tasks, kind.strata(y), 0.25, 0, {}))
    model = RecordingModel(2, committee=1)
    stages: list[str] = []
    metrics, synthetic, _, _ = fit_and_measure(model, kind, settings, x, y, train_idx, held_idx, on_stage=stages.append)
    return model, x, y, train_idx, held_idx, metrics, synthetic, stages


def test_a_retrain_with_augment_rules_trains_on_synthetic_items_and_measures_on_real_ones_only():
    rule = {"augmentation": "scratch", "source": ["ok"], "label": "scratch", "per_item": 1.0}
    model, x, y, train_idx, held_idx, metrics, synthetic, stages = _run(ProjectSettings(augment=[rule]))
    assert stages == ["train_holdout", "train_all"]
    (x_holdout_fit, y_holdout_fit), (x_all_fit, y_all_fit) = model.fits
    ok_train, ok_all = int((y[train_idx] == 0).sum()), int((y == 0).sum())
    # one synthetic scratch per real 'ok' item, after the real items, labeled scratch
    assert len(x_holdout_fit) == len(train_idx) + ok_train and len(x_all_fit) == len(y) + ok_all
    assert synthetic == [ok_all] and np.array_equal(x_all_fit[:len(y)], x)
    assert (y_all_fit[len(y):] == 1).all() and (y_holdout_fit[len(train_idx):] == 1).all()
    made = x_all_fit[len(y):].astype(int)
    assert all(not np.array_equal(m, src) for m, src in zip(made, x[y == 0].astype(int)))  # scratched copies
    # held-out metrics: exactly the real held-out images, none of them seen in the first fit
    assert len(model.predicted) == 1 and np.array_equal(model.predicted[0], x[held_idx])
    assert metrics["holdout_size"] == len(held_idx)
    seen = {m.tobytes() for m in x_holdout_fit}
    assert not any(img.tobytes() in seen for img in x[held_idx])


def test_without_augment_rules_every_fit_sees_the_real_items_only():
    model, x, y, train_idx, held_idx, metrics, synthetic, _ = _run(ProjectSettings())
    assert [len(f[0]) for f in model.fits] == [len(train_idx), len(y)] and synthetic == []
    assert 0.5 < metrics["holdout_accuracy"] <= 1.0
