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


def multilabel_grad_factor(probs: torch.Tensor) -> torch.Tensor:
    """a = p - 1[p >= 0.5]: the label factor of the last layer's BCE gradient at the hallucinated labels."""
    return probs - (probs >= 0.5).to(probs.dtype)


@register("badge")
class Badge(Strategy):
    """BADGE (Ash et al., ICLR 2020): k-means++ seeding on the gradient embeddings g = a (x) h of the last
    linear layer, a = p - onehot(argmax p), h the penultimate embedding; the rest by ||g|| = ||a|| ||h||.

    Multi-label (sigmoid head, BCE loss): the hallucinated label vector is y_c = 1[p_c >= 0.5], and the BCE
    gradient of the last layer is (p - y) (x) h, so a = p - y; the rest is the same.

    The N x (C D) gradient matrix is never formed: distances are factorized (see `_kernels`).
    """

    Params = BatchParams
    needs = frozenset({Input.PROBS, Input.EMBEDDINGS})
    multilabel = True

    def _rank(self, pool: PoolInputs) -> Ranking:
        factor = multilabel_grad_factor if pool.multilabel else hallucinated_grad_factor
        a, h = factor(pool.probs), pool.embeddings
        picked = kmeanspp_factorized(a, h, self.params.batch_size, self.generator())
        scores = a.norm(dim=1) * h.norm(dim=1)
        return self._ranking(batch_then_scores(picked, scores), scores, batch_size=len(picked))
