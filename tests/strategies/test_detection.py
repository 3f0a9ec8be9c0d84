"""Detection strategies against slow per-image, per-box references, and against random on a simulated
detector."""

from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np
import pytest

from plugins.boxes import BoxEvidence
from plugins.strategies import (
    InvalidInputError,
    InvalidParamsError,
    MissingInputError,
    PoolInputs,
    build_strategy,
)

BOX_STRATEGIES = ["box_uncertainty", "box_bald", "localization_stability", "box_diversity"]
MEASURES = ["entropy", "least_confidence", "margin"]
REDUCTIONS = ["max", "mean", "sum"]


# ---------------------------------------------------------------------------------------------------------
# Slow references: python loops over images and their boxes.
# ---------------------------------------------------------------------------------------------------------

def _entropy(p) -> float:
    return -sum(q * math.log(q) for q in p if q > 0)


def _measure(p, measure: str) -> float:
    if measure == "entropy":
        return _entropy(p)
    if measure == "least_confidence":
        return 1 - max(p)
    top = sorted(p, reverse=True)
    return 1 - (top[0] - top[1])


def _reduce(values: list[float], reduction: str) -> float | None:
    if not values:
        return None
    return {"max": max, "sum": sum, "mean": lambda v: sum(v) / len(v)}[reduction](values)


def _boxes_of(boxes: BoxEvidence, i: int) -> list[int]:
    return [j for j in range(len(boxes.image)) if boxes.image[j] == i]


def _fill(scores: list[float | None], empty: float | None) -> list[float]:
    present = [s for s in scores if s is not None]
    value = empty if empty is not None else (statistics.median(present) if present else 0.0)
    return [value if s is None else s for s in scores]


def _order(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def _ref_uncertainty(boxes: BoxEvidence, measure: str, reduction: str, empty: float | None) -> list[float]:
    return _fill([_reduce([_measure(boxes.probs[j], measure) for j in _boxes_of(boxes, i)], reduction)
                  for i in range(boxes.n_images)], empty)


def _ref_bald(boxes: BoxEvidence, samples: np.ndarray, reduction: str, empty: float | None) -> list[float]:
    scores = []
    for i in range(boxes.n_images):
        per_box = []
        for j in _boxes_of(boxes, i):
            passes = [list(row) for row in samples[j]]
            mean = [sum(col) / len(passes) for col in zip(*passes)]
            per_box.append(max(0.0, _entropy(mean) - sum(_entropy(p) for p in passes) / len(passes)))
        scores.append(_reduce(per_box, reduction))
    return _fill(scores, empty)


def _ref_stability(boxes: BoxEvidence, iou: np.ndarray, combine: str, empty: float | None) -> list[float]:
    scores = []
    for i in range(boxes.n_images):
        js = _boxes_of(boxes, i)
        if not js:
            scores.append(None)
            continue
        s = [max(boxes.probs[j][:-1]) for j in js]
        stability = sum(sj * iou[j] for sj, j in zip(s, js)) / sum(s)
        score = 1 - stability
        if combine == "stability_x_uncertainty":
            score *= max(1 - max(boxes.probs[j]) for j in js)
        scores.append(score)
    return _fill(scores, empty)


def _pool(box_inputs, n: int, seed: int, mean_boxes: float = 1.0, c: int = 3, d: int = 4) -> PoolInputs:
    rng = np.random.default_rng([seed, 99])
    evidence = box_inputs(n=n, c=c, seed=seed, mean_boxes=mean_boxes)
    return PoolInputs(**evidence, embeddings=rng.normal(size=(n, d)))


# (n images, seed, mean boxes per image): 10 of 30 images empty (20 non-empty: an even count), 12 of 25
# (13: odd), 3 of 40, 8 of 12, and none of 20
POOLS = [(30, 0, 1.0), (25, 1, 0.6), (40, 2, 2.5), (12, 3, 0.3), (20, 4, 6.0)]


def _check(ranking, expected: list[float]) -> None:
    np.testing.assert_allclose(ranking.scores, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ranking.order, _order(expected))


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("empty", [None, 0.0, 5.0])
@pytest.mark.parametrize(("n", "seed", "mean_boxes"), POOLS)
def test_box_uncertainty_matches_the_reference(measure, reduction, empty, n, seed, mean_boxes,
                                               box_inputs) -> None:
    pool = _pool(box_inputs, n, seed, mean_boxes)
    ranking = build_strategy("box_uncertainty", measure=measure, reduction=reduction, empty=empty,
                             dtype="float64").rank(pool)
    _check(ranking, _ref_uncertainty(pool.boxes, measure, reduction, empty))
    n_empty = n - len(set(pool.boxes.image.tolist()))
    assert ranking.info["empty_images"] == n_empty


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("empty", [None, 0.0])
@pytest.mark.parametrize(("n", "seed", "mean_boxes"), POOLS)
def test_box_bald_matches_the_reference(reduction, empty, n, seed, mean_boxes, box_inputs) -> None:
    pool = _pool(box_inputs, n, seed, mean_boxes)
    ranking = build_strategy("box_bald", reduction=reduction, empty=empty, dtype="float64").rank(pool)
    _check(ranking, _ref_bald(pool.boxes, pool.box_samples, reduction, empty))


@pytest.mark.parametrize("combine", ["stability", "stability_x_uncertainty"])
@pytest.mark.parametrize("empty", [None, 1.0])
@pytest.mark.parametrize(("n", "seed", "mean_boxes"), POOLS)
def test_localization_stability_matches_the_reference(combine, empty, n, seed, mean_boxes,
                                                      box_inputs) -> None:
    pool = _pool(box_inputs, n, seed, mean_boxes)
    ranking = build_strategy("localization_stability", combine=combine, empty=empty,
                             dtype="float64").rank(pool)
    _check(ranking, _ref_stability(pool.boxes, pool.box_iou, combine, empty))


def test_stability_without_foreground_confidence_is_the_mean_iou() -> None:
    probs = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.5, 0.0, 0.5]])
    pool = PoolInputs(boxes=BoxEvidence(2, np.array([0, 0, 1]), probs), box_iou=np.array([0.2, 0.6, 0.9]))
    ranking = build_strategy("localization_stability", dtype="float64").rank(pool)
    np.testing.assert_allclose(ranking.scores, [0.6, 0.1])


