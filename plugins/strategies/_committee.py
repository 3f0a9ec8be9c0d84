"""Query by committee: disagreement among K committee members (or posterior samples) per item."""

from __future__ import annotations

import torch

from plugins.strategies._kernels import entropy, map_rows
from plugins.strategies.base import Input, PoolInputs, Ranking, ScoreStrategy, Strategy, order_by_scores
from plugins.strategies.registry import register


def vote_fractions(samples: torch.Tensor) -> torch.Tensor:
    """(N, K, C) -> (N, C): fraction of the K members whose top class is c."""
    n, k, c = samples.shape
    votes = torch.zeros(n, c, dtype=samples.dtype, device=samples.device)
    votes.scatter_add_(1, samples.argmax(dim=2), torch.ones(n, k, dtype=samples.dtype, device=samples.device))
    return votes / k


def vote_entropy(samples: torch.Tensor) -> torch.Tensor:
    """(N, K, C) -> (N,): entropy of the committee's vote distribution; equal vote counts give equal bits."""
    return entropy(vote_fractions(samples).sort(dim=1, descending=True).values)


def kl_to_consensus(samples: torch.Tensor) -> torch.Tensor:
    """(N, K, C) -> (N,): 1/K sum_k KL(P_k || P_avg), P_avg the members' mean, clamped at 0."""
    consensus = samples.mean(dim=1, keepdim=True)
    kl = (torch.special.xlogy(samples, samples) - torch.special.xlogy(samples, consensus)).sum(dim=2)
    return kl.mean(dim=1).clamp_min(0.0)


@register("vote_entropy")
class VoteEntropy(Strategy):
    """Query by committee with vote entropy (Dagan & Engelson 1995; Settles 2009).

    score = -sum_c V(c,x)/K log V(c,x)/K, V(c,x) = members voting c; ties (frequent: the score is
    discrete) are broken by the consensus entropy H[1/K sum_k P_k], then by pool position.
    """

    needs = frozenset({Input.SAMPLES})

    def _rank(self, pool: PoolInputs) -> Ranking:
        votes = map_rows(vote_entropy, pool.samples, self.params.memory_mb)
        consensus = map_rows(lambda s: entropy(s.mean(dim=1)), pool.samples, self.params.memory_mb)
        by_consensus = order_by_scores(consensus)
        order = by_consensus[order_by_scores(votes[by_consensus])]
        return self._ranking(order, votes)


@register("kl_consensus")
class KLConsensus(ScoreStrategy):
    """Query by committee with KL divergence to the consensus (McCallum & Nigam, ICML 1998).

    score = 1/K sum_k KL(P_k(y|x) || P_avg(y|x)), P_avg = 1/K sum_k P_k: the committee's mutual
    information, equal to BALD's score when the members are posterior samples.
    """

    needs = frozenset({Input.SAMPLES})

    def score(self, pool: PoolInputs) -> torch.Tensor:
        return map_rows(kl_to_consensus, pool.samples, self.params.memory_mb)
