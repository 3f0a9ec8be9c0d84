"""BADGE: diverse, uncertain batches from k-means++ seeding on gradient embeddings."""

from __future__ import annotations

import torch

from plugins.strategies._kernels import kmeanspp_factorized
from plugins.strategies.base import BatchParams, Input, PoolInputs, Ranking, Strategy, batch_then_scores
from plugins.strategies.registry import register


def hallucinated_grad_factor(probs: torch.Tensor) -> torch.Tensor:
    """a = p - onehot(argmax p): the class factor of the last layer's gradient for the predicted label."""
    a = probs.clone()
    rows = torch.arange(probs.shape[0], device=probs.device)
    a[rows, probs.argmax(dim=1)] -= 1.0
    return a


@register("badge")
class Badge(Strategy):
    """BADGE (Ash et al., ICLR 2020): k-means++ seeding on the gradient embeddings g = a (x) h of the last
    linear layer, a = p - onehot(argmax p), h the penultimate embedding; the rest by ||g|| = ||a|| ||h||.

    The N x (C D) gradient matrix is never formed: distances are factorized (see `_kernels`).
    """

    Params = BatchParams
    needs = frozenset({Input.PROBS, Input.EMBEDDINGS})

    def _rank(self, pool: PoolInputs) -> Ranking:
        a, h = hallucinated_grad_factor(pool.probs), pool.embeddings
        picked = kmeanspp_factorized(a, h, self.params.batch_size, self.generator())
        scores = a.norm(dim=1) * h.norm(dim=1)
        return self._ranking(batch_then_scores(picked, scores), scores, batch_size=len(picked))
