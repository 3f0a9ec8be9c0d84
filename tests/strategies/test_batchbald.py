"""batchbald against a greedy reference that enumerates every label configuration with itertools."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.strategies import PoolInputs, build_strategy
from plugins.strategies._batchbald import (
    SATURATION,
    exact_configurations,
    joint_entropies,
    sampled_configurations,
)


def _joint_entropy(samples: np.ndarray, items: list[int]) -> float:
    """H(y_items) with P(y) = 1/K sum_k prod_i p_k(y_i | x_i), summed over every configuration y."""
    k, c = samples.shape[1:]
    total = 0.0
    for labels in itertools.product(range(c), repeat=len(items)):
        p = sum(math.prod(float(samples[i, s, y]) for i, y in zip(items, labels)) for s in range(k)) / k
        total -= p * math.log(p) if p > 0 else 0.0
    return total


def _conditional_entropy(samples: np.ndarray, item: int) -> float:
    """E_k H(y | x, theta_k)."""
    return sum(-sum(float(p) * math.log(p) for p in row if p > 0) for row in samples[item]) / samples.shape[1]


def _mutual_information(samples: np.ndarray, items: list[int]) -> float:
    """I(y_items; theta) = H(y_items) - sum_i E_k H(y_i | theta_k)."""
    return _joint_entropy(samples, items) - sum(_conditional_entropy(samples, i) for i in items)


def _reference_greedy(samples: np.ndarray, batch_size: int) -> tuple[list[int], list[float]]:
    picked: list[int] = []
    values: list[float] = []
    for _ in range(batch_size):
        candidates = [n for n in range(len(samples)) if n not in picked]
        gains = {n: _mutual_information(samples, picked + [n]) for n in candidates}
        best = max(gains, key=lambda n: (gains[n], -n))
        picked.append(best)
        values.append(gains[best])
    return picked, values


def _random_samples(n: int, k: int, c: int, seed: int, concentration: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(c, concentration), size=(n, k))


def _bald(samples: np.ndarray) -> np.ndarray:
    return build_strategy("bald", dtype="float64").rank(PoolInputs(samples=samples)).scores


@pytest.mark.parametrize(("seed", "n", "k", "c", "batch"),
                         [(0, 12, 5, 3, 3), (1, 12, 5, 3, 3), (2, 10, 4, 2, 5)])
def test_exact_path_matches_the_enumerating_reference(seed, n, k, c, batch) -> None:
    samples = _random_samples(n, k, c, seed)
    ranking = build_strategy("batchbald", batch_size=batch, dtype="float64").rank(PoolInputs(samples=samples))
    picked, values = _reference_greedy(samples, batch)
    assert list(ranking.order[:batch]) == picked
    np.testing.assert_allclose(ranking.info["batch_mutual_information"], values, atol=1e-9)
    assert ranking.info["joint"] == "exact"
    # the rest of the pool follows by BALD, which is also the reported score
    np.testing.assert_allclose(ranking.scores, _bald(samples), atol=1e-12)
    assert (np.diff(ranking.scores[ranking.order[batch:]]) <= 1e-12).all()


def test_joint_entropy_of_every_candidate_matches_enumeration() -> None:
    samples = _random_samples(9, 4, 3, seed=3)
    chosen = [4, 0, 7]
    tensor = torch.as_tensor(samples)
    joint = joint_entropies(tensor, exact_configurations(tensor[chosen]), memory_mb=1).numpy()
    np.testing.assert_allclose(joint, [_joint_entropy(samples, chosen + [n]) for n in range(9)], atol=1e-10)


def test_sampled_joint_entropy_estimates_the_exact_one() -> None:
    samples = _random_samples(10, 5, 3, seed=4)
    tensor = torch.as_tensor(samples)
    generator = torch.Generator().manual_seed(0)
    for chosen in ([2], [2, 5], [2, 5, 8]):
        exact = joint_entropies(tensor, exact_configurations(tensor[chosen]), memory_mb=1).numpy()
        configs = sampled_configurations(tensor[chosen], 20_000, generator)
        estimate = joint_entropies(tensor, configs, memory_mb=1).numpy()
        np.testing.assert_allclose(estimate, exact, atol=0.03)


def test_sampled_path_estimates_the_batch_information() -> None:
    samples = _random_samples(12, 5, 3, seed=5)
    ranking = build_strategy("batchbald", batch_size=4, exact_limit=1, num_configs=20_000,
                             dtype="float64").rank(PoolInputs(samples=samples))
    assert ranking.info["joint"] == "sampled"
    assert ranking.info["exact_steps"] == 1  # a single item's joint needs no enumeration
    batch = list(ranking.order[:4])
    exact = [_mutual_information(samples, batch[:b]) for b in range(1, 5)]
    np.testing.assert_allclose(ranking.info["batch_mutual_information"], exact, atol=0.03)
    # noisy greedy still ends close to the exact greedy batch's information
    assert exact[-1] >= _reference_greedy(samples, 4)[1][-1] - 0.05


def test_chunking_does_not_change_the_result() -> None:
    samples = _random_samples(60, 6, 4, seed=6)
    pool = PoolInputs(samples=samples)
    settings = {"batch_size": 6, "num_configs": 2000, "exact_limit": 100}
    small = build_strategy("batchbald", memory_mb=1, **settings).rank(pool)  # about 10 rows per chunk
    large = build_strategy("batchbald", **settings).rank(pool)
    np.testing.assert_array_equal(small.order, large.order)
    np.testing.assert_allclose(small.info["batch_mutual_information"], large.info["batch_mutual_information"],
                               rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_first_pick_is_the_bald_argmax(seed, make_pool) -> None:
    samples = np.asarray(make_pool(n=80, c=5, seed=seed).samples)
    ranking = build_strategy("batchbald", batch_size=3, dtype="float64").rank(PoolInputs(samples=samples))
    assert ranking.order[0] == int(np.argmax(_bald(samples)))
    assert np.isclose(ranking.info["batch_mutual_information"][0], _bald(samples).max())


def test_copies_of_the_most_informative_item_are_taken_once(make_pool) -> None:
    samples = np.asarray(make_pool(n=40, c=4, k=8, seed=1).samples)
    # eight members, two per class, each nearly certain: BALD close to log 4, and one label settles it
    top = np.full((8, 4), 0.01)
    top[np.arange(8), np.arange(8) % 4] = 0.97
    copies = [3, 11, 19, 30]
    pool = np.insert(samples, [3, 10, 17, 27], top, axis=0)
    assert sorted(np.flatnonzero((pool == top).all(axis=(1, 2)))) == copies
    batch = 4

    bald_batch = build_strategy("bald").rank(PoolInputs(samples=pool)).order[:batch]
    assert sorted(bald_batch) == copies
    ranking = build_strategy("batchbald", batch_size=batch).rank(PoolInputs(samples=pool))
    batchbald_batch = list(ranking.order[:batch])
    assert len(set(batchbald_batch) & set(copies)) == 1

    # more information about the parameters per batch than BALD's top-b or a random batch
    info = _mutual_information(pool, batchbald_batch)
    assert info > _mutual_information(pool, list(bald_batch)) + 0.3
    rng = np.random.default_rng(0)
    random_batches = [list(rng.choice(len(pool), batch, replace=False)) for _ in range(20)]
    assert info > max(_mutual_information(pool, b) for b in random_batches)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6), c=st.integers(2, 4),
       concentration=st.sampled_from([0.05, 0.5, 5.0]))
def test_batch_information_never_exceeds_log_k(seed, k, c, concentration) -> None:
    # I(y_batch; theta) <= H(theta) = log K for K equally weighted samples; exact joints keep to it
    samples = _random_samples(10, k, c, seed, concentration)
    ranking = build_strategy("batchbald", batch_size=4, dtype="float64").rank(PoolInputs(samples=samples))
    assert ranking.info["joint"] == "exact"
    assert ranking.info["information_ceiling"] == pytest.approx(math.log(k))
    assert max(ranking.info["batch_mutual_information"]) <= math.log(k) + 1e-9


def test_a_batch_at_the_ceiling_of_few_samples_is_reported() -> None:
    # two samples that disagree with certainty on every item: one label settles which sample is right,
    # so the first pick already holds all log 2 nats a batch can hold
    rng = np.random.default_rng(7)
    n, c = 30, 5
    samples = np.full((n, 2, c), 0.001)
    first, second = rng.integers(c, size=n), rng.integers(1, c, size=n)
    samples[np.arange(n), 0, first] = 1.0
    samples[np.arange(n), 1, (first + second) % c] = 1.0
    samples /= samples.sum(axis=2, keepdims=True)
    ranking = build_strategy("batchbald", batch_size=5, dtype="float64").rank(PoolInputs(samples=samples))
    values = ranking.info["batch_mutual_information"]
    assert values[0] >= SATURATION * math.log(2)
    assert ranking.info["saturated_after"] == 1
    assert values[-1] - values[0] < 0.05  # four more picks, (almost) nothing more to learn


def test_a_batch_far_below_the_ceiling_is_not_reported() -> None:
    samples = _random_samples(40, 50, 4, seed=8, concentration=20.0)  # 50 samples that barely disagree
    ranking = build_strategy("batchbald", batch_size=5, dtype="float64").rank(PoolInputs(samples=samples))
    assert ranking.info["saturated_after"] is None
    assert ranking.info["batch_mutual_information"][-1] < 0.5 * math.log(50)
