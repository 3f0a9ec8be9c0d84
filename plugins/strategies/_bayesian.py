"""Bayesian uncertainty from K posterior samples per item (MC dropout, deep ensembles)."""

from __future__ import annotations

import torch

from plugins.strategies._kernels import bernoulli_entropy, entropy, map_rows
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


def multilabel_bald_scores(samples: torch.Tensor) -> torch.Tensor:
    """(N, K, C) independent label probabilities -> (N,): sum over labels of the per-label mutual information
    H_b[E_k p_kc] - E_k H_b[p_kc] (Bernoulli entropies), clamped at 0."""
    per_label = bernoulli_entropy(samples.mean(dim=1)) - bernoulli_entropy(samples).mean(dim=1)
    return per_label.sum(dim=1).clamp_min(0.0)


@register("mc_variance")
class MCVariance(ScoreStrategy):
    """MC-dropout predictive variance (Gal, Islam & Ghahramani, ICML 2017).

    score = 1/C sum_c Var_k[p_k(c|x)] (population variance over the K stochastic forward passes). The same
    formula is sound for multi-label samples: the mean over labels of the variance of each label's p_kc.
    """

    needs = frozenset({Input.SAMPLES})
    multilabel = True

    def score(self, pool: PoolInputs) -> torch.Tensor:
        return map_rows(predictive_variance, pool.samples, self.params.memory_mb)


@register("bald")
class BALD(ScoreStrategy):
    """BALD (Houlsby et al. 2011; Gal, Islam & Ghahramani, ICML 2017): label where the models disagree.

    score = H[1/K sum_k p_k(y|x)] - 1/K sum_k H[p_k(y|x)], the mutual information between y and theta.
    Multi-label: the sum over labels of each label's mutual information, with Bernoulli entropies (labels
    independent given theta; the sum bounds the label vector's mutual information from above).
    """

    needs = frozenset({Input.SAMPLES})
    multilabel = True

    def score(self, pool: PoolInputs) -> torch.Tensor:
        fn = multilabel_bald_scores if pool.multilabel else bald_scores
        return map_rows(fn, pool.samples, self.params.memory_mb)
