"""The strategy registry and the JSON spec that names a strategy with its parameters."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from plugins.registry import Registry
from plugins.specs import StrategySpec
from plugins.strategies.base import Strategy
from plugins.strategies.errors import InvalidParamsError, UnknownStrategyError

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
register = STRATEGIES.register


def build_strategy(spec: StrategySpec | dict[str, Any] | str, **params: Any) -> Strategy:
    """Construct a strategy from a spec, a {'name', 'params'} dict or a bare name plus keyword params."""
    if isinstance(spec, str):
        spec = StrategySpec(name=spec, params=params)
    elif isinstance(spec, dict):
        try:
            spec = StrategySpec(**spec)
        except (ValidationError, TypeError) as exc:  # wrong shape of the spec itself
            raise InvalidParamsError(f"a strategy spec is {{'name': str, 'params': {{...}}}}: {exc}") from None
        if params:
            spec = StrategySpec(name=spec.name, params={**spec.params, **params})
    elif params:
        spec = StrategySpec(name=spec.name, params={**spec.params, **params})
    if spec.name not in STRATEGIES:
        raise UnknownStrategyError(spec.name, STRATEGIES.names())
    return STRATEGIES.get(spec.name)(**spec.params)


def strategy_for(spec: StrategySpec, batch: int, seed: int) -> Strategy:
    """Build the strategy, giving batch methods the loop's batch size unless the spec sets one."""
    params = dict(spec.params)
    if spec.name in STRATEGIES and "batch_size" in STRATEGIES.get(spec.name).Params.model_fields:
        params.setdefault("batch_size", batch)
    params.setdefault("seed", seed)
    return build_strategy(spec.name, **params)


def multilabel_strategies() -> list[str]:
    """Names of the registered strategies whose class has a sound multi-label form, sorted."""
    return [name for name in STRATEGIES.names() if STRATEGIES.get(name).multilabel]

