"""Single-model uncertainty sampling (Settles, 2009) and the random baseline."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from plugins.strategies._kernels import bernoulli_entropy, entropy_rows_into, reduce_labels
from plugins.strategies.base import (
    Input,
    PoolInputs,
    Ranking,
    ScoreStrategy,
    Strategy,
    StrategyParams,
    checked_blocks,
    scores_in_pass,
)
from plugins.strategies.registry import register

Reduction = Literal["sum", "mean", "max"]


def label_entropy(probs: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """(N, C) independent label probabilities -> (N,): the labels' Bernoulli entropies, reduced."""
    return reduce_labels(bernoulli_entropy(probs), reduction)


def label_margin(probs: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """(N, C) independent label probabilities -> (N,): 1 - |2 p_c - 1| per label, reduced over labels."""
    return reduce_labels(1.0 - (2.0 * probs - 1.0).abs(), reduction)


def label_set_least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """(N, C) independent label probabilities -> (N,): 1 - prod_c max(p_c, 1 - p_c), one minus the
    probability of the most likely label set (computed in log space)."""
    log_best = torch.maximum(probs, 1.0 - probs).clamp_min(torch.finfo(probs.dtype).tiny).log().sum(dim=1)
    return -torch.expm1(log_best)


def checked_probs(pool: PoolInputs) -> torch.Tensor:
    """pool.probs after the value checks `prepared` leaves to a strategy that checks them in its pass."""
    for _ in checked_blocks(Input.PROBS.value, pool.probs, True, sums_to_one=not pool.multilabel):
        pass
    return pool.probs


def _least_confidence_into(p: torch.Tensor, out: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    return torch.amax(p, dim=1, out=out).neg_().add_(1.0)


def _margin_into(p: torch.Tensor, out: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """1 - (p_1 - p_2): the largest entry, then the largest of the rest (argmax masked, so a tie at the top
    gives p_2 = p_1), as topk(2) gives but without its sort."""
    top = torch.argmax(p, dim=1, keepdim=True)
    first = torch.gather(p, 1, top).squeeze(1)
    rest = scratch[: p.numel()].view(p.shape).copy_(p).scatter_(1, top, -1.0)
    return torch.amax(rest, dim=1, out=out).sub_(first).add_(1.0)


@register("random")
class RandomSampling(Strategy):
    """Uniformly random order: the baseline every other strategy must beat."""

    multilabel = True

    def _rank(self, pool: PoolInputs) -> Ranking:
        order = torch.as_tensor(self.generator().permutation(pool.n), dtype=torch.int64)
        return self._ranking(order)


@register("least_confidence")
class LeastConfidence(ScoreStrategy):
    """Least confidence: score = 1 - max_c p(c|x); the model's least sure items first.

    Multi-label (independent p_c): score = 1 - prod_c max(p_c, 1 - p_c), one minus the probability of the
    most likely label set, i.e. the same definition over the 2^C label vectors (Settles, 2009).
    """

    needs = frozenset({Input.PROBS})
    checks_in_pass = needs
    multilabel = True

    def score(self, pool: PoolInputs) -> torch.Tensor:
        if pool.multilabel:
            return label_set_least_confidence(checked_probs(pool))
        return scores_in_pass(Input.PROBS.value, pool.probs, _least_confidence_into, 0)


class MarginParams(StrategyParams):
    """Hyperparameters of margin sampling."""

    reduction: Reduction = Field(
        "max", description="multi-label only: how the per-label 1 - |2p - 1| are combined over labels "
                           "('max': the label nearest its boundary, Brinker 2006; 'mean'; 'sum')",
    )


@register("margin")
class Margin(ScoreStrategy):
    """Margin sampling: score = 1 - (p_1 - p_2), top-two probability gap; closest to the boundary first.

    Multi-label: label c's margin is |p_c - (1 - p_c)| = |2 p_c - 1|; score = reduction_c (1 - |2 p_c - 1|),
    by default the max: the label closest to its decision boundary (min-margin, Brinker, 2006).
    """

    Params = MarginParams
    needs = frozenset({Input.PROBS})
    checks_in_pass = needs
    multilabel = True

    def score(self, pool: PoolInputs) -> torch.Tensor:
        if pool.multilabel:
            return label_margin(checked_probs(pool), self.params.reduction)
        if pool.probs.shape[1] < 2:
            checked_probs(pool)
            return torch.zeros(pool.n, dtype=pool.probs.dtype, device=pool.probs.device)
        return scores_in_pass(Input.PROBS.value, pool.probs, _margin_into, pool.probs.shape[1])


class EntropyParams(StrategyParams):
    """Hyperparameters of entropy sampling."""

    reduction: Reduction = Field(
        "sum", description="multi-label only: how the labels' Bernoulli entropies are combined ('sum': the "
                           "entropy of the label vector under independence; 'mean'; 'max')",
    )


@register("entropy")
class Entropy(ScoreStrategy):
    """Entropy sampling: score = -sum_c p(c|x) log p(c|x); the flattest predictions first.

    Multi-label: score = reduction_c H_b(p_c), H_b(p) = -p log p - (1 - p) log(1 - p); the default sum is
    the entropy of the whole label vector when the labels are independent given x.
    """

    Params = EntropyParams
    needs = frozenset({Input.PROBS})
    checks_in_pass = needs
    multilabel = True

    def score(self, pool: PoolInputs) -> torch.Tensor:
        if pool.multilabel:
            return label_entropy(checked_probs(pool), self.params.reduction)
        return scores_in_pass(Input.PROBS.value, pool.probs, entropy_rows_into, pool.probs.shape[1])
