"""Label-noise review: which given labels the model doubts, judged out of fold by confident learning.

Every labeled item gets a predicted probability from a model that never trained on it: stratified k-fold
over the labeled set (k = 5 by default, fewer when the smallest class has fewer items), one fresh model per
fold built by the caller's factory (the project's model plugin). cleanlab then does the judging, as it is
maintained upstream: `cleanlab.filter.find_label_issues` (confident learning, pruned by noise rate) decides
which labels are flagged, and `cleanlab.rank.get_label_quality_scores` gives each label a quality score in
[0, 1] (lower: more likely wrong); items are ordered by issue score (1 - quality), the most doubtful first.

Nothing here changes a label: the result lists, per item, the given label, the model's label and how sure it
is. Pure (no I/O of the service); cleanlab is imported when a review runs (it loads pandas: ~4 s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

DEFAULT_FOLDS = 5
MIN_PER_CLASS = 2  # a class with one labeled item cannot be judged: no fold could train on it
METHOD = "confident learning (cleanlab find_label_issues, prune_by_noise_rate) on out-of-fold probabilities"
_EPS = 1e-12


class NotReviewable(ValueError):
    """The labeled set cannot be reviewed (too few items or classes); the message says why."""


@dataclass(frozen=True)
class LabelJudgement:
    """What the review says about one labeled item (`index`: its position in the reviewed set)."""

    index: int
    given: str  # the label an annotator gave ("a, b" for several; "(none)" for none)
    predicted: str  # the out-of-fold model's label
    confidence: float  # the out-of-fold model's confidence in its own label
    given_probability: float  # ... and in the given one (multi-label: the mean over labels of p(given value))
    quality: float  # cleanlab's label quality score: 0 (surely wrong) .. 1 (surely right)
    flagged: bool  # cleanlab's find_label_issues flags the label as a likely error
    rank: int  # 1 = the most doubtful label

    @property
    def issue_score(self) -> float:
        return 1.0 - self.quality


@dataclass(frozen=True)
class Review:
    """A review of a labeled set: the judgements, most doubtful first, and how it was made."""

    judgements: list[LabelJudgement]
    folds: int
    reviewed: int
    flagged: int
    multilabel: bool
    not_reviewed: list[dict[str, Any]] = field(default_factory=list)  # {'index', 'reason'}
    method: str = METHOD

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (judgements as dicts with their issue score)."""
        out = asdict(self)
        out["judgements"] = [{**asdict(j), "issue_score": j.issue_score} for j in self.judgements]
        return out


def fold_count(strata: np.ndarray, k: int = DEFAULT_FOLDS) -> int:
    """Folds for stratified k-fold: `k`, fewer when the smallest stratum has fewer items (at least 2)."""
    counts = np.bincount(np.asarray(strata, dtype=np.int64))
    counts = counts[counts > 0]
    if len(counts) == 0:
        return 0
    return int(max(2, min(k, counts.min())))


def out_of_fold_probs(make_model: Callable[[], Any], x: np.ndarray, y: np.ndarray, strata: np.ndarray,
                      folds: int, seed: int = 0,
                      on_fold: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, fold of each item): item i's row comes from a model fitted on the other folds only.

    `make_model()` returns a fresh, untrained model (`.fit(x, y)`, `.predict_proba(x)`); `strata` are the
    groups the folds are stratified by; `on_fold(i, folds)` is called before fold i is fitted."""
    n = len(x)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of = np.full(n, -1, dtype=np.int64)
    probs: np.ndarray | None = None
    for i, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(n), strata)):
        if on_fold is not None:
            on_fold(i, folds)
        model = make_model()
        model.fit(x[train_idx], y[train_idx])
        p = np.asarray(model.predict_proba(x[test_idx]), dtype=np.float64)
        if probs is None:
            probs = np.zeros((n, p.shape[1]), dtype=np.float64)
        probs[test_idx] = p
        fold_of[test_idx] = i
    assert probs is not None and (fold_of >= 0).all()
    return probs, fold_of


def _multilabel_strata(y: np.ndarray) -> np.ndarray:
    """Each item's rarest positive label (C for an item with none), as the held-out split stratifies."""
    counts = y.sum(axis=0)
    rarity = np.where(y > 0, counts[None, :], np.iinfo(np.int64).max)
    return np.where(y.any(axis=1), rarity.argmin(axis=1), y.shape[1]).astype(np.int64)


