"""Expected error reduction (Roy & McCallum, ICML 2001) with a cheap last-layer surrogate model."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from plugins.strategies._kernels import chunks, entropy, rows_per_chunk
from plugins.strategies.base import (
    Input,
    PoolInputs,
    Ranking,
    Strategy,
    StrategyParams,
    order_by_scores,
)
from plugins.strategies.registry import register

Loss = Literal["zero_one", "log"]


def standardize(labeled: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets scaled by the mean and (population) std of their union; constant dims keep std 1."""
    both = torch.cat([labeled, pool])
    mean = both.mean(dim=0)
    std = both.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (labeled - mean) / std, (pool - mean) / std


def with_bias(x: torch.Tensor) -> torch.Tensor:
    """Append a constant-1 feature so the last weight column is the bias."""
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


def fit_softmax_regression(
    weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, l2: float,
    x_extra: torch.Tensor | None = None, y_extra: torch.Tensor | None = None,
) -> torch.Tensor:
    """Full-batch gradient descent on mean cross-entropy + l2/2 ||W without bias||^2, for B models at once.

    weights (B, C, D+1) start points; x (L, D+1), y (L,) the shared training set; optional x_extra (B, D+1),
    y_extra (B,) one extra example per model (model b trains on L + {(x_extra[b], y_extra[b])}).
    """
    n_classes = weights.shape[1]
    targets = torch.nn.functional.one_hot(y, n_classes).to(weights.dtype)
    n = x.shape[0] + (0 if x_extra is None else 1)
    decay = torch.ones_like(weights[0])
    decay[:, -1] = 0.0
    w = weights.clone()
    for _ in range(steps):
        residual = torch.softmax(torch.matmul(x, w.transpose(1, 2)), dim=-1) - targets  # (B, L, C)
        grad = torch.matmul(residual.transpose(1, 2), x)  # (B, C, D+1)
        if x_extra is not None:
            p_extra = torch.softmax(torch.einsum("bd,bcd->bc", x_extra, w), dim=-1)
            r_extra = p_extra - torch.nn.functional.one_hot(y_extra, n_classes).to(w.dtype)
            grad += r_extra[:, :, None] * x_extra[:, None, :]
        w -= lr * (grad / n + l2 * decay * w)
    return w


def model_error(weights: torch.Tensor, x_eval: torch.Tensor, loss: Loss) -> torch.Tensor:
    """(B,) expected error of each model on the eval set: mean 1 - max_c p(c|u), or mean entropy."""
    probs = torch.softmax(torch.matmul(x_eval, weights.transpose(1, 2)), dim=-1)  # (B, E, C)
    per_item = 1.0 - probs.max(dim=-1).values if loss == "zero_one" else entropy(probs)
    return per_item.mean(dim=-1)


