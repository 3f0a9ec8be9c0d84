"""The acquisition engine: every strategy turns pool inputs into a priority order.

One private module per method family (``_uncertainty.py``, ``_badge.py``, ...); importing this package
registers them all in ``STRATEGIES``. Build one by name with ``build_strategy('badge', batch_size=20)``
or from a JSON spec ``{"name": "badge", "params": {"batch_size": 20}}``.
"""

from __future__ import annotations

import importlib
import pkgutil

from plugins.strategies.base import (
    BatchParams,
    Input,
    PoolInputs,
    Ranking,
    ScoreStrategy,
    Strategy,
    StrategyParams,
)
from plugins.strategies.errors import (
    InvalidInputError,
    InvalidParamsError,
    MissingInputError,
    StrategyError,
    UnknownStrategyError,
)
from plugins.strategies.registry import (
    STRATEGIES,
    StrategySpec,
    build_strategy,
    multilabel_strategies,
    register,
    strategy_for,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name.startswith("_") and not _module.name.startswith("_kernels"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "STRATEGIES", "BatchParams", "Input", "InvalidInputError", "InvalidParamsError", "MissingInputError",
    "PoolInputs", "Ranking", "ScoreStrategy", "Strategy", "StrategyError", "StrategyParams", "StrategySpec",
    "UnknownStrategyError", "build_strategy", "multilabel_strategies", "register",
    "strategy_for",
]
