"""Core-set selection: greedy k-center cover of the embedding space."""

from __future__ import annotations

import torch

from plugins.strategies._kernels import kcenter_greedy, min_sq_dists
from plugins.strategies.base import BatchParams, Input, PoolInputs, Ranking, Strategy, batch_then_scores
from plugins.strategies.registry import register


@register("coreset")
class CoreSet(Strategy):
    """Core-set (Sener & Savarese, ICLR 2018): greedy k-center, batch_size times add
    s = argmax_i min_{c in L+S} ||x_i - x_c|| (L labeled, S chosen so far); the rest by that distance after
    the batch. Without a labeled set the first center is the item closest to the pool mean.
    """

    multilabel = True

    Params = BatchParams
    needs = frozenset({Input.EMBEDDINGS})
    optional = frozenset({Input.LABELED_EMBEDDINGS})

    def _rank(self, pool: PoolInputs) -> Ranking:
        x = pool.embeddings
        labeled = pool.labeled_embeddings if pool.labeled_embeddings is not None else x[:0]
        min_sq = min_sq_dists(x, labeled, self.params.memory_mb)
        picked, min_sq = kcenter_greedy(x, self.params.batch_size, min_sq, self.params.memory_mb)
        scores = min_sq.sqrt()
        return self._ranking(batch_then_scores(picked, scores), scores, covering_radius=float(scores.max()))
