"""Multi-label forms of the strategies against slow per-item references, and the refusal of the rest."""

from __future__ import annotations

import math

import numpy as np
import pytest

from plugins.strategies import STRATEGIES, InvalidInputError, PoolInputs, build_strategy


def _pool(n: int = 30, c: int = 4, k: int = 5, d: int = 6, seed: int = 0) -> PoolInputs:
    """Independent per-label probabilities, K samples around them, embeddings and 0/1 labeled targets."""
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.01, 0.99, size=(n, c))
    samples = np.clip(probs[:, None, :] + rng.normal(0, 0.15, size=(n, k, c)), 0.001, 0.999)
    return PoolInputs(probs=probs, samples=samples, embeddings=rng.normal(size=(n, d)),
                      labeled_embeddings=rng.normal(size=(8, d)),
                      labeled_labels=rng.integers(0, 2, size=(8, c)), multilabel=True)


def _h(p: float) -> float:
    """Bernoulli entropy in nats, 0 log 0 = 0."""
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


REDUCE = {"sum": sum, "mean": lambda v: sum(v) / len(v), "max": max}


@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
def test_entropy_is_the_reduced_bernoulli_entropy_of_each_label(reduction) -> None:
    pool = _pool()
    ranking = build_strategy("entropy", reduction=reduction, dtype="float64").rank(pool)
    expected = [REDUCE[reduction]([_h(p) for p in row]) for row in pool.probs]
    np.testing.assert_allclose(ranking.scores, expected, rtol=1e-10)
    assert ranking.order[0] == int(np.argmax(expected))


@pytest.mark.parametrize("reduction", ["sum", "mean", "max"])
def test_margin_is_the_reduced_distance_of_each_label_from_its_boundary(reduction) -> None:
    pool = _pool(seed=1)
    ranking = build_strategy("margin", reduction=reduction, dtype="float64").rank(pool)
    expected = [REDUCE[reduction]([1 - abs(p - (1 - p)) for p in row]) for row in pool.probs]
    np.testing.assert_allclose(ranking.scores, expected, rtol=1e-10)


def test_least_confidence_is_one_minus_the_probability_of_the_likeliest_label_set() -> None:
    pool = _pool(n=12, c=3, seed=2)
    ranking = build_strategy("least_confidence", dtype="float64").rank(pool)
    expected = []
    for row in pool.probs:  # enumerate all 2^C label vectors
        best = max(math.prod(p if bit else 1 - p for p, bit in zip(row, bits))
                   for bits in np.ndindex(*(2,) * len(row)))
        expected.append(1 - best)
    np.testing.assert_allclose(ranking.scores, expected, rtol=1e-10)


def test_bald_is_the_sum_over_labels_of_each_labels_mutual_information() -> None:
    pool = _pool(seed=3)
    ranking = build_strategy("bald", dtype="float64").rank(pool)
    expected = []
    for item in pool.samples:
        mi = [_h(float(np.mean(item[:, c]))) - float(np.mean([_h(p) for p in item[:, c]]))
              for c in range(item.shape[1])]
        expected.append(max(sum(mi), 0.0))
    np.testing.assert_allclose(ranking.scores, expected, rtol=1e-9, atol=1e-12)


def test_mc_variance_is_the_mean_over_labels_of_each_labels_sample_variance() -> None:
    pool = _pool(seed=4)
    ranking = build_strategy("mc_variance", dtype="float64").rank(pool)
    expected = [np.mean([np.var(item[:, c]) for c in range(item.shape[1])]) for item in pool.samples]
    np.testing.assert_allclose(ranking.scores, expected, rtol=1e-9)


@pytest.mark.parametrize(("n", "c", "d", "k", "seed"), [(30, 4, 6, 7, 0), (25, 3, 5, 12, 1), (15, 5, 3, 15, 2)])
def test_badge_factorised_matches_the_materialised_bce_gradient_embedding(n, c, d, k, seed,
                                                                         kmeanspp_reference) -> None:
    """k-means++ on the materialised BCE gradient embeddings g = (p - 1[p >= .5]) (x) h; rest by norm."""
    pool = _pool(n=n, c=c, d=d, seed=seed)
    ranking = build_strategy("badge", batch_size=k, seed=seed, dtype="float64").rank(pool)
    g = np.stack([np.outer(p - (p >= 0.5), h).ravel() for p, h in zip(pool.probs, pool.embeddings)])
    order, norms = kmeanspp_reference(g, k, np.random.default_rng([seed, 0]))
    np.testing.assert_array_equal(ranking.order, order)
    np.testing.assert_allclose(ranking.scores, norms, rtol=1e-10, atol=1e-12)