@pytest.mark.parametrize(("n", "k", "measure", "reduction", "empty", "seed"), [
    (30, 7, "entropy", "max", None, 0),
    (25, 10, "margin", "mean", 0.0, 1),
    (40, 40, "least_confidence", "sum", None, 2),
    (12, 3, "entropy", "sum", 2.0, 3),
    (20, 5, "entropy", "max", None, 4),
    (15, 4, "entropy", "max", None, 5),  # mean_boxes 0 below: no box anywhere, u = 0, pool order
])
def test_box_diversity_is_kmeanspp_on_the_uncertainty_scaled_embeddings(
        n, k, measure, reduction, empty, seed, box_inputs, kmeanspp_reference) -> None:
    pool = _pool(box_inputs, n, seed, mean_boxes=0.0 if seed == 5 else 1.0, d=5)
    ranking = build_strategy("box_diversity", batch_size=k, measure=measure, reduction=reduction, empty=empty,
                             seed=seed, dtype="float64").rank(pool)
    u = np.array(_ref_uncertainty(pool.boxes, measure, reduction, empty))
    # the strategy draws from its generator with salt 0: default_rng([seed, 0]), as badge does
    order, _ = kmeanspp_reference(u[:, None] * pool.embeddings, k, np.random.default_rng([seed, 0]))
    batch = order[: min(k, n)].tolist()
    rest = [i for i in _order(u.tolist()) if i not in batch]
    np.testing.assert_array_equal(ranking.order, batch + rest)
    np.testing.assert_allclose(ranking.scores, u, rtol=1e-10, atol=1e-12)
    assert ranking.info["batch_size"] == min(k, n)


@pytest.mark.parametrize("name", ["box_uncertainty", "box_bald", "localization_stability"])
@pytest.mark.parametrize("empty", [None, 0.5])
def test_a_pool_with_no_box_at_all_ties_in_pool_order(name, empty, box_inputs) -> None:
    pool = _pool(box_inputs, 15, seed=0, mean_boxes=0.0)
    assert len(pool.boxes.image) == 0
    ranking = build_strategy(name, empty=empty).rank(pool)
    np.testing.assert_array_equal(ranking.order, np.arange(15))
    assert np.all(ranking.scores == (0.0 if empty is None else 0.5))


# ---------------------------------------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BOX_STRATEGIES)
def test_a_classification_pool_is_told_it_lacks_boxes(name, make_pool) -> None:
    with pytest.raises(MissingInputError, match="missing: .*boxes"):
        build_strategy(name).rank(make_pool(n=20))


@pytest.mark.parametrize(("name", "params"), [
    ("box_uncertainty", {"measure": "variance"}), ("box_uncertainty", {"reduction": "median"}),
    ("box_uncertainty", {"empty": float("nan")}), ("box_bald", {"empty": float("inf")}),
    ("box_bald", {"measure": "entropy"}), ("localization_stability", {"combine": "sum"}),
    ("box_diversity", {"batch_size": 0}), ("box_diversity", {"measure": "margins"}),
])
def test_bad_params_are_rejected(name, params) -> None:
    with pytest.raises(InvalidParamsError, match="Allowed: "):
        build_strategy(name, **params)


