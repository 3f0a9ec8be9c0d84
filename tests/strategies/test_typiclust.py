"""typiclust against slow references: per-point sorted in-cluster distances and a literal heap."""

from __future__ import annotations

import heapq
import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.strategies import PoolInputs, _typiclust, build_strategy
from plugins.strategies._typiclust import pool_typicality, typiclust_order

EPS = 1e-5  # the paper's code: typicality = 1 / (mean kNN distance + 1e-5)


def _blobs(sizes: list[int], rng: np.random.Generator, spacing: float = 30.0, std: float = 1.0,
           d: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs: points, blob id per point, centres."""
    centres = spacing * np.stack([np.arange(len(sizes)), (np.arange(len(sizes)) % 2) * 0.5] +
                                 [np.zeros(len(sizes))] * (d - 2), axis=1)
    blob = np.repeat(np.arange(len(sizes)), sizes)
    return centres[blob] + rng.normal(scale=std, size=(len(blob), d)), blob, centres


def _reference_typicality(points: np.ndarray, cluster: np.ndarray, i: int, knn: int) -> float:
    """1 / (mean of the sorted distances from point i to the other members of its cluster, first k)."""
    others = [j for j in range(len(points)) if cluster[j] == cluster[i] and j != i]
    if not others:
        return 0.0
    dists = sorted(math.dist(points[i], points[j]) for j in others)
    k = min(knn, len(others))
    return 1.0 / (sum(dists[:k]) / k + EPS)


def _reference_heap_order(cluster: np.ndarray, typicality: np.ndarray, n_pool: int,
                          min_cluster_size: int) -> list[int]:
    """Literal heap: pop the cluster with fewest covered (labeled + picked), larger first, small last."""
    n_clusters = int(cluster.max()) + 1
    size = np.bincount(cluster, minlength=n_clusters)
    covered = np.bincount(cluster[n_pool:], minlength=n_clusters)
    queues = {c: sorted((i for i in range(n_pool) if cluster[i] == c), key=lambda i: (-typicality[i], i))
              for c in range(n_clusters)}
    heap = [(int(size[c] < min_cluster_size), int(covered[c]), -int(size[c]), c) for c in queues if queues[c]]
    heapq.heapify(heap)
    order = []
    while heap:
        small, cov, neg_size, c = heapq.heappop(heap)
        order.append(queues[c].pop(0))
        if queues[c]:
            heapq.heappush(heap, (small, cov + 1, neg_size, c))
    return order


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_pool=st.integers(1, 25), n_labeled=st.integers(0, 6),
       n_clusters=st.integers(1, 6), knn=st.integers(1, 8), duplicates=st.booleans())
def test_typicality_matches_sorted_in_cluster_distances(seed, n_pool, n_labeled, n_clusters, knn,
                                                        duplicates) -> None:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n_pool + n_labeled, 3))
    if duplicates:
        points[1::2] = points[0]
    cluster = rng.integers(0, n_clusters, size=len(points))
    got = pool_typicality(torch.as_tensor(points), torch.as_tensor(cluster), n_pool, knn, memory_mb=1)
    expected = [_reference_typicality(points, cluster, i, knn) for i in range(n_pool)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_pool=st.integers(1, 40), n_labeled=st.integers(0, 10),
       n_clusters=st.integers(1, 8), min_cluster_size=st.integers(1, 8), tied=st.booleans())
def test_order_is_the_heap_order(seed, n_pool, n_labeled, n_clusters, min_cluster_size, tied) -> None:
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, n_clusters, size=n_pool + n_labeled)
    cluster = np.unique(cluster, return_inverse=True)[1]
    typicality = rng.integers(0, 3, size=n_pool).astype(float) if tied else rng.random(n_pool)
    got = typiclust_order(torch.as_tensor(cluster), torch.as_tensor(typicality), n_pool, min_cluster_size)
    assert got.tolist() == _reference_heap_order(cluster, typicality, n_pool, min_cluster_size)


def test_strategy_scores_and_order_match_the_references() -> None:
    rng = np.random.default_rng(4)
    points, blob, _ = _blobs([12, 9, 15, 7, 11], rng)
    lab_idx = np.array([3, 20])  # one labeled point in blobs 0 and 1
    pool_idx = np.setdiff1d(np.arange(len(points)), lab_idx)
    pool, lab = points[pool_idx], points[lab_idx]
    ranking = build_strategy("typiclust", batch_size=3, knn=4, dtype="float64").rank(
        PoolInputs(embeddings=pool, labeled_embeddings=lab))
    assert ranking.info["n_clusters"] == 5  # L + batch_size
    clusters = ranking.clusters
    # k-means recovered the blobs; a labeled point is in the cluster of its nearest pool point
    assert len({(b, c) for b, c in zip(blob[pool_idx], clusters)}) == 5
    lab_clusters = clusters[np.argmin(((lab[:, None] - pool[None]) ** 2).sum(-1), axis=1)]
    everything, all_clusters = np.concatenate([pool, lab]), np.concatenate([clusters, lab_clusters])
    expected = [_reference_typicality(everything, all_clusters, i, 4) for i in range(len(pool))]
    np.testing.assert_allclose(ranking.scores, expected, rtol=1e-9)
    assert ranking.order.tolist() == _reference_heap_order(all_clusters, ranking.scores, len(pool), 5)


def test_uncovered_blobs_come_first_largest_first() -> None:
    rng = np.random.default_rng(0)
    sizes = [30, 30, 30, 20, 40, 30]  # blobs 0-2 get a labeled point; 3-5 are uncovered
    points, blob, centres = _blobs(sizes, rng)
    lab = centres[:3] + rng.normal(scale=0.5, size=(3, 2))
    ranking = build_strategy("typiclust", batch_size=3, seed=1).rank(
        PoolInputs(embeddings=points, labeled_embeddings=lab))
    picked_blobs = blob[ranking.order]
    # uncovered blobs first, larger clusters first (40, 30, 20)
    assert picked_blobs[:3].tolist() == [4, 5, 3]
    # then every blob has one covered point: rounds of one pick per blob, largest first, while all last
    for r in range(3, 3 + 19 * len(sizes), len(sizes)):
        assert sorted(picked_blobs[r:r + len(sizes)].tolist()) == list(range(len(sizes)))
        assert picked_blobs[r] == 4 and picked_blobs[r + len(sizes) - 1] == 3


def test_first_picks_are_the_dense_cores_of_distinct_blobs_and_beat_random() -> None:
    rng = np.random.default_rng(7)
    n_blobs, core, halo = 8, 12, 30
    centres = 40.0 * rng.normal(size=(n_blobs, 4))
    parts, blob, is_core = [], [], []
    for b in range(n_blobs):
        parts += [centres[b] + rng.normal(scale=0.05, size=(core, 4)),
                  centres[b] + rng.normal(scale=1.5, size=(halo, 4))]
        blob += [b] * (core + halo)
        is_core += [True] * core + [False] * halo
    perm = rng.permutation(len(blob))
    points, blob, is_core = np.concatenate(parts)[perm], np.array(blob)[perm], np.array(is_core)[perm]
    ranking = build_strategy("typiclust", batch_size=n_blobs, knn=8, dtype="float64").rank(
        PoolInputs(embeddings=points))
    first = ranking.order[:n_blobs]
    assert len(set(blob[first])) == n_blobs
    assert is_core[first].all()
    for i in first:  # the most typical point of its blob, by the slow reference
        members = np.nonzero(blob == blob[i])[0]
        typ = [_reference_typicality(points, blob, j, 8) for j in members]
        assert members[int(np.argmax(typ))] == i
    random_blobs = [len(set(blob[build_strategy("random", seed=s).rank(PoolInputs(n_items=len(blob)))
                                 .order[:n_blobs]])) for s in range(30)]
    assert np.mean(random_blobs) < n_blobs - 1


def test_deterministic_under_a_seed_and_chunking_does_not_change_the_result() -> None:
    rng = np.random.default_rng(2)
    points, _, _ = _blobs([600, 400, 300], rng, spacing=6.0)  # overlapping: k-means depends on the seed
    lab = points[:4] + 0.1
    pool = PoolInputs(embeddings=points, labeled_embeddings=lab)
    a = build_strategy("typiclust", batch_size=1, seed=3, dtype="float64").rank(pool)
    b = build_strategy("typiclust", batch_size=1, seed=3, dtype="float64", memory_mb=1).rank(pool)
    c = build_strategy("typiclust", batch_size=1, seed=3, dtype="float64").rank(pool)
    np.testing.assert_array_equal(a.order, c.order)
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)
    assert a.info["n_clusters"] == 5  # L + batch_size: clusters of ~260 rows, several chunks at 1 MiB
    one = build_strategy("typiclust", batch_size=1, max_clusters=1, dtype="float64", memory_mb=1).rank(pool)
    full = build_strategy("typiclust", batch_size=1, max_clusters=1, dtype="float64").rank(pool)
    np.testing.assert_allclose(one.scores, full.scores, rtol=1e-12)  # 1304 x 1304 in chunks of ~33 rows


def test_singleton_clusters_are_finite_and_small_clusters_come_last() -> None:
    rng = np.random.default_rng(5)
    points, blob, _ = _blobs([20, 20, 1, 2], rng)
    ranking = build_strategy("typiclust", batch_size=4, min_cluster_size=5).rank(
        PoolInputs(embeddings=points))
    assert np.isfinite(ranking.scores).all()
    assert ranking.scores[blob == 2][0] == 0.0  # singleton: no neighbours
    assert set(blob[ranking.order[-3:]]) == {2, 3}  # the small clusters only after the others are exhausted


def test_large_pools_use_minibatch_kmeans(monkeypatch) -> None:
    monkeypatch.setattr(_typiclust, "_MINIBATCH_ABOVE", 100)
    rng = np.random.default_rng(8)
    points, blob, _ = _blobs([60, 50, 40, 30], rng)
    a = build_strategy("typiclust", batch_size=4, seed=2).rank(PoolInputs(embeddings=points))
    b = build_strategy("typiclust", batch_size=4, seed=2).rank(PoolInputs(embeddings=points))
    assert a.info["clusterer"] == "minibatch_kmeans"
    np.testing.assert_array_equal(a.order, b.order)
    assert sorted(blob[a.order[:4]].tolist()) == [0, 1, 2, 3]
