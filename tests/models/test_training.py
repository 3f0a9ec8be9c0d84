"""The training loop: held-out split, balanced sampling, early stopping, determinism, augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from plugins.models.networks import build_network
from plugins.models.training import (
    TrainConfig,
    batches,
    channel_stats,
    conform,
    epoch_order,
    evaluate,
    stratified_split,
    train,
)

torch.set_num_threads(1)


def _toy(n: int, seed: int, size: int = 8, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 1) uint8 images: a bright square in a class-specific quadrant, on noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = rng.integers(0, 60, (n, size, size, 1))
    q = size // 2
    corners = [(0, 0), (q, q), (0, q)]
    for i, label in enumerate(y):
        r, c = corners[label]
        x[i, r:r + q, c:c + q] += 150
    return x.astype(np.uint8), y


def _net(seed: int = 0, n_classes: int = 3):
    torch.manual_seed(seed)
    return build_network("small_cnn", n_classes, channels=1, dropout=0.3)


def _fit(net, x, y, **config):
    mean, std = channel_stats(x)
    log: list[dict] = []
    settings = {"epochs": 3, "batch_size": 16, "val_fraction": 0.0} | config
    metrics = train(net, x, y, TrainConfig(**settings), mean=mean, std=std, progress=log.append)
    return metrics, log


def test_split_is_stratified_and_keeps_every_class_in_training() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 2])
    train_idx, val_idx = stratified_split(labels, 0.2, np.random.default_rng(0))
    assert len(val_idx) == round(0.2 * len(labels))
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[val_idx], minlength=3)[:2].tolist() == [10, 6]
    assert set(labels[train_idx]) == {0, 1, 2}


def test_split_is_empty_when_no_class_has_two_items_or_the_fraction_is_zero() -> None:
    _, val_idx = stratified_split(np.arange(5), 0.5, np.random.default_rng(0))
    assert len(val_idx) == 0
    _, val_idx = stratified_split(np.zeros(20, int), 0.0, np.random.default_rng(0))
    assert len(val_idx) == 0


def test_balanced_order_draws_rare_classes_as_often_as_common_ones() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    gen = torch.Generator().manual_seed(0)
    drawn = np.concatenate([labels[epoch_order(labels, True, gen)] for _ in range(50)])
    assert abs((drawn == 1).mean() - 0.5) < 0.03
    plain = epoch_order(labels, False, gen)
    assert sorted(plain.tolist()) == list(range(100))


def test_batches_never_leave_a_single_item_alone() -> None:
    chunks = batches(np.arange(9), 4)
    assert [len(c) for c in chunks] == [4, 5]
    assert np.concatenate(chunks).tolist() == list(range(9))


def test_training_learns_a_learnable_toy_set() -> None:
    x, y = _toy(150, seed=0)
    net = _net()
    metrics, log = _fit(net, x, y, epochs=6)
    x_test, y_test = _toy(100, seed=1)
    mean, std = channel_stats(x)
    accuracy, _ = evaluate(net, x_test, y_test, mean, std, torch.device("cpu"))
    assert accuracy > 0.9
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert set(log[0]) == {"phase", "epoch", "epochs", "loss", "val_accuracy", "lr"}
    assert log[-1]["loss"] < log[0]["loss"]
    assert metrics["held_out"] == 0 and "val_accuracy" not in metrics and metrics["epochs_run"] == 6


@pytest.mark.parametrize("epochs", [1, 4, 7])
def test_cosine_schedule_follows_the_formula_and_constant_keeps_the_rate(epochs: int) -> None:
    x, y = _toy(30, seed=0)
    _, log = _fit(_net(), x, y, epochs=epochs, lr=2e-3, schedule="cosine", min_epoch_items=16)
    expected = [2e-3 * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]
    assert [r["lr"] for r in log] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    _, log = _fit(_net(), x, y, epochs=epochs, lr=2e-3, schedule="constant", min_epoch_items=16)
    assert [r["lr"] for r in log] == [2e-3] * epochs


def test_a_held_out_split_below_min_held_out_is_trained_on_instead() -> None:
    x, y = _toy(60, seed=0)  # 10% held out = 6 items
    metrics, _ = _fit(_net(), x, y, epochs=1, val_fraction=0.1, min_held_out=7)
    assert metrics["held_out"] == 0 and "val_accuracy" not in metrics
    metrics, log = _fit(_net(), x, y, epochs=1, val_fraction=0.1, min_held_out=6)
    assert metrics["held_out"] == 6 and log[0]["val_accuracy"] is not None
    assert TrainConfig().min_held_out >= 50  # the default: no early stopping on a handful of items


def test_two_trainings_with_the_same_seed_give_identical_weights() -> None:
    x, y = _toy(60, seed=0)
    weights = []
    for _ in range(2):
        net = _net(seed=0)
        _fit(net, x, y, epochs=2, val_fraction=0.2)
        weights.append(net.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_amp_changes_nothing_on_the_cpu() -> None:
    x, y = _toy(40, seed=0)
    nets = [_net(seed=0), _net(seed=0)]
    _fit(nets[0], x, y, epochs=1, amp=True)
    _fit(nets[1], x, y, epochs=1, amp=False)
    for key, value in nets[0].state_dict().items():
        assert torch.equal(value, nets[1].state_dict()[key])


def test_early_stopping_stops_and_restores_the_best_held_out_epoch() -> None:
    rng = np.random.default_rng(0)
    x, _ = _toy(80, seed=0)
    y = rng.integers(0, 3, 80)  # labels unrelated to the images: held-out accuracy cannot improve for long
    net = _net()
    metrics, log = _fit(net, x, y, epochs=40, patience=2, val_fraction=0.25, min_held_out=10, lr=3e-3)
    assert metrics["stopped_early"] == 1.0 and metrics["epochs_run"] < 40
    assert len(log) == metrics["epochs_run"]
    assert metrics["best_epoch"] == metrics["epochs_run"] - 2
    _, val_idx = stratified_split(y, 0.25, np.random.default_rng(0))
    mean, std = channel_stats(x)
    accuracy, _ = evaluate(net, x[val_idx], y[val_idx], mean, std, torch.device("cpu"))
    assert accuracy == pytest.approx(metrics["val_accuracy"])
    assert accuracy == pytest.approx(max(r["val_accuracy"] for r in log))


def test_augmentation_is_applied_to_every_training_image_every_epoch() -> None:
    x, y = _toy(30, seed=0)
    seen: list[tuple] = []

    def augment(image: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
        seen.append((image.shape, image.dtype, label))
        return np.fliplr(image)

    mean, std = channel_stats(x)
    train(_net(), x, y, TrainConfig(epochs=2, batch_size=8, val_fraction=0.0, class_balanced=False,
                                         min_epoch_items=1),
          mean=mean, std=std, augment=augment)
    assert len(seen) == 2 * 30
    assert {s[0] for s in seen} == {(8, 8)} and {s[1] for s in seen} == {np.dtype(np.uint8)}
    assert sorted(s[2] for s in seen[:30]) == sorted(y.tolist())


def test_conform_restores_size_and_rejects_channel_changes() -> None:
    out = conform(np.full((10, 12), 300.0), (8, 8, 1))
    assert out.shape == (8, 8, 1) and out.dtype == np.uint8 and out.max() == 255
    with pytest.raises(ValueError, match="channel count from 1 to 3"):
        conform(np.zeros((8, 8, 3), np.uint8), (8, 8, 1))


def test_small_labeled_sets_get_at_least_min_epoch_items_per_epoch() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = np.array([0, 1, 1, 0, 1])
    plain = epoch_order(labels, False, gen, min_items=12)
    assert len(plain) == 12
    assert np.array_equal(np.sort(plain[:5]), np.arange(5))  # whole shuffled passes, then a partial one
    assert len(epoch_order(labels, True, gen, min_items=12)) == 12
    assert len(epoch_order(np.arange(20) % 2, False, gen, min_items=12)) == 20  # never fewer than the set
