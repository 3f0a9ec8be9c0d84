"""The base of strategies that reorder another strategy's ranking (class_balanced, stochastic)."""

from __future__ import annotations

from typing import Any

from plugins.strategies.base import Input, Strategy
from plugins.strategies.registry import build_strategy


class Wrapper(Strategy):
    """Builds `params.base` at construction (a bad spec fails there); needs what the base needs plus the
    wrapper's own `needs`, and uses the base's optional inputs plus its own `optional`."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.base = build_strategy(self.params.base)

    def children(self) -> list[Strategy]:
        return [self.base]

    def required_inputs(self) -> frozenset[Input]:
        return self.base.required_inputs() | self.needs

    def optional_inputs(self) -> frozenset[Input]:
        return (self.base.optional_inputs() | self.optional) - self.required_inputs()
