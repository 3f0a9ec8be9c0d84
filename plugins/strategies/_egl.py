"""Expected Gradient Length on the last linear layer, in closed form (Settles, Craven & Ray, NIPS 2008)."""

from __future__ import annotations

import torch
from pydantic import Field

from plugins.strategies.base import Input, PoolInputs, ScoreStrategy, StrategyParams
from plugins.strategies.registry import register


def expected_gradient_length(probs: torch.Tensor, embeddings: torch.Tensor,
                             include_bias: bool) -> torch.Tensor:
    """(N,) sum_y p_y ||grad of the cross-entropy for label y|| w.r.t. the last layer's weights (and bias)."""
    sq_norm_p = (probs * probs).sum(dim=1, keepdim=True)
    # ||p - e_y||^2 = ||p||^2 - 2 p_y + 1, for every label y at once
    residual_norms = (sq_norm_p - 2.0 * probs + 1.0).clamp_min(0.0).sqrt()
    input_norm = ((embeddings * embeddings).sum(dim=1) + float(include_bias)).sqrt()
    return (probs * residual_norms).sum(dim=1) * input_norm


@register("egl")
class ExpectedGradientLength(ScoreStrategy):
    """Expected Gradient Length (Settles, Craven & Ray, NIPS 2008), last linear layer z = W h + b.

    The cross-entropy gradient for label y is (p - e_y) h^T for W and (p - e_y) for b, so
    score = sum_y p_y ||p - e_y|| sqrt(||h||^2 + [include_bias]): the items that would move the head most.
    """

    class Params(StrategyParams):
        include_bias: bool = Field(True, description="count the bias gradient in the gradient norm")

    needs = frozenset({Input.PROBS, Input.EMBEDDINGS})

    def score(self, pool: PoolInputs) -> torch.Tensor:
        return expected_gradient_length(pool.probs, pool.embeddings, self.params.include_bias)