def _names(row: np.ndarray, labels: Sequence[str]) -> str:
    return ", ".join(labels[j] for j in np.flatnonzero(row)) or "(none)"


def review_labels(make_model: Callable[[], Any], x: np.ndarray, y: np.ndarray, labels: Sequence[str],
                  k: int = DEFAULT_FOLDS, seed: int = 0, multilabel: bool = False, threshold: float = 0.5,
                  on_fold: Callable[[int, int], None] | None = None) -> Review:
    """Review the labels `y` of items `x` (class ids (N,), or (N, C) 0/1 rows when `multilabel`).

    Items of a class (multi-label: a rarest-label stratum) with fewer than MIN_PER_CLASS items are not
    reviewed (listed in `not_reviewed`); NotReviewable when fewer than 2 classes remain."""
    y = np.asarray(y)
    n_classes = len(labels)
    strata = _multilabel_strata(y) if multilabel else y.astype(np.int64)
    counts = np.bincount(strata, minlength=n_classes + 1)
    keep = counts[strata] >= MIN_PER_CLASS
    not_reviewed = [{"index": int(i), "reason": f"its class has fewer than {MIN_PER_CLASS} labeled items"}
                    for i in np.flatnonzero(~keep)]
    idx = np.flatnonzero(keep)
    if len(np.unique(strata[idx])) < 2:
        raise NotReviewable(f"a review needs at least 2 classes with {MIN_PER_CLASS} or more labeled items each")
    folds = fold_count(strata[idx], k)
    probs, _ = out_of_fold_probs(make_model, x[idx], y[idx], strata[idx], folds, seed, on_fold)
    judged = _judge_multilabel(probs, y[idx], labels, threshold) if multilabel else \
        _judge_single(probs, y[idx].astype(np.int64), labels)
    quality, flagged, predicted, confidence, given_p, given = judged
    order = np.lexsort((np.arange(len(idx)), quality, ~flagged))  # flagged first, then by quality ascending
    judgements = [LabelJudgement(index=int(idx[j]), given=given[j], predicted=predicted[j],
                                 confidence=float(confidence[j]), given_probability=float(given_p[j]),
                                 quality=float(quality[j]), flagged=bool(flagged[j]), rank=r + 1)
                  for r, j in enumerate(order)]
    return Review(judgements, folds, len(idx), int(flagged.sum()), multilabel, not_reviewed)


def _judge_single(probs: np.ndarray, y: np.ndarray, labels: Sequence[str]):
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = _normalized(probs)
    # cleanlab wants every class of pred_probs' columns present in the labels: judge on the present ones
    present = np.unique(y)
    remap = np.full(probs.shape[1], -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    p = _normalized(probs[:, present])
    y_local = remap[y]
    quality = get_label_quality_scores(y_local, p, method="self_confidence")
    flagged = find_label_issues(y_local, p, filter_by="prune_by_noise_rate", n_jobs=1)
    top = probs.argmax(axis=1)
    return (np.asarray(quality, dtype=np.float64), np.asarray(flagged, dtype=bool),
            [labels[t] for t in top], probs.max(axis=1), probs[np.arange(len(y)), y], [labels[t] for t in y])


def _judge_multilabel(probs: np.ndarray, y: np.ndarray, labels: Sequence[str], threshold: float):
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    y = (np.asarray(y) > 0).astype(np.int64)
    p = np.clip(probs, _EPS, 1 - _EPS)
    as_lists = [list(np.flatnonzero(row)) for row in y]
    quality = get_label_quality_scores(as_lists, p)
    flagged = find_label_issues(as_lists, p, filter_by="prune_by_noise_rate", n_jobs=1)
    ticked = probs >= threshold
    sure = np.maximum(probs, 1 - probs)
    given_p = np.where(y > 0, probs, 1 - probs).mean(axis=1)
    return (np.asarray(quality, dtype=np.float64), np.asarray(flagged, dtype=bool),
            [_names(row, labels) for row in ticked], sure.min(axis=1), given_p, [_names(row, labels) for row in y])


def _normalized(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, None)
    return p / p.sum(axis=1, keepdims=True)


def precision_recall_at_k(ranked: Sequence[int], truth: set[int], k: int | None = None) -> tuple[float, float]:
    """Precision and recall of the first `k` of `ranked` (default k = len(truth)) against the set `truth`."""
    k = len(truth) if k is None else k
    if k <= 0 or not truth:
        return 0.0, 0.0
    hits = len(set(list(ranked)[:k]) & truth)
    return hits / k, hits / len(truth)
