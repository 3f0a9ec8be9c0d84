"""Single-model uncertainty sampling (Settles, 2009) and the random baseline."""

from __future__ import annotations

import torch

from plugins.strategies._kernels import entropy
from plugins.strategies.base import Input, PoolInputs, Ranking, ScoreStrategy, Strategy
from plugins.strategies.registry import register


@register("random")
class RandomSampling(Strategy):
    """Uniformly random order: the baseline every other strategy must beat."""

    def _rank(self, pool: PoolInputs) -> Ranking:
        order = torch.as_tensor(self.generator().permutation(pool.n), dtype=torch.int64)
        return self._ranking(order)


@register("least_confidence")
class LeastConfidence(ScoreStrategy):
    """Least confidence: score = 1 - max_c p(c|x); the model's least sure items first."""

    needs = frozenset({Input.PROBS})

    def score(self, pool: PoolInputs) -> torch.Tensor:
        return 1.0 - pool.probs.max(dim=1).values


@register("margin")
class Margin(ScoreStrategy):
    """Margin sampling: score = 1 - (p_1 - p_2), top-two probability gap; closest to the boundary first."""

    needs = frozenset({Input.PROBS})

    def score(self, pool: PoolInputs) -> torch.Tensor:
        if pool.probs.shape[1] < 2:
            return torch.zeros(pool.n, dtype=pool.probs.dtype, device=pool.probs.device)
        top2 = pool.probs.topk(2, dim=1).values
        return 1.0 - (top2[:, 0] - top2[:, 1])


@register("entropy")
class Entropy(ScoreStrategy):
    """Entropy sampling: score = -sum_c p(c|x) log p(c|x); the flattest predictions first."""

    needs = frozenset({Input.PROBS})

    def score(self, pool: PoolInputs) -> torch.Tensor:
        return entropy(pool.probs)