@pytest.mark.parametrize("bad", [
    lambda b: BoxEvidence(b.n_images, b.image + 0.5, b.probs),  # fractional image index
    lambda b: BoxEvidence(-1, b.image, b.probs),
    lambda b: BoxEvidence(b.n_images, b.image, b.probs[:, :1] * 0 + 1),  # no background column
    lambda b: BoxEvidence(b.n_images, b.image, -b.probs),
    lambda b: BoxEvidence(b.n_images - 5, b.image, b.probs),  # an index past the last image
])
def test_malformed_box_evidence_is_rejected(bad, box_inputs) -> None:
    pool = _pool(box_inputs, 20, seed=0, mean_boxes=2.0)
    with pytest.raises(InvalidInputError, match="boxes"):
        build_strategy("box_uncertainty").rank(dataclasses.replace(pool, boxes=bad(pool.boxes)))


def test_per_box_inputs_that_do_not_fit_the_boxes_are_rejected(box_inputs) -> None:
    pool = _pool(box_inputs, 20, seed=0, mean_boxes=2.0)
    with pytest.raises(InvalidInputError, match="box_samples"):
        build_strategy("box_bald").rank(dataclasses.replace(pool, box_samples=pool.box_samples[1:]))
    with pytest.raises(InvalidInputError, match="box_iou"):
        build_strategy("localization_stability").rank(dataclasses.replace(pool, box_iou=pool.box_iou + 1))
    with pytest.raises(InvalidInputError, match="box_samples"):
        build_strategy("box_bald").rank(dataclasses.replace(pool, box_samples=pool.box_samples * 2))
    # a per-box input the strategy does not read is neither converted nor checked
    ranking = build_strategy("box_uncertainty").rank(dataclasses.replace(pool, box_iou=pool.box_iou[1:]))
    assert sorted(ranking.order) == list(range(20))


def test_integral_float_image_indices_are_accepted(box_inputs) -> None:
    pool = _pool(box_inputs, 20, seed=0, mean_boxes=2.0)
    float_boxes = BoxEvidence(20, pool.boxes.image.astype(float), pool.boxes.probs)
    as_float = dataclasses.replace(pool, boxes=float_boxes)
    np.testing.assert_array_equal(build_strategy("box_uncertainty").rank(as_float).order,
                                  build_strategy("box_uncertainty").rank(pool).order)


# ---------------------------------------------------------------------------------------------------------
# A simulated detector: each strategy finds the images the detector gets wrong far more often than random.
# ---------------------------------------------------------------------------------------------------------

