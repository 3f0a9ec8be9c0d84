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


def rarest_positive_label(positive: torch.Tensor, label_counts: torch.Tensor) -> torch.Tensor:
    """(N, C) bool -> (N,): each row's positive label with the fewest `label_counts` (ties: the lower id);
    C for a row with no positive label ("none of these")."""
    n_labels = positive.shape[1]
    never = torch.iinfo(torch.int64).max
    key = torch.where(positive, label_counts[None, :].expand_as(positive), never)
    fallback = torch.full_like(key[:, 0], n_labels)
    return torch.where(positive.any(dim=1), key.argmin(dim=1), fallback)  # argmin: the first of ties


def multilabel_groups(probs: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(group per pool item, labeled count per group) over C + 1 groups: a pool item's group is its rarest
    (fewest labeled positives) predicted label p_c >= 0.5, group C when it has none; a labeled item counts
    once for each of its labels, or once for group C when it has none."""
    n_labels = probs.shape[1]
    counts = torch.zeros(n_labels + 1, dtype=torch.int64, device=probs.device)
    if targets is not None and targets.shape[0]:
        counts[:n_labels] += targets.sum(dim=0)
        counts[n_labels] += int((targets.sum(dim=1) == 0).sum())
    return rarest_positive_label(probs >= 0.5, counts[:n_labels]), counts


@register("class_balanced")
class ClassBalanced(Wrapper):
    """Class-balanced wrapper: label rare predicted classes as often as common ones (rare-defect use case).

    Predicted class = argmax p. Walking the base order, the next item always comes from the class with the
    fewest (labeled + already placed) items, ties to the class rarer in the pool; within a class the base
    order is kept and classes without items left are skipped. Items keep the base scores.

    Multi-label: an item's class is its rarest predicted label (p_c >= 0.5 with the fewest labeled
    positives; an extra class for "none predicted"), a labeled item counts for each of its labels.
    """

    multilabel = True

    class Params(StrategyParams):
        base: StrategySpec = Field(StrategySpec(name="badge"),
                                   description="the strategy whose order is balanced")

    needs = frozenset({Input.PROBS})
    optional = frozenset({Input.LABELED_LABELS})

    def _rank(self, pool: PoolInputs) -> Ranking:
        base = self.base.rank(pool)
        if pool.multilabel:
            predicted, labeled_counts = multilabel_groups(pool.probs, pool.labeled_labels)
            num_classes = labeled_counts.shape[0]
        else:
            predicted, labeled_counts = self._single_label_groups(pool)
            num_classes = pool.num_classes
        base_order = torch.as_tensor(base.order, dtype=torch.int64, device=predicted.device)
        order = balanced_order(base_order, predicted, labeled_counts)
        return self._ranking(
            order, base.scores, base.clusters, base=self.base.name,
            labeled_per_class=labeled_counts.tolist(),
            predicted_per_class=torch.bincount(predicted, minlength=num_classes).tolist(),
        )

    @staticmethod
    def _single_label_groups(pool: PoolInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(argmax class per pool item, labeled count per class)."""
        predicted = pool.probs.argmax(dim=1)
        labeled_counts = torch.zeros(pool.num_classes, dtype=torch.int64, device=predicted.device)
        if pool.labeled_labels is not None:
            labeled_counts += torch.bincount(pool.labeled_labels, minlength=pool.num_classes)
        return predicted, labeled_counts
