"""Class-balanced acquisition: any strategy's order, interleaved so rare predicted classes get their share."""

from __future__ import annotations


import torch
from pydantic import Field

from plugins.strategies.base import Input, PoolInputs, Ranking, StrategyParams
from plugins.strategies.registry import StrategySpec, register
from plugins.strategies.wrapper import Wrapper


def within_class_positions(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """For each position k, how many earlier positions hold the same class (0 for a class's first item)."""
    n = classes.shape[0]
    counts = torch.bincount(classes, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    grouped = torch.argsort(classes, stable=True)
    positions = torch.empty(n, dtype=torch.int64, device=classes.device)
    positions[grouped] = torch.arange(n, device=classes.device) - starts[classes[grouped]]
    return positions


def balanced_order(base_order: torch.Tensor, predicted: torch.Tensor,
                   labeled_counts: torch.Tensor) -> torch.Tensor:
    """Interleave `base_order`: next comes the class with the fewest labeled + placed items (ties: fewer
    predicted pool items, then lower class id), and from it the next item of the base order."""
    num_classes = labeled_counts.shape[0]
    pool_counts = torch.bincount(predicted, minlength=num_classes)
    # rank of each class among (pool count, class id): the tie-break after the running count
    priority = torch.empty(num_classes, dtype=torch.int64, device=predicted.device)
    priority[torch.argsort(pool_counts, stable=True)] = torch.arange(num_classes, device=predicted.device)
    classes = predicted[base_order]
    # The j-th item of class c is placed when that class's running count is labeled_c + j: the greedy
    # interleaving is the sort by (labeled_c + j, priority_c), a key that is unique per item.
    running = labeled_counts[classes] + within_class_positions(classes, num_classes)
    return base_order[torch.argsort(running * num_classes + priority[classes], stable=True)]


@register("class_balanced")
class ClassBalanced(Wrapper):
    """Class-balanced wrapper: label rare predicted classes as often as common ones (rare-defect use case).

    Predicted class = argmax p. Walking the base order, the next item always comes from the class with the
    fewest (labeled + already placed) items, ties to the class rarer in the pool; within a class the base
    order is kept and classes without items left are skipped. Items keep the base scores.
    """

    class Params(StrategyParams):
        base: StrategySpec = Field(StrategySpec(name="badge"),
                                   description="the strategy whose order is balanced")

    needs = frozenset({Input.PROBS})
    optional = frozenset({Input.LABELED_LABELS})

    def _rank(self, pool: PoolInputs) -> Ranking:
        base = self.base.rank(pool)
        num_classes = pool.num_classes
        predicted = pool.probs.argmax(dim=1)
        labeled_counts = torch.zeros(num_classes, dtype=torch.int64, device=predicted.device)
        if pool.labeled_labels is not None:
            labeled_counts += torch.bincount(pool.labeled_labels, minlength=num_classes)
        base_order = torch.as_tensor(base.order, dtype=torch.int64, device=predicted.device)
        order = balanced_order(base_order, predicted, labeled_counts)
        return self._ranking(
            order, base.scores, base.clusters, base=self.base.name,
            labeled_per_class=labeled_counts.tolist(),
            predicted_per_class=torch.bincount(predicted, minlength=num_classes).tolist(),
        )
