"""Confident pre-labels: the confidence above which a model's label is right often enough to skip a human.

On held-out labeled items (the model never trained on them) the probabilities are first calibrated by
temperature scaling, fitted by scikit-learn (`CalibratedClassifierCV(method="temperature")` over the frozen
probabilities). Then a threshold is chosen so that the precision of the items at or above it meets the
target with a stated confidence: every candidate threshold's precision gets an exact (Clopper-Pearson) lower
bound, and candidates are tested in fixed sequences from the strictest down, each stopping at its first
failure (fixed-sequence testing, as in Learn-then-Test, Angelopoulos et al. 2021), so testing many thresholds
does not spend the error level. A sequence starts at the fewest items that could pass with a given number of
wrong ones: SEQUENCES sequences, for 0, 1, 2 wrong items at their start, each at an error level of
(1 - level) / SEQUENCES (Bonferroni), so one confidently wrong held-out item cannot block every threshold;
the loosest threshold any sequence accepts is kept. With no error among n items the bound is
(1 - level') ** (1 / n), so a target needs `needed_items(target, level)` held-out items above the threshold;
fewer, and no threshold is set.

Pure: no I/O of the service.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_LEVEL = 0.95
SEQUENCES = 3  # fixed sequences, starting where 0, 1 and 2 wrong items could still pass
_EPS = 1e-12  # what scikit-learn adds to probabilities before taking their log


@dataclass(frozen=True)
class ConfidentRule:
    """What a version's held-out data supports: `threshold` None when no threshold could be set (`reason`)."""

    target: float  # the precision asked for
    level: float  # the confidence of the lower bound
    inverse_temperature: float  # calibrated p = softmax(beta * log p)
    held_out: int  # held-out items it was measured on
    needed: int  # held-out items above a threshold that the target needs at the least
    threshold: float | None = None  # calibrated confidence at or above which a label is confident
    above: int = 0  # held-out items at or above the threshold
    correct: int = 0  # ... of them labeled right by the model
    lower_bound: float | None = None  # the precision's lower bound at `level`
    reason: str | None = None  # why no threshold was set

    @property
    def precision(self) -> float | None:
        """Measured held-out precision at the threshold."""
        return self.correct / self.above if self.above else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, with the measured precision."""
        return {**asdict(self), "precision": self.precision}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfidentRule:
        """The rule `as_dict` wrote."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def confident(self, probs: np.ndarray) -> np.ndarray:
        """(N,) bool: which rows of model probabilities are confident under this rule."""
        if self.threshold is None:
            return np.zeros(len(probs), dtype=bool)
        return calibrated(probs, self.inverse_temperature).max(axis=1) >= self.threshold


def lower_bound(correct: int, n: int, level: float = DEFAULT_LEVEL) -> float:
    """Exact one-sided Clopper-Pearson lower bound of a proportion `correct`/`n` at confidence `level`."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0
    if correct <= 0:
        return 0.0
    return float(beta.ppf(1.0 - level, correct, n - correct + 1))


def items_needed(target: float, level: float = DEFAULT_LEVEL, wrong: int = 0) -> int:
    """Fewest items, `wrong` of them wrong, whose precision's lower bound at `level` reaches `target`."""
    n = int(math.ceil(math.log(1.0 - level) / math.log(target) - 1e-9))
    while wrong and lower_bound(n - wrong, n, level) < target:
        n += 1
    return n


def sequence_level(level: float, sequences: int = SEQUENCES) -> float:
    """The confidence each of `sequences` fixed sequences is tested at, so that all together keep `level`."""
    return 1.0 - (1.0 - level) / sequences


def needed_items(target: float, level: float = DEFAULT_LEVEL, sequences: int = SEQUENCES) -> int:
    """Fewest held-out items above a threshold that can meet `target` at `level` (all of them right)."""
    return items_needed(target, sequence_level(level, sequences))


def fit_inverse_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """scikit-learn's temperature scaling of probabilities `probs` (N, C) to true classes `y`: its beta."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import KFold

    probs = np.asarray(probs, dtype=np.float64)
    # the default stratified 5-fold check refuses classes with fewer than 5 items although a frozen estimator
    # is never refit; one calibrator (ensemble=False) over an unstratified split fits on every item
    calibration = CalibratedClassifierCV(FrozenEstimator(_Probabilities(probs.shape[1])), method="temperature",
                                         cv=KFold(n_splits=2), ensemble=False)
    calibration.fit(probs, np.asarray(y, dtype=np.int64))
    return float(calibration.calibrated_classifiers_[0].calibrators[0].beta_)


def calibrated(probs: np.ndarray, inverse_temperature: float) -> np.ndarray:
    """softmax(beta * log p): probabilities under a fitted temperature (beta = 1 leaves them as they are)."""
    logits = inverse_temperature * np.log(np.asarray(probs, dtype=np.float64) + _EPS)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target: float, level: float = DEFAULT_LEVEL,
                     sequences: int = SEQUENCES) -> tuple[float | None, int, int, float | None]:
    """(threshold, items above, right ones above, lower bound at the sequences' level) of the loosest
    threshold that any of the fixed sequences accepts; threshold None when none accepts one."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    order = np.argsort(-confidence, kind="stable")
    conf, right = confidence[order], np.cumsum(correct[order])
    each = sequence_level(level, sequences)
    best: tuple[float | None, int, int, float | None] = (None, 0, 0, None)
    # candidates: each distinct confidence, taking every item at or above it, from the strictest down
    ends = np.flatnonzero(np.r_[conf[1:] != conf[:-1], True]) + 1
    for wrong in range(sequences):
        for n in ends[ends >= items_needed(target, each, wrong)]:
            k = int(right[n - 1])
            bound = lower_bound(k, int(n), each)
            if bound < target:
                break  # fixed-sequence testing: the first failure ends this sequence
            if n > best[1]:
                best = (float(conf[n - 1]), int(n), k, bound)
    return best


def confident_rule(probs: np.ndarray, y: np.ndarray, target: float, level: float = DEFAULT_LEVEL) -> ConfidentRule:
    """Calibrate on held-out `probs` (N, C) with true classes `y`, then choose the threshold for `target`."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    needed = needed_items(target, level)
    held = len(y)
    if held < needed:
        return ConfidentRule(target, level, 1.0, held, needed,
                             reason=f"precision {target} at {level:.0%} confidence needs at least {needed} held-out "
                                    f"labels above the threshold; this version has {held} held-out labels in all")
    beta = fit_inverse_temperature(probs, y) if len(np.unique(y)) >= 2 else 1.0
    p = calibrated(probs, beta)
    threshold, above, correct, bound = choose_threshold(p.max(axis=1), p.argmax(axis=1) == y, target, level)
    if threshold is None:
        return ConfidentRule(target, level, beta, held, needed,
                             reason=f"no confidence threshold reaches precision {target} at {level:.0%} confidence "
                                    f"on the {held} held-out labels: above it must lie at least {needed} of them, "
                                    f"all labeled right, or {items_needed(target, sequence_level(level), 1)} with "
                                    f"one wrong, or {items_needed(target, sequence_level(level), 2)} with two")
    return ConfidentRule(target, level, beta, held, needed, threshold, above, correct, bound)


class _Probabilities:
    """A fitted scikit-learn classifier whose probabilities are its input rows (for calibrating them)."""

    _estimator_type = "classifier"

    def __init__(self, n_classes: int) -> None:
        self.classes_ = np.arange(n_classes)

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Probabilities:
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x).argmax(axis=1)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"n_classes": len(self.classes_)}

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())
