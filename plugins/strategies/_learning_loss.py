"""Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019)."""

from __future__ import annotations

import torch

from plugins.strategies.base import Input, PoolInputs, ScoreStrategy
from plugins.strategies.registry import register


@register("learning_loss")
class LearningLoss(ScoreStrategy):
    """Learning Loss (Yoo & Kweon, CVPR 2019): score = the loss predicted by the model's loss-prediction head.

    The head is trained with the target model on the labeled set; the items it expects the model to get
    most wrong are labeled first.
    """

    multilabel = True

    needs = frozenset({Input.PREDICTED_LOSS})

    def score(self, pool: PoolInputs) -> torch.Tensor:
        return pool.predicted_loss
