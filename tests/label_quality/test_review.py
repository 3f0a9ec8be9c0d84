"""The label-noise review (plugins.label_quality): flipped labels of a clean, separable set come first, and
no model judges an item it trained on."""

from __future__ import annotations

import numpy as np
import pytest

from plugins.label_quality import (
    NotReviewable,
    fold_count,
    out_of_fold_probs,
    precision_recall_at_k,
    review_labels,
)
from plugins.models import build_model
from plugins.models.linear import LogisticModel

LABELS = ("a", "b", "c")


def _blobs(n_per_class: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian clusters in 2-D: a clean, obviously separable set."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = np.repeat(np.arange(3), n_per_class)
    return centers[y] + rng.normal(scale=0.7, size=(len(y), 2)), y


class Recording(LogisticModel):
    """The logistic model, recording every item it was fitted on and every item it judged (by feature row)."""

    log: list[tuple[set[bytes], set[bytes]]] = []

    def fit(self, x, y, progress=None, augment=None):
        self.seen = {row.tobytes() for row in np.asarray(x)}
        return super().fit(x, y, progress, augment)

    def predict_proba(self, x):
        Recording.log.append((self.seen, {row.tobytes() for row in np.asarray(x)}))
        return super().predict_proba(x)


def test_three_flipped_labels_of_a_separable_set_are_the_top_flagged():
    x, y = _blobs()
    noisy = y.copy()
    flipped = [3, 50, 100]
    noisy[flipped] = [1, 2, 0]
    # weakly regularized: on clusters this far apart the model is sure of every clean item
    review = review_labels(lambda: build_model("logistic", 3, committee=1, c=10.0), x, noisy, LABELS)
    top = review.judgements[:3]
    assert {j.index for j in top} == set(flipped)
    assert all(j.flagged for j in top) and review.flagged == 3  # and nothing else is flagged
    first = {j.index: j for j in top}
    assert (first[3].given, first[3].predicted) == ("b", "a") and first[3].confidence > 0.9
    assert first[3].given_probability < 0.1 and first[3].quality < 0.1 and first[3].issue_score > 0.9
    assert [j.rank for j in review.judgements] == list(range(1, len(y) + 1))
    assert sorted(j.index for j in review.judgements) == list(range(len(y)))  # every item, once
    assert review.folds == 5 and review.reviewed == len(y) and not review.not_reviewed
    assert precision_recall_at_k([j.index for j in review.judgements], set(flipped)) == (1.0, 1.0)


def test_no_model_judges_an_item_it_trained_on():
    x, y = _blobs(n_per_class=12, seed=1)
    Recording.log = []
    probs, fold_of = out_of_fold_probs(lambda: Recording(3, committee=1), x, y, y, folds=4, seed=0)
    assert len(Recording.log) == 4 and probs.shape == (len(y), 3)
    judged = set()
    for seen, asked in Recording.log:
        assert not seen & asked  # never a training item
        judged |= asked
    assert judged == {row.tobytes() for row in x}  # and every item judged once, in its own fold
    assert np.bincount(fold_of).tolist() == [9, 9, 9, 9]
    for c in range(3):  # stratified: each fold holds 3 of each class
        assert np.bincount(fold_of[y == c]).tolist() == [3, 3, 3, 3]


def test_fewer_folds_when_a_class_is_small_and_singletons_are_not_reviewed():
    assert fold_count(np.array([0] * 50 + [1] * 3)) == 3
    assert fold_count(np.array([0] * 50 + [1] * 50)) == 5
    assert fold_count(np.array([0] * 50 + [1] * 50), k=10) == 10
    x, y = _blobs(n_per_class=10)
    y = y.copy()
    keep = np.r_[0:10, 10:20, 20:23]  # class c has 3 items
    x, y = x[keep], y[keep]
    y[-1] = 2
    review = review_labels(lambda: build_model("logistic", 3, committee=1), x, y, LABELS)
    assert review.folds == 3
    one = np.r_[0:10, 10:20, 20:21]
    review = review_labels(lambda: build_model("logistic", 3, committee=1), x[one], y[one], LABELS)
    assert review.not_reviewed == [{"index": 20, "reason": "its class has fewer than 2 labeled items"}]
    assert review.reviewed == 20 and 20 not in {j.index for j in review.judgements}
    with pytest.raises(NotReviewable):
        review_labels(lambda: build_model("logistic", 3, committee=1), x[:11], y[:11], LABELS)


def test_multilabel_review_flags_a_dropped_label():
    rng = np.random.default_rng(0)
    n = 90
    y = np.stack([np.arange(n) % 2, (np.arange(n) // 2) % 2, np.zeros(n, dtype=np.int64)], axis=1)
    y[::9, 2] = 1
    x = y * 8.0 + rng.normal(scale=0.5, size=y.shape)
    noisy = y.copy()
    noisy[[5, 40], 0] = 1 - noisy[[5, 40], 0]
    review = review_labels(lambda: build_model("logistic", 3, committee=1, multilabel=True), x, noisy, LABELS,
                           multilabel=True)
    assert review.multilabel and {j.index for j in review.judgements[:2]} == {5, 40}
    assert review.judgements[0].flagged
    as_dict = review.as_dict()
    assert as_dict["judgements"][0]["issue_score"] == pytest.approx(1 - as_dict["judgements"][0]["quality"])
