"""Learning loss (Yoo & Kweon, CVPR 2019): the ranking loss, the module, and its training beside the net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from plugins.models import build_model
from plugins.models.learning_loss import LossHeadConfig, LossPredictionModule, feature_dims, ranking_loss
from plugins.models.networks import build_network
from plugins.models.training import TrainConfig, channel_stats, train
from plugins.strategies import Input

torch.set_num_threads(1)


def _slow_ranking_loss(pred: list[float], true: list[float], margin: float) -> float:
    """The paper's loss written pair by pair: item i meets item B-1-i."""
    b = len(pred)
    terms = []
    for i in range(b // 2):
        j = b - 1 - i
        sign = 1.0 if true[i] > true[j] else -1.0
        terms.append(max(0.0, -sign * (pred[i] - pred[j]) + margin))
    return sum(terms) / len(terms) if terms else 0.0


@pytest.mark.parametrize(("batch", "margin"), [(8, 1.0), (7, 1.0), (10, 0.3), (2, 2.0), (1, 1.0)])
def test_ranking_loss_equals_the_pairwise_reference(batch: int, margin: float) -> None:
    gen = torch.Generator().manual_seed(batch)
    pred = torch.randn(batch, generator=gen, dtype=torch.float64)
    true = torch.rand(batch, generator=gen, dtype=torch.float64)
    if batch >= 4:
        true[1] = true[batch - 2]  # a tie: the paper's sign is -1
    got = float(ranking_loss(pred, true, margin))
    assert got == pytest.approx(_slow_ranking_loss(pred.tolist(), true.tolist(), margin), abs=1e-12)


def test_ranking_loss_is_zero_when_the_order_is_right_by_the_margin() -> None:
    true = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert float(ranking_loss(true * 10, true, margin=1.0)) == 0.0
    assert float(ranking_loss(-true * 10, true, margin=1.0)) > 0.0


def test_ranking_loss_sends_no_gradient_into_the_target() -> None:
    pred = torch.randn(6, requires_grad=True)
    true = torch.rand(6, requires_grad=True)
    ranking_loss(pred, true).backward()
    assert true.grad is None and pred.grad is not None


def test_module_pools_feature_maps_and_vectors() -> None:
    maps = [torch.rand(5, 8, 6, 6), torch.rand(5, 16, 3, 3), torch.rand(5, 12)]
    module = LossPredictionModule(feature_dims(maps), hidden=4)
    assert feature_dims(maps) == [8, 16, 12]
    assert module(maps).shape == (5,)
    with pytest.raises(ValueError, match="expected 3 feature maps, got 2"):
        module(maps[:2])


def _toy(n: int, seed: int, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Two classes: a square brighter than the noise, top-left or bottom-right, with random contrast
    (faint squares are hard)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(100, 40, (n, size, size))
    q = size // 2
    for i, label in enumerate(y):
        x[i, label * q:(label + 1) * q, label * q:(label + 1) * q] += rng.uniform(0, 80)
    return np.clip(x, 0, 255).astype(np.uint8), y


def test_predicted_loss_ranks_the_true_loss_after_training() -> None:
    x, y = _toy(200, seed=0)
    model = build_model("cnn", 2, image_size=12, learning_loss=True,
                        train={"epochs": 8, "batch_size": 32, "val_fraction": 0})
    assert Input.PREDICTED_LOSS in model.provides
    model.fit(x, y)
    x_test, y_test = _toy(200, seed=1)
    inputs = model.pool_inputs(x_test, frozenset({Input.PREDICTED_LOSS}), x, y)
    true_loss = -np.log(inputs.probs[np.arange(len(y_test)), y_test])
    assert inputs.predicted_loss.shape == (200,)
    assert spearmanr(true_loss, inputs.predicted_loss)[0] > 0.5


def _trained_backbone(weight: float, detach_after: float) -> torch.Tensor:
    x, y = _toy(48, seed=2, size=8)
    images = x[..., None]
    torch.manual_seed(0)
    net = build_network("small_cnn", 2, channels=1, dropout=0.0)
    module = None
    if weight:
        with torch.no_grad():
            _, maps = net.eval().features(torch.zeros(2, 1, 8, 8))
        module = LossPredictionModule(feature_dims(maps))
    mean, std = channel_stats(images)
    config = TrainConfig(epochs=2, batch_size=16, val_fraction=0, class_balanced=False)
    train(net, images, y, config, mean=mean, std=std, loss_module=module,
          loss_head=LossHeadConfig(weight=weight, detach_after=detach_after))
    return net.backbone.blocks[0][0].weight.detach().clone()


def test_detached_features_get_no_gradient_from_the_loss_module() -> None:
    plain = _trained_backbone(weight=0.0, detach_after=0.0)
    detached = _trained_backbone(weight=5.0, detach_after=0.0)  # detached from the first epoch
    attached = _trained_backbone(weight=5.0, detach_after=1.0)  # never detached
    torch.testing.assert_close(detached, plain, atol=1e-5, rtol=0)
    assert float((attached - plain).abs().max()) > 1e-3
