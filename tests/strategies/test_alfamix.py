"""alfamix against a loop over items, anchors and alphas, and on 2-D toys with a known decision boundary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.strategies import InvalidInputError, PoolInputs, build_strategy

ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.4)


def _reference_flips(pool: PoolInputs, alphas: tuple[float, ...]) -> np.ndarray:
    """Per item: the share of (anchor of another labeled class, alpha) mixes whose argmax differs."""
    emb, lab_emb = np.asarray(pool.embeddings), np.asarray(pool.labeled_embeddings)
    labels = np.asarray(pool.labeled_labels)
    anchors = {int(c): lab_emb[labels == c].mean(axis=0) for c in sorted(set(labels.tolist()))}

    def predict(z: np.ndarray) -> int:
        return int(pool.head(torch.as_tensor(z[None]))[0].argmax())

    fractions = []
    for z in emb:
        pred, flipped, tried = predict(z), 0, 0
        for c, anchor in anchors.items():
            if c == pred:
                continue
            for a in alphas:
                tried += 1
                flipped += predict((1 - a) * z + a * anchor) != pred
        fractions.append(flipped / tried if tried else 0.0)
    return np.array(fractions)


def _reference_margin(pool: PoolInputs) -> np.ndarray:
    logits = pool.head(torch.as_tensor(np.asarray(pool.embeddings))).numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p = np.sort(p / p.sum(1, keepdims=True), axis=1)
    return 1.0 - (p[:, -1] - p[:, -2])


def _linear_head(weight: np.ndarray, bias: np.ndarray | None = None):
    w = torch.as_tensor(weight, dtype=torch.float64)
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else torch.as_tensor(bias)
    return lambda z: z @ w.to(z).T + b.to(z)


# Two classes split by the line x = 0 (class 0 on the right); labeled anchors at x = +3 and x = -3.
BOUNDARY_HEAD = _linear_head(np.array([[1.0, 0.0], [-1.0, 0.0]]))
LABELED = np.array([[3.0, -2.0], [3.0, 2.0], [-3.0, -2.0], [-3.0, 2.0]])
LABELS = np.array([0, 0, 1, 1])


@pytest.mark.parametrize(("n", "memory_mb", "keep"), [(40, 256, None), (600, 1, None), (60, 256, [0, 2])])
def test_flip_fractions_match_a_loop_over_items_anchors_alphas(make_pool, n, memory_mb, keep) -> None:
    pool = make_pool(n=n, c=4, d=16, n_labeled=12, seed=4)
    if keep is not None:  # a labeled set without classes 1 and 3: only two anchors
        mask = np.isin(np.asarray(pool.labeled_labels), keep)
        pool = PoolInputs(embeddings=pool.embeddings, head=pool.head,
                          labeled_embeddings=np.asarray(pool.labeled_embeddings)[mask],
                          labeled_labels=np.asarray(pool.labeled_labels)[mask])
    ranking = build_strategy("alfamix", dtype="float64", batch_size=5, memory_mb=memory_mb).rank(pool)
    expected = _reference_flips(pool, ALPHAS)
    np.testing.assert_allclose(ranking.scores, expected, atol=1e-12)
    assert ranking.info["candidates"] == int((expected > 0).sum())
    assert ranking.info["anchors"] == (4 if keep is None else 2)
    n_batch = min(5, int((expected > 0).sum()))
    assert (expected[ranking.order[:n_batch]] > 0).all(), "the batch holds candidates only"


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 25), c=st.integers(2, 4), d=st.integers(1, 5),
       alphas=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=4).map(tuple))
def test_flip_fractions_match_the_loop_on_random_linear_heads(seed, n, c, d, alphas) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=rng.integers(1, 8))
    head = _linear_head(rng.normal(size=(c, d)), rng.normal(size=c))
    pool = PoolInputs(embeddings=rng.normal(size=(n, d)), head=head,
                      labeled_embeddings=rng.normal(size=(len(labels), d)), labeled_labels=labels)
    ranking = build_strategy("alfamix", dtype="float64", alphas=alphas, batch_size=3, seed=seed).rank(pool)
    np.testing.assert_allclose(ranking.scores, _reference_flips(pool, alphas), atol=1e-12)


def test_the_rest_is_ranked_by_flip_fraction_then_margin(make_pool) -> None:
    pool = make_pool(n=80, c=3, d=8, n_labeled=9, seed=1)
    ranking = build_strategy("alfamix", dtype="float64", batch_size=4).rank(pool)
    flips, margin = _reference_flips(pool, ALPHAS), _reference_margin(pool)
    rest = ranking.order[min(4, int((flips > 0).sum())):]
    for a, b in zip(rest[:-1], rest[1:]):
        assert flips[a] > flips[b] or (flips[a] == flips[b] and margin[a] >= margin[b] - 1e-12)


def test_with_fewer_candidates_than_the_batch_the_batch_is_every_candidate(make_pool) -> None:
    pool = make_pool(n=60, c=3, d=8, n_labeled=9, seed=2)
    flips = _reference_flips(pool, ALPHAS)
    n_cand = int((flips > 0).sum())
    assert 0 < n_cand < 60
    ranking = build_strategy("alfamix", dtype="float64", batch_size=n_cand + 5).rank(pool)
    assert set(ranking.order[:n_cand]) == set(np.flatnonzero(flips > 0))


def test_duplicate_candidates_still_fill_the_batch_with_distinct_candidates() -> None:
    x = np.repeat(np.array([[0.1, 0.0], [-0.2, 3.0], [0.3, -3.0], [7.0, 0.0]]), 5, axis=0)  # 3 distinct candidates
    pool = PoolInputs(embeddings=x, head=BOUNDARY_HEAD, labeled_embeddings=LABELED, labeled_labels=LABELS)
    ranking = build_strategy("alfamix", batch_size=6).rank(pool)
    batch = ranking.order[:6]
    assert len(set(batch.tolist())) == 6 and (np.abs(x[batch, 0]) < 1).all()
    assert len({tuple(p) for p in x[batch]}) == 3, "every distinct candidate point is in the batch"


def test_without_labels_it_ranks_by_margin(make_pool) -> None:
    pool = make_pool(n=30, c=3, d=8)
    empty = PoolInputs(embeddings=pool.embeddings, head=pool.head, labeled_embeddings=np.zeros((0, 8)),
                       labeled_labels=np.zeros(0, dtype=np.int64))
    ranking = build_strategy("alfamix", dtype="float64").rank(empty)
    np.testing.assert_array_equal(ranking.order, np.argsort(-_reference_margin(pool), kind="stable"))
    assert ranking.info["fallback"] == "margin"


def test_a_label_the_head_does_not_know_is_a_clear_error(make_pool) -> None:
    pool = make_pool(n=10, c=3, d=8)
    bad = PoolInputs(embeddings=pool.embeddings, head=pool.head, labeled_embeddings=pool.labeled_embeddings,
                     labeled_labels=np.full(len(np.asarray(pool.labeled_labels)), 7))
    with pytest.raises(InvalidInputError, match="class id 7"):
        build_strategy("alfamix").rank(bad)


def test_boundary_items_are_candidates_and_deep_items_are_not() -> None:
    rng = np.random.default_rng(0)
    near = np.column_stack([rng.uniform(-0.3, 0.3, 30), rng.uniform(-5, 5, 30)])
    deep = np.column_stack([rng.choice([-1, 1], 30) * rng.uniform(5, 8, 30), rng.uniform(-5, 5, 30)])
    pool = PoolInputs(embeddings=np.vstack([near, deep]), head=BOUNDARY_HEAD, labeled_embeddings=LABELED,
                      labeled_labels=LABELS)
    scores = build_strategy("alfamix", dtype="float64", batch_size=5).rank(pool).scores
    assert (scores[:30] > 0).all()
    assert (scores[30:] == 0).all()


def _kmeans_cost(points: np.ndarray, centers: np.ndarray) -> float:
    return float(((points[:, None, :] - centers[None]) ** 2).sum(-1).min(1).sum())


def test_the_batch_is_diverse_instead_of_piling_into_a_clump_on_the_boundary() -> None:
    """A plane of items plus a tight clump on the boundary: the batch spreads along the boundary band
    instead of piling into the clump, and covers the candidates better than random batches of candidates."""
    rng = np.random.default_rng(0)
    tight = np.array([0.02, 5.0]) + rng.normal(scale=0.005, size=(150, 2))
    x = np.vstack([rng.uniform(-6, 6, size=(250, 2)), tight])
    clump = np.arange(len(x)) >= 250
    pool = PoolInputs(embeddings=x, head=BOUNDARY_HEAD, labeled_embeddings=LABELED, labeled_labels=LABELS)
    flips, margin = _reference_flips(pool, ALPHAS), _reference_margin(pool)
    cand = np.flatnonzero(flips > 0)
    k = 8
    greedy = np.lexsort((-margin, -flips))[:k]  # the top-k by flip fraction, then margin, without clustering
    assert clump[greedy].sum() >= k // 2
    for seed in range(3):
        ranking = build_strategy("alfamix", dtype="float64", batch_size=k, seed=seed).rank(pool)
        batch = ranking.order[:k]
        assert len(set(ranking.clusters[batch])) == k, "one pick per k-means cluster"
        assert clump[batch].sum() <= 2
        random_costs = [_kmeans_cost(x[cand], x[rng.choice(cand, k, replace=False)]) for _ in range(50)]
        assert _kmeans_cost(x[cand], x[batch]) < np.mean(random_costs)


def test_the_batch_is_near_the_boundary_more_often_than_a_random_batch() -> None:
    for seed in range(5):
        x = np.random.default_rng(seed).uniform(-6, 6, size=(400, 2))
        pool = PoolInputs(embeddings=x, head=BOUNDARY_HEAD, labeled_embeddings=LABELED, labeled_labels=LABELS)
        batch = build_strategy("alfamix", batch_size=10, seed=seed).rank(pool).order[:10]
        near = np.abs(x[:, 0]) < 1  # within a third of the anchors' distance to the boundary x = 0
        assert near[batch].mean() > 2 * near.mean()  # a random batch's expected share is near.mean() (~1/6)
