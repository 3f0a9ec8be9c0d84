"""The seeds' decision tree: a cold-start strategy until the model is worth listening to, then a warm one."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import Field

from plugins.strategies.base import Input, PoolInputs, Ranking, Strategy, StrategyParams
from plugins.strategies.registry import StrategySpec, build_strategy, register


def labels_per_class(pool: PoolInputs) -> float:
    """Labeled items per class on average (0 without labeled items)."""
    if pool.labeled_labels is None or pool.labeled_labels.shape[0] == 0:
        return 0.0
    return pool.labeled_labels.shape[0] / pool.num_classes


@register("auto")
class Auto(Strategy):
    """Cold/warm switch (Hacohen, Dekel & Weinshall, ICML 2022: typical items win at low budgets, uncertain
    ones at high budgets): a representative strategy while the model is untrained, a model-based one after.

    Cold when the warm strategy's inputs are not all present or the labeled set has fewer than
    `min_labels_per_class` labels per class on average (len(labeled_labels) / num_classes); warm otherwise.
    """

    multilabel = True

    class Params(StrategyParams):
        cold: StrategySpec = Field(StrategySpec(name="typiclust"), description="strategy for the cold start")
        warm: StrategySpec = Field(StrategySpec(name="badge"),
                                   description="strategy once the model is trained")
        min_labels_per_class: int = Field(
            10, ge=0, description="average labeled items per class needed to switch to the warm strategy"
        )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.cold = build_strategy(self.params.cold)
        self.warm = build_strategy(self.params.warm)

    def children(self) -> list[Strategy]:
        return [self.cold, self.warm]

    def required_inputs(self) -> frozenset[Input]:
        return self.cold.required_inputs()

    def optional_inputs(self) -> frozenset[Input]:
        wanted = (self.cold.optional_inputs() | self.warm.required_inputs() | self.warm.optional_inputs()
                  | {Input.LABELED_LABELS})
        return wanted - self.required_inputs()

    def choose(self, pool: PoolInputs) -> tuple[Strategy, str]:
        """The child that ranks this pool, and why."""
        missing = self.warm.required_inputs() - pool.available()
        if missing:
            names = ", ".join(sorted(i.value for i in missing))
            return self.cold, f"cold start: {self.warm.name} needs {names}, which the model did not provide"
        per_class = labels_per_class(pool)
        threshold = self.params.min_labels_per_class
        if per_class < threshold:
            return self.cold, (f"cold start: {per_class:.3g} labels per class "
                               f"< min_labels_per_class {threshold:g}")
        return self.warm, f"warm: {per_class:.3g} labels per class >= min_labels_per_class {threshold:g}"

    def _rank(self, pool: PoolInputs) -> Ranking:
        child, reason = self.choose(pool)
        ranking = child.rank(pool)
        return dataclasses.replace(ranking, strategy=self.name,
                                   info={**ranking.info, "chosen": child.name, "reason": reason})