def test_class_balanced_groups_items_by_their_rarest_predicted_label() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.8], [0.2, 0.1], [0.7, 0.1], [0.1, 0.95]])
    labeled = np.array([[1, 0], [1, 0], [1, 1]])  # label 0: 3 positives, label 1: 1, "none": 0
    pool = PoolInputs(probs=probs, labeled_labels=labeled, multilabel=True)
    ranking = build_strategy("class_balanced", base={"name": "random"}).rank(pool)
    assert ranking.info["labeled_per_class"] == [3, 1, 0]
    # groups: 0 -> label 0; 1 -> label 1 (rarer); 2 -> none; 3 -> label 0; 4 -> label 1
    assert ranking.info["predicted_per_class"] == [2, 2, 1]
    assert ranking.order[0] == 2  # the "none predicted" group has the fewest labeled items


def test_strategies_without_a_multilabel_form_are_refused_by_name() -> None:
    pool = _pool()
    unsound = [name for name in STRATEGIES.names() if not STRATEGIES.get(name).multilabel]
    assert unsound, "some strategies read the probabilities as one softmax"
    for name in unsound:
        with pytest.raises(InvalidInputError, match=f"strategy {name} has no multi-label form"):
            build_strategy(name).rank(pool)


def test_single_label_pool_still_requires_rows_that_sum_to_one() -> None:
    pool = _pool()
    single = PoolInputs(probs=pool.probs)
    with pytest.raises(InvalidInputError):
        build_strategy("entropy").rank(single)


@pytest.mark.parametrize("strategy", [{"name": "margin"}, {"name": "badge", "params": {"batch_size": 30}}])
def test_strategy_beats_random_on_multilabel_digits(strategy) -> None:
    """Pool-based loop on digits with 4 derived labels, logistic model, 30 + 10 rounds of 30: the mean micro F1
    over the learning curve, averaged over 3 seeds, is above random's. (Measured in the same setup: the
    summed-entropy form of `entropy` does not beat random here, 0.853 vs 0.865; `reduction="max"` does.)"""
    from sklearn.datasets import load_digits
    from sklearn.metrics import f1_score

    from plugins.models import build_model

    images, classes = load_digits(return_X_y=True)
    x = (images / 16.0).reshape(-1, 8, 8)
    y = np.stack([classes % 2 == 0, classes > 4, np.isin(classes, (0, 6, 8, 9)),
                  np.isin(classes, (2, 3, 5, 7))], axis=1).astype(np.uint8)
    perm = np.random.default_rng(123).permutation(len(x))
    x, y = x[perm], y[perm]
    x_pool, y_pool, x_test, y_test = x[:1200], y[:1200], x[1200:], y[1200:]

    def curve(spec: dict, seed: int) -> float:
        labeled = list(np.random.default_rng(seed).choice(len(x_pool), 30, replace=False))
        scores = []
        for _ in range(11):
            model = build_model("logistic", 4, multilabel=True, max_iter=200, seed=seed)
            model.fit(x_pool[labeled], y_pool[labeled])
            scores.append(f1_score(y_test, model.predict_proba(x_test) >= 0.5, average="micro"))
            rest = np.setdiff1d(np.arange(len(x_pool)), labeled)
            chosen = build_strategy(spec["name"], seed=seed, **spec.get("params", {}))
            pool = model.pool_inputs(x_pool[rest], chosen.required_inputs(), x_pool[labeled], y_pool[labeled])
            labeled += rest[chosen.rank(pool).order[:30]].tolist()
        return float(np.mean(scores))

    seeds = range(3)
    active = np.mean([curve(strategy, s) for s in seeds])
    rand = np.mean([curve({"name": "random"}, s) for s in seeds])
    assert active > rand, (active, rand)
