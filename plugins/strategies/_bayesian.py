"""Bayesian uncertainty from K posterior samples per item (MC dropout, deep ensembles)."""

from __future__ import annotations

import torch

from plugins.strategies._kernels import entropy, map_rows
from plugins.strategies.base import Input, PoolInputs, ScoreStrategy
from plugins.strategies.registry import register


def predictive_variance(samples: torch.Tensor) -> torch.Tensor:
    """(N, K, C) -> (N,): class-averaged population variance of p_k(c|x) over the K samples."""
    return samples.var(dim=1, correction=0).mean(dim=1)


def expected_entropy(samples: torch.Tensor) -> torch.Tensor:
    """(N, K, C) -> (N,): E_k H[p_k(y|x)], the aleatoric part of the predictive entropy."""
    return entropy(samples, dim=(1, 2)) / samples.shape[1]


def bald_scores(samples: torch.Tensor) -> torch.Tensor:
    """(N, K, C) -> (N,): mutual information I[y; theta | x] = H[E_k p_k] - E_k H[p_k], clamped at 0."""
    return (entropy(samples.mean(dim=1)) - expected_entropy(samples)).clamp_min(0.0)


@register("mc_variance")
class MCVariance(ScoreStrategy):
    """MC-dropout predictive variance (Gal, Islam & Ghahramani, ICML 2017).

    score = 1/C sum_c Var_k[p_k(c|x)] (population variance over the K stochastic forward passes).
    """

    needs = frozenset({Input.SAMPLES})

    def score(self, pool: PoolInputs) -> torch.Tensor:
        return map_rows(predictive_variance, pool.samples, self.params.memory_mb)


@register("bald")
class BALD(ScoreStrategy):
    """BALD (Houlsby et al. 2011; Gal, Islam & Ghahramani, ICML 2017): label where the models disagree.

    score = H[1/K sum_k p_k(y|x)] - 1/K sum_k H[p_k(y|x)], the mutual information between y and theta.
    """

    needs = frozenset({Input.SAMPLES})

    def score(self, pool: PoolInputs) -> torch.Tensor:
        return map_rows(bald_scores, pool.samples, self.params.memory_mb)
