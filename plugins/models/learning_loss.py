"""Loss-prediction module of Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019)."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class LossHeadConfig(BaseModel):
    """Hyperparameters of the loss-prediction head (defaults: the paper's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: int = Field(128, ge=1, le=4096, description="width of the per-feature-map FC layer")
    weight: float = Field(1.0, ge=0, le=100, description="lambda: weight of the loss-prediction loss")
    margin: float = Field(1.0, ge=0, le=100, description="xi: margin of the pairwise ranking loss")
    detach_after: float = Field(
        0.6, ge=0, le=1,
        description="fraction of the epochs after which features are detached from the module's gradient "
                    "(paper: epoch 120 of 200)",
    )


class LossPredictionModule(nn.Module):
    """Predicts the target loss from intermediate feature maps: GAP -> FC -> ReLU per map, concat, FC."""

    def __init__(self, in_dims: list[int], hidden: int = 128) -> None:
        super().__init__()
        if not in_dims:
            raise ValueError("the loss-prediction module needs at least one feature map")
        self.branches = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden), nn.ReLU()) for d in in_dims)
        self.out = nn.Linear(hidden * len(in_dims), 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """(N,) predicted losses from (N, C, H, W) feature maps or (N, D) vectors."""
        if len(maps) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} feature maps, got {len(maps)}")
        pooled = [m.float().mean(dim=(2, 3)) if m.ndim == 4 else m.float().flatten(1) for m in maps]
        return self.out(torch.cat([b(p) for b, p in zip(self.branches, pooled)], dim=1)).squeeze(1)


def feature_dims(maps: list[torch.Tensor]) -> list[int]:
    """Input size of each branch: the channel count of a feature map, the width of a vector."""
    return [int(m.shape[1]) if m.ndim == 4 else int(m[0].numel()) for m in maps]


def ranking_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Pairwise margin ranking loss: item i of the batch is paired with item B-1-i; per pair
    max(0, -sign(l_i - l_j) (l^_i - l^_j) + margin), sign = +1 if l_i > l_j else -1; mean over pairs.

    The target losses get no gradient. A batch of fewer than 2 items gives 0.
    """
    half = predicted.shape[0] // 2
    if half == 0:
        return predicted.sum() * 0.0
    diff_pred = (predicted - predicted.flip(0))[:half]
    diff_true = (target - target.flip(0))[:half].detach()
    sign = torch.where(diff_true > 0, 1.0, -1.0).to(diff_pred.dtype)
    return torch.clamp(margin - sign * diff_pred, min=0).mean()
