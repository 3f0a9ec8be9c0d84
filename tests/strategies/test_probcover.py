"""probcover against slow references: dense ball adjacency, a Python greedy, brute-force purity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.strategies import PoolInputs, build_strategy
from plugins.strategies._probcover import ball_graph, nearest_other_label_dist, pure_fraction


def _dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances, difference by difference."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _reference_probcover(pool: np.ndarray, lab: np.ndarray, radius: float, batch: int):
    """Dense boolean adjacency + Python greedy max coverage; the rest by (gain, degree) descending."""
    adj = _dists(pool, pool) <= radius
    covered = (_dists(lab, pool) <= radius).any(axis=0) if len(lab) else np.zeros(len(pool), bool)
    degree = adj.sum(axis=1)
    picked, scores = [], np.zeros(len(pool))
    for _ in range(min(batch, len(pool))):
        gain = adj[:, ~covered].sum(axis=1)
        candidates = [i for i in range(len(pool)) if i not in picked]
        best = max(gain[i] for i in candidates)
        if best == 0:
            break
        pick = max((i for i in candidates if gain[i] == best), key=lambda i: (degree[i], -i))
        picked.append(pick)
        scores[pick] = best
        covered |= adj[pick]
    gain = adj[:, ~covered].sum(axis=1)
    rest = sorted((i for i in range(len(pool)) if i not in picked), key=lambda i: (-gain[i], -degree[i], i))
    scores[rest] = gain[rest]
    return picked + rest, scores


def _coverage(pool: np.ndarray, centres: np.ndarray, radius: float) -> float:
    """Fraction of the pool within `radius` of some centre."""
    return float((_dists(centres, pool) <= radius).any(axis=0).mean()) if len(centres) else 0.0


def _away_from_boundary(*dist_matrices: np.ndarray, radius: float) -> bool:
    return all(np.abs(d - radius).min() > 1e-9 for d in dist_matrices if d.size)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), n_labeled=st.integers(0, 5),
       radius=st.floats(0.05, 1.5), batch=st.integers(1, 12), normalize=st.booleans())
def test_greedy_matches_the_dense_reference(seed, n, n_labeled, radius, batch, normalize) -> None:
    rng = np.random.default_rng(seed)
    pool, lab = rng.normal(size=(n, 3)), rng.normal(size=(n_labeled, 3))
    ref_pool, ref_lab = (_normalize(pool), _normalize(lab)) if normalize else (pool, lab)
    if not _away_from_boundary(_dists(ref_pool, ref_pool), _dists(ref_lab, ref_pool), radius=radius):
        return
    strategy = build_strategy("probcover", radius=radius, batch_size=batch, normalize=normalize,
                              dtype="float64", memory_mb=1)
    ranking = strategy.rank(PoolInputs(embeddings=pool, labeled_embeddings=lab))
    order, scores = _reference_probcover(ref_pool, ref_lab, radius, batch)
    assert ranking.order.tolist() == order
    np.testing.assert_array_equal(ranking.scores, scores)
    assert ranking.info["radius"] == radius and not ranking.info["radius_shrunk"]


def test_chunked_graph_equals_the_dense_adjacency() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(700, 3))
    indptr, indices, thr2 = ball_graph(torch.as_tensor(x), 0.6**2, max_edges=10**9, memory_mb=1)
    assert thr2 == 0.6**2
    adj = _dists(x, x) <= 0.6
    np.fill_diagonal(adj, False)
    got = np.zeros_like(adj)
    rows = np.repeat(np.arange(700), np.diff(indptr.numpy()))
    got[rows, indices.numpy()] = True
    assert len(indices) == adj.sum()  # no duplicate entries
    np.testing.assert_array_equal(got, adj)


def _blobs(n_blobs: int, per_blob: int, rng: np.random.Generator, std: float = 0.3):
    centres = 10 * np.eye(8)[:n_blobs]  # 14.1 apart
    blob = np.repeat(np.arange(n_blobs), per_blob)
    return centres[blob] + rng.normal(scale=std, size=(len(blob), 8)), blob, centres


def test_coverage_beats_random_batches() -> None:
    rng = np.random.default_rng(3)
    pool = rng.normal(size=(400, 2)) * np.array([3.0, 1.0])  # one anisotropic cloud: coverage is not trivial
    lab = pool[:3] + 0.01
    ranking = build_strategy("probcover", radius=0.5, batch_size=15, normalize=False, dtype="float64").rank(
        PoolInputs(embeddings=pool, labeled_embeddings=lab))
    ours = _coverage(pool, np.concatenate([lab, pool[ranking.order[:15]]]), 0.5)
    assert ours == pytest.approx(ranking.info["coverage"])
    random_batches = [np.random.default_rng(s).choice(400, 15, replace=False) for s in range(30)]
    random_cov = [_coverage(pool, np.concatenate([lab, pool[batch]]), 0.5) for batch in random_batches]
    assert ours > max(random_cov)


def test_estimated_radius_is_alpha_pure_by_brute_force() -> None:
    rng = np.random.default_rng(0)
    points, blob, _ = _blobs(5, 60, rng, std=1.0)  # k-means recovers these blobs
    perm = rng.permutation(len(points))
    points, blob = points[perm], blob[perm]
    pool, lab, pool_blob, lab_blob = points[20:], points[:20], blob[20:], blob[:20]
    ranking = build_strategy("probcover", n_clusters=5, purity=0.9, normalize=False, dtype="float64").rank(
        PoolInputs(embeddings=pool, labeled_embeddings=lab))
    radius = ranking.info["radius"]
    everything, labels = np.concatenate([pool, lab]), np.concatenate([pool_blob, lab_blob])
    inside = _dists(everything, everything) <= radius
    pure = [(labels[inside[i]] == labels[i]).all() for i in range(len(everything))]
    assert np.mean(pure) >= 0.9
    assert np.mean(pure) == pytest.approx(ranking.info["purity_achieved"])  # k-means recovered the blobs
    # not a trivially small radius: balls hold many points, and a much larger one is impure
    assert np.median(inside.sum(axis=1)) > 10
    inside_2x = _dists(everything, everything) <= 2 * radius
    assert np.mean([(labels[inside_2x[i]] == labels[i]).all() for i in range(len(everything))]) < 0.9


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30), n_labels=st.integers(1, 4))
def test_purity_matches_brute_force_balls(seed, n, n_labels) -> None:
    rng = np.random.default_rng(seed)
    z, labels = rng.normal(size=(n, 2)), rng.integers(0, n_labels, size=n)
    radii = np.sort(rng.uniform(0, 3, size=6))
    d = _dists(z, z)
    if not _away_from_boundary(d, radius=radii[:, None, None]):
        return
    other = nearest_other_label_dist(torch.as_tensor(z), torch.as_tensor(labels), memory_mb=1)
    got = pure_fraction(other, torch.as_tensor(radii)).numpy()
    expected = [np.mean([(labels[d[i] <= r] == labels[i]).all() for i in range(n)]) for r in radii]
    np.testing.assert_allclose(got, expected)


def test_max_edges_shrinks_the_radius_instead_of_failing() -> None:
    rng = np.random.default_rng(2)
    pool = rng.normal(size=(600, 3))
    full = build_strategy("probcover", radius=1.0, normalize=False, dtype="float64").rank(
        PoolInputs(embeddings=pool))
    assert full.info["n_edges"] > 20_000
    for max_edges in (5_000, 100, 0):
        ranking = build_strategy("probcover", radius=1.0, normalize=False, dtype="float64",
                                 max_edges=max_edges, memory_mb=1).rank(PoolInputs(embeddings=pool))
        info = ranking.info
        assert info["radius_shrunk"] and info["radius_requested"] == 1.0 and info["radius"] < 1.0
        assert info["n_edges"] <= max_edges
        # the graph is the radius-ball graph at the reported radius (up to a pair on the boundary)
        within = (_dists(pool, pool) <= info["radius"]).sum() - len(pool)
        assert abs(within - info["n_edges"]) <= 2
    assert build_strategy("probcover", radius=1.0, normalize=False, max_edges=5_000).rank(
        PoolInputs(embeddings=pool)).info["n_edges"] > 2_500  # shrinks to fit, not to nothing


def test_items_near_labeled_points_are_not_picked_first() -> None:
    rng = np.random.default_rng(6)
    points, blob, centres = _blobs(6, 40, rng)
    lab = centres[:3] + rng.normal(scale=0.1, size=(3, 8))  # blobs 0-2 are covered by the labeled set
    ranking = build_strategy("probcover", radius=3.0, batch_size=3, normalize=False).rank(
        PoolInputs(embeddings=points, labeled_embeddings=lab))
    assert sorted(blob[ranking.order[:3]].tolist()) == [3, 4, 5]
    assert (_dists(lab, points[ranking.order[:3]]) > 3.0).all()
    assert ranking.info["coverage"] == 1.0
    without = build_strategy("probcover", radius=3.0, batch_size=3, normalize=False).rank(
        PoolInputs(embeddings=points))
    assert set(blob[without.order[:3]]) & {0, 1, 2}  # what the labeled set changed