@register("expected_error_reduction")
class ExpectedErrorReduction(Strategy):
    """Expected error reduction (Roy & McCallum, ICML 2001): x* = argmin_x sum_y p(y|x) err(fit on L+(x, y)).

    score(x) = err(W0) - sum_y p(y|x) err(W_{x,y}) for the `candidates` highest-entropy items, where the
    retrained model is a cheap surrogate, not the deep net (exact EER would retrain it C times per candidate):
    multinomial logistic regression on the (standardised) embeddings. W0 is fitted on the labeled set by
    5*steps full-batch GD steps from zero; W_{x,y} warm-starts from W0 and takes `steps` GD steps on
    L + {(x, y)}. err is measured on a seeded `eval_size` subsample of the pool (zero-one: mean 1 - max p';
    log: mean entropy of p'); p(y|x) are the given `probs`. The M*C refits run as one (M*C, C, D+1) batch,
    chunked to stay under memory_mb.
    Cost: O(M C steps (L+1) D C) for the refits + O(M C eval_size D C) for the errors.
    Order: candidates by reduction desc, then the other items by entropy desc. Scores: the reduction for
    candidates; a non-candidate at entropy rank r (0 = flattest) gets min(candidate reductions) - (r + 1),
    so the scores sort exactly into the order. With no labels or fewer than two labeled classes the order
    and scores are the entropy of `probs` (info['fallback'] says why).
    """

    class Params(StrategyParams):
        candidates: int = Field(64, ge=1, description="pool items evaluated: the top-M by predictive entropy")
        eval_size: int = Field(1000, ge=1, description="size of the seeded pool subsample scoring the error")
        steps: int = Field(20, ge=1, description="GD steps of each refit (the base fit takes 5x as many)")
        lr: float = Field(0.5, gt=0, description="GD learning rate of the surrogate logistic regression")
        l2: float = Field(1e-2, ge=0, description="L2 penalty on the surrogate's weights (not the bias)")
        loss: Loss = Field("zero_one", description="'zero_one': mean 1 - max p'; 'log': mean entropy of p'")
        standardize: bool = Field(True, description="standardise embeddings by the labeled+pool mean/std")

    needs = frozenset({Input.PROBS, Input.EMBEDDINGS, Input.LABELED_EMBEDDINGS, Input.LABELED_LABELS})

    def _rank(self, pool: PoolInputs) -> Ranking:
        p = self.params
        ent = entropy(pool.probs)
        labels = pool.labeled_labels
        if labels.numel() == 0 or torch.unique(labels).numel() < 2:
            reason = "empty labeled set" if labels.numel() == 0 else "fewer than two labeled classes"
            return self._ranking(order_by_scores(ent), ent, fallback="entropy", reason=reason)
        lab, emb = pool.labeled_embeddings, pool.embeddings
        if p.standardize:
            lab, emb = standardize(lab, emb)
        x_lab, x_pool = with_bias(lab), with_bias(emb)
        by_entropy = order_by_scores(ent)
        cand = by_entropy[: min(p.candidates, pool.n)]
        eval_idx = self._eval_subset(pool.n)
        x_eval = x_pool[eval_idx]
        n_classes = pool.probs.shape[1]
        w0 = fit_softmax_regression(
            torch.zeros(1, n_classes, x_lab.shape[1], dtype=x_lab.dtype, device=x_lab.device),
            x_lab, labels, 5 * p.steps, p.lr, p.l2,
        )
        base_error = model_error(w0, x_eval, p.loss)[0]
        errors = self._refit_errors(w0, x_lab, labels, x_pool[cand], x_eval)  # (M, C)
        reduction = base_error - (pool.probs[cand] * errors).sum(dim=1)
        scores = torch.empty_like(ent)
        scores[cand] = reduction
        rest = by_entropy[cand.numel():]
        scores[rest] = reduction.min() - torch.arange(1, rest.numel() + 1, dtype=ent.dtype, device=ent.device)
        return self._ranking(order_by_scores(scores), scores, base_error=float(base_error),
                             candidates=int(cand.numel()), eval_size=int(eval_idx.numel()))

    def _eval_subset(self, n: int) -> torch.Tensor:
        """Sorted indices of the seeded pool subsample the error is measured on."""
        idx = torch.as_tensor(self.generator(1).choice(n, size=min(self.params.eval_size, n), replace=False))
        return idx.sort().values.to(device=self.device, dtype=torch.int64)

    def _refit_errors(self, w0: torch.Tensor, x_lab: torch.Tensor, labels: torch.Tensor,
                      x_cand: torch.Tensor, x_eval: torch.Tensor) -> torch.Tensor:
        """(M, C) error of the model refitted on L + {(x_m, c)}, all M*C refits batched in chunks."""
        p = self.params
        n_cand, (n_classes, width) = x_cand.shape[0], w0.shape[1:]
        pair_cand = torch.arange(n_cand, device=x_cand.device).repeat_interleave(n_classes)
        pair_label = torch.arange(n_classes, device=x_cand.device).repeat(n_cand)
        per_class = 3 * (x_lab.shape[0] + 1) + 4 * width + 2 * x_eval.shape[0]
        row_bytes = x_cand.element_size() * n_classes * per_class
        errors = torch.empty(pair_cand.numel(), dtype=x_cand.dtype, device=x_cand.device)
        for sl in chunks(pair_cand.numel(), rows_per_chunk(row_bytes, p.memory_mb)):
            w = fit_softmax_regression(
                w0.expand(sl.stop - sl.start, -1, -1), x_lab, labels, p.steps, p.lr, p.l2,
                x_extra=x_cand[pair_cand[sl]], y_extra=pair_label[sl],
            )
            errors[sl] = model_error(w, x_eval, p.loss)
        return errors.reshape(n_cand, n_classes)
