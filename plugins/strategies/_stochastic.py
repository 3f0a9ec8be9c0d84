"""Stochastic batch acquisition (Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal, TMLR 2023).

Sampling the order from the scores instead of sorting them keeps a batch from piling on near-duplicates.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from plugins.strategies.base import PoolInputs, Ranking, StrategyParams, order_by_scores
from plugins.strategies.errors import InvalidInputError
from plugins.strategies.registry import StrategySpec, register
from plugins.strategies.wrapper import Wrapper

Mode = Literal["power", "softmax", "softrank"]

# Scores are clipped to this before the log of the power mode (a zero score gets a vanishing weight).
_TINY = torch.finfo(torch.float64).tiny
# Negative scores down to this fraction of the largest |score| are rounding noise and are clipped.
_NEGATIVE_TOL = 1e-6


def log_weights(mode: Mode, beta: float, scores: torch.Tensor | None, ranks: torch.Tensor) -> torch.Tensor:
    """Log sampling weights: beta log s (power), beta s (softmax), -beta log rank (softrank, rank from 1)."""
    if mode == "power":
        return beta * torch.log(scores.clamp_min(_TINY))
    if mode == "softmax":
        return beta * scores
    return -beta * torch.log(ranks)


def gumbel_top_k_order(log_w: torch.Tensor, gumbel: torch.Tensor) -> torch.Tensor:
    """A whole order sampled without replacement, item i with weight exp(log_w_i): Gumbel-top-k."""
    return order_by_scores(log_w + gumbel)


def check_power_scores(scores: torch.Tensor, base: str) -> None:
    """Reject scores that are negative beyond rounding noise: s^beta is undefined for them."""
    tol = _NEGATIVE_TOL * max(1.0, float(scores.abs().max()))
    if float(scores.min()) < -tol:
        raise InvalidInputError(
            f"stochastic mode 'power' needs non-negative scores, but {base} gave {float(scores.min()):.4g}; "
            "use mode 'softmax' or 'softrank' for this base"
        )


@register("stochastic")
class StochasticBatch(Wrapper):
    """Stochastic batch acquisition (Kirsch et al., TMLR 2023): sample the order, do not sort the scores.

    Items are drawn without replacement with weights s^beta (power), exp(beta s) (softmax) or rank^-beta
    (softrank, rank from 1 in the base order), all at once by the Gumbel-top-k trick:
    order = argsort desc (log w_i + Gumbel_i). A base without scores is sampled by its ranks (softrank).
    """

    multilabel = True

    class Params(StrategyParams):
        base: StrategySpec = Field(StrategySpec(name="bald"),
                                   description="the strategy whose scores are sampled")
        mode: Mode = Field("power", description="weights: 'power' s^beta, 'softmax' exp(beta s), "
                                                "'softrank' rank^-beta")
        beta: float = Field(1.0, gt=0, le=1e6,
                            description="coldness: near 0 uniform random, large the base order")

    def _rank(self, pool: PoolInputs) -> Ranking:
        base = self.base.rank(pool)
        mode = self.params.mode if base.scores is not None else "softrank"
        scores = None if base.scores is None else torch.as_tensor(base.scores, dtype=torch.float64,
                                                                 device=self.device)
        if mode == "power":
            check_power_scores(scores, self.base.name)
        ranks = torch.as_tensor(base.ranks + 1, dtype=torch.float64, device=self.device)
        gumbel = torch.as_tensor(self.generator().gumbel(size=pool.n), dtype=torch.float64,
                                 device=self.device)
        order = gumbel_top_k_order(log_weights(mode, self.params.beta, scores, ranks), gumbel)
        return self._ranking(order, base.scores, base.clusters, base=self.base.name, mode=mode,
                             beta=self.params.beta)