def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _detector(n: int, seed: int, kinds: dict[str, float], c: int = 3, k: int = 8,
              confident: float = 3.0) -> tuple[PoolInputs, np.ndarray]:
    """Detector evidence on n images with 1 + Poisson(1) true defects each, one box per defect. On a
    'right' image every box is its defect's class with a logit in [confident, confident + 3], K MC passes
    agreeing, and an IoU under perturbation in [0.8, 0.97]. Otherwise the image's first box is wrong:
    'confused': the passes confidently disagree between two classes; 'ambiguous' (right, but the data is
    ambiguous): every pass flat between two classes; 'mislocated': a confident class but an IoU in
    [0.3, 0.65]; 'both': confused and mislocated. Returns the pool and each image's kind."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(list(kinds), size=n, p=list(kinds.values()))
    image, passes, iou = [], [], []
    for i in range(n):
        for b in range(1 + rng.poisson(1.0)):
            t = int(rng.integers(c))
            other = (t + 1 + int(rng.integers(c))) % (c + 1)
            logit = np.zeros(c + 1)
            logit[t] = rng.uniform(confident, confident + 3)
            box_passes = logit + rng.normal(0, 0.5, c + 1) + rng.normal(0, 0.3, (k, c + 1))
            box_iou = rng.uniform(0.8, 0.97)
            faulty = kind[i] if b == 0 else "right"
            if faulty in ("confused", "both"):
                votes = np.where(rng.random(k) < 0.5, t, other)
                box_passes = 5.0 * np.eye(c + 1)[votes] + rng.normal(0, 0.5, (k, c + 1))
            if faulty == "ambiguous":
                logit = np.zeros(c + 1)
                logit[[t, other]] = 3.0
                box_passes = logit + rng.normal(0, 0.3, c + 1) + rng.normal(0, 0.1, (k, c + 1))
            if faulty in ("mislocated", "both"):
                box_iou = rng.uniform(0.3, 0.65)
            image.append(i)
            passes.append(_softmax(box_passes))
            iou.append(box_iou)
    samples = np.stack(passes)
    boxes = BoxEvidence(n_images=n, image=np.array(image), probs=samples.mean(axis=1))
    return PoolInputs(boxes=boxes, box_samples=samples, box_iou=np.array(iou)), kind


def _hits(name: str, pool: PoolInputs, target: np.ndarray, k: int, **params) -> int:
    return int(target[build_strategy(name, **params).rank(pool).order[:k]].sum())


def _assert_beats_random(name: str, params: dict, kinds: dict[str, float], target: str,
                         worse: str | None = None, worse_params: dict | None = None) -> None:
    """Over 5 seeds, top-30 of 200 images: `name` finds more `target` images than random on every seed and
    at least twice as many in all; `worse` (a strategy blind to this error) does not."""
    ours, rand, blind = [], [], []
    for seed in range(5):
        pool, kind = _detector(200, seed, kinds)
        hit = kind == target
        ours.append(_hits(name, pool, hit, 30, **params))
        rand.append(_hits("random", pool, hit, 30, seed=seed))
        if worse is not None:
            blind.append(_hits(worse, pool, hit, 30, **(worse_params or {})))
    assert all(o > r for o, r in zip(ours, rand)), (ours, rand)
    assert sum(ours) >= 2 * sum(rand), (ours, rand)
    if worse is not None:
        assert sum(ours) >= 2 * sum(blind), (ours, blind)


@pytest.mark.parametrize("measure", MEASURES)
def test_box_uncertainty_finds_the_images_with_a_confused_box(measure) -> None:
    _assert_beats_random("box_uncertainty", {"measure": measure}, {"right": 0.8, "confused": 0.2}, "confused")


def test_box_bald_finds_disagreement_where_box_entropy_picks_ambiguity() -> None:
    _assert_beats_random("box_bald", {}, {"right": 0.6, "ambiguous": 0.2, "confused": 0.2}, "confused",
                         worse="box_uncertainty")


def test_localization_stability_finds_the_mislocated_boxes_uncertainty_misses() -> None:
    _assert_beats_random("localization_stability", {}, {"right": 0.6, "mislocated": 0.2, "confused": 0.2},
                         "mislocated", worse="box_uncertainty")


def test_stability_x_uncertainty_finds_the_images_wrong_both_ways() -> None:
    kinds = {"right": 0.55, "mislocated": 0.15, "confused": 0.15, "both": 0.15}
    _assert_beats_random("localization_stability", {"combine": "stability_x_uncertainty"}, kinds, "both",
                         worse="localization_stability")


def _scratch_pool(seed: int, n: int = 200, groups: int = 15, views: int = 40, singles: int = 10,
                  d: int = 8, c: int = 3) -> tuple[PoolInputs, np.ndarray, np.ndarray]:
    """A confident detector (logits in [5, 8]) on n images of `groups` parts (embedding = the part's center
    plus small noise), shuffled: `views` images of part 0 show one scratch the detector is unsure of (a box
    flat between two classes), `singles` more such defects sit on parts 1..singles, one image each. Returns
    the pool, which images hold an uncertain defect, and each image's part."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (groups, d))
    part = np.concatenate([np.zeros(views, int), np.arange(1, singles + 1),
                           rng.integers(0, groups, n - views - singles)])
    wrong = np.arange(n) < views + singles
    image, probs = [], []
    for i in range(n):
        for b in range(1 + rng.poisson(1.0)):
            t = int(rng.integers(c))
            logit = np.zeros(c + 1)
            logit[t] = rng.uniform(5, 8)
            if b == 0 and wrong[i]:
                logit = np.zeros(c + 1)
                logit[[t, (t + 1) % (c + 1)]] = 3.0
            image.append(i)
            probs.append(_softmax(logit + rng.normal(0, 0.3, c + 1)))
    perm = rng.permutation(n)  # pool position p holds image perm[p]
    position = np.argsort(perm)[np.array(image)]
    by_position = np.argsort(position, kind="stable")
    boxes = BoxEvidence(n_images=n, image=position[by_position], probs=np.array(probs)[by_position])
    embeddings = centers[part] + rng.normal(0, 0.05, (n, d))
    return PoolInputs(boxes=boxes, embeddings=embeddings[perm]), wrong[perm], part[perm]


def test_box_diversity_covers_distinct_defects_not_one_scratch_many_times() -> None:
    def defects(top: np.ndarray, wrong: np.ndarray, part: np.ndarray) -> int:
        return len(set(part[top][wrong[top]].tolist()))

    ours, plain, rand = [], [], []
    for seed in range(5):
        pool, wrong, part = _scratch_pool(seed)
        for out, name, params in ((ours, "box_diversity", {"batch_size": 10}), (plain, "box_uncertainty", {}),
                                  (rand, "random", {})):
            out.append(defects(build_strategy(name, seed=seed, **params).rank(pool).order[:10], wrong, part))
    assert all(o > max(p, r) for o, p, r in zip(ours, plain, rand)), (ours, plain, rand)
    assert sum(ours) >= 2 * sum(plain), (ours, plain)
