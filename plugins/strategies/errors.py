"""Errors of the acquisition engine, named for what the caller did wrong."""

from __future__ import annotations


class StrategyError(ValueError):
    """Base class: anything a caller can fix by changing the strategy's settings or inputs."""


class UnknownStrategyError(StrategyError):
    """A strategy name that is not registered."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name, self.available = name, available
        super().__init__(f"unknown strategy {name!r}; available: {', '.join(available)}")


class InvalidParamsError(StrategyError):
    """Hyperparameters that fail validation; the message says which and what is allowed."""


class MissingInputError(StrategyError):
    """The strategy needs an input (probabilities, embeddings, ...) the caller did not provide."""


class InvalidInputError(StrategyError):
    """An input has the wrong shape, dtype or values (NaN, inf, probabilities that do not sum to 1)."""
