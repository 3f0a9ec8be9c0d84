"""ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022, "Active Learning Through a Covering Lens")."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from plugins.strategies._kernels import chunks, min_sq_dists, rows_per_chunk, sq_dists
from plugins.strategies._typiclust import cluster_embeddings
from plugins.strategies.base import BatchParams, Input, PoolInputs, Ranking, Strategy
from plugins.strategies.registry import register

# Candidate radii: these quantiles of the subsample's pairwise distances (fine at the low end).
_RADIUS_LEVELS = np.unique(np.concatenate([np.geomspace(1e-4, 1e-2, 21), np.linspace(0.01, 1.0, 100)]))
# Pairwise distances drawn (uniformly over pairs) to place the candidate radii; all pairs below this.
_N_PAIRS = 200_000


def nearest_other_label_dist(z: torch.Tensor, labels: torch.Tensor, memory_mb: int) -> torch.Tensor:
    """For each row, the distance to the nearest row with another label (+inf when there is none)."""
    out = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)
    z_sq = (z * z).sum(1)
    step = rows_per_chunk(z.shape[0] * z.element_size() * 3, memory_mb)
    for sl in chunks(z.shape[0], step):
        d2 = sq_dists(z[sl], z, z_sq[sl], z_sq)
        d2[labels[sl, None] == labels[None, :]] = float("inf")
        out[sl] = d2.min(dim=1).values.sqrt()
    return out


def pure_fraction(other_dist: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Fraction of closed balls of each radius that are pure: the nearest other-label row lies outside."""
    ordered = torch.sort(other_dist).values
    inside_or_on = torch.searchsorted(ordered, radii.contiguous(), right=True)
    return (other_dist.shape[0] - inside_or_on).to(other_dist.dtype) / other_dist.shape[0]


def pair_distance_quantiles(z: torch.Tensor, levels: torch.Tensor, rng: np.random.Generator,
                            memory_mb: int) -> torch.Tensor:
    """Quantiles of the pairwise distances of the rows of z (all pairs, or _N_PAIRS random ones)."""
    s = z.shape[0]
    if s * (s - 1) // 2 <= _N_PAIRS:
        i, j = torch.triu_indices(s, s, 1, device=z.device)
    else:
        first = rng.integers(0, s, _N_PAIRS)
        second = (first + rng.integers(1, s, _N_PAIRS)) % s
        i, j = (torch.as_tensor(a, device=z.device) for a in (first, second))
    dists = torch.empty(i.shape[0], dtype=z.dtype, device=z.device)
    step = rows_per_chunk(z.shape[1] * z.element_size() * 3, memory_mb)
    for sl in chunks(i.shape[0], step):
        dists[sl] = (z[i[sl]] - z[j[sl]]).norm(dim=1)
    return torch.quantile(dists, levels.to(z.dtype))


def choose_radius(radii: torch.Tensor, purity: torch.Tensor, alpha: float) -> int:
    """Index of the largest positive radius whose purity is >= alpha (else the smallest positive one)."""
    positive = radii > 0
    ok = torch.nonzero(positive & (purity >= alpha)).reshape(-1)
    if ok.numel():
        return int(ok[torch.argmax(radii[ok])])
    candidates = torch.nonzero(positive).reshape(-1)
    return int(candidates[torch.argmin(radii[candidates])]) if candidates.numel() else 0


def shrink_threshold(d2: torch.Tensor, keep: int) -> float:
    """The largest squared radius at which at most `keep` of the distances `d2` stay within the ball."""
    if keep >= d2.shape[0]:
        return float(d2.max())
    cut = torch.kthvalue(d2, keep + 1).values.cpu().numpy()
    return float(np.nextafter(cut, cut.dtype.type(-np.inf)))


def ball_graph(x: torch.Tensor, thr2: float, max_edges: int,
               memory_mb: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Symmetric neighbour lists (CSR: int64 indptr, int32 indices; no self-loops) of the pairs with
    ||xi - xj||^2 <= thr2; thr2 is lowered (and returned) when more than `max_edges` entries would fit."""
    n, dev = x.shape[0], x.device
    budget = max_edges // 2  # stored as i < j pairs, mirrored at the end
    x_sq = (x * x).sum(1)
    total_pairs = max(1, n * (n - 1) // 2)
    rows, cols, d2s = [], [], []
    stored = done_pairs = 0
    step = rows_per_chunk(n * x.element_size() * 3, memory_mb)
    for sl in chunks(n, step):
        block = sq_dists(x[sl], x[sl.start:], x_sq[sl], x_sq[sl.start:])
        r, c = torch.nonzero(block <= thr2, as_tuple=True)
        upper = c > r
        r, c = r[upper], c[upper]
        rows.append((r + sl.start).int())
        cols.append((c + sl.start).int())
        d2s.append(block[r, c])
        stored += int(r.shape[0])
        done_pairs += (sl.stop - sl.start) * (2 * n - sl.start - sl.stop - 1) // 2  # sum of n-1-i over sl
        if stored > budget:
            d2_all = torch.cat(d2s)
            thr2 = shrink_threshold(d2_all, int(0.9 * budget * done_pairs / total_pairs))
            kept = d2_all <= thr2
            rows, cols, d2s = [torch.cat(rows)[kept]], [torch.cat(cols)[kept]], [d2_all[kept]]
            stored = int(kept.sum())
    r, c = torch.cat(rows), torch.cat(cols)  # int32: half the memory, and sorts faster
    src, dst = torch.cat([r, c]), torch.cat([c, r])
    by_src = torch.argsort(src, stable=True)
    indptr = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    indptr[1:] = torch.cumsum(torch.bincount(src, minlength=n), 0)
    return indptr, dst[by_src], thr2


def ball_members(indptr: torch.Tensor, indices: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The balls of `items` (each item and its neighbours), concatenated."""
    starts = indptr[items]
    lengths = indptr[items + 1] - starts
    offsets = torch.repeat_interleave(starts - (torch.cumsum(lengths, 0) - lengths), lengths)
    neighbours = indices[offsets + torch.arange(offsets.shape[0], device=items.device)].long()
    return torch.cat([items, neighbours])


def coverage_gain(indptr: torch.Tensor, indices: torch.Tensor, covered: torch.Tensor) -> torch.Tensor:
    """Per item, how many uncovered items its ball holds (balls are symmetric)."""
    uncovered = torch.nonzero(~covered).reshape(-1)
    return torch.bincount(ball_members(indptr, indices, uncovered), minlength=covered.shape[0])


def greedy_max_coverage(indptr: torch.Tensor, indices: torch.Tensor, covered: torch.Tensor,
                        budget: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Up to `budget` greedy picks of the ball covering the most uncovered items (ties: higher degree,
    then lower index), stopping when nothing new can be covered; returns picks, their gains, final gains."""
    n = covered.shape[0]
    covered = covered.clone()
    degree = indptr[1:] - indptr[:-1] + 1
    gain = coverage_gain(indptr, indices, covered)
    is_picked = torch.zeros(n, dtype=torch.bool, device=covered.device)
    picked, gains = [], []
    for _ in range(min(budget, n)):
        best = int(gain.masked_fill(is_picked, -1).max())
        if best <= 0:
            break
        pick = torch.argmax(torch.where((gain == best) & ~is_picked, degree, -1)).reshape(1)
        ball = ball_members(indptr, indices, pick)
        newly = ball[~covered[ball]]
        covered[newly] = True
        gain -= torch.bincount(ball_members(indptr, indices, newly), minlength=n)
        is_picked[pick] = True
        picked.append(pick)
        gains.append(best)
    picks = torch.cat(picked) if picked else torch.zeros(0, dtype=torch.int64, device=covered.device)
    return picks, torch.as_tensor(gains, dtype=torch.int64, device=covered.device), gain


def picks_then_gain_and_degree(picks: torch.Tensor, gain: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    """The picks in order, then the rest by remaining gain, then degree, descending (ties: pool order)."""
    rest_mask = torch.ones(gain.shape[0], dtype=torch.bool, device=gain.device)
    rest_mask[picks] = False
    rest = torch.nonzero(rest_mask).reshape(-1)
    rest = rest[torch.argsort(-degree[rest], stable=True)]
    rest = rest[torch.argsort(-gain[rest], stable=True)]
    return torch.cat([picks, rest])


@register("probcover")
class ProbCover(Strategy):
    """ProbCover (Yehuda et al., NeurIPS 2022): greedy max coverage of the pool by delta-balls,
    max_{S} |U_{x in S + labeled} B_delta(x)|, with delta the largest radius whose balls are
    alpha-pure under k-means pseudo-labels. Scores are marginal coverage counts."""

    multilabel = True

    class Params(BatchParams):
        radius: float | None = Field(
            None, gt=0, description="ball radius delta; None: estimate it from the purity of k-means balls"
        )
        purity: float = Field(0.95, gt=0, le=1, description="alpha: fraction of pure balls the radius keeps")
        n_clusters: int = Field(10, ge=1, description="k-means clusters giving pseudo-labels for purity")
        normalize: bool = Field(True, description="L2-normalise embeddings (self-supervised features)")
        purity_sample: int = Field(5000, ge=2, description="points (pool + labeled) used to estimate radius")
        max_edges: int = Field(
            20_000_000, ge=0, description="memory guard: the radius shrinks until the graph has at most this "
            "many (directed) edges, ~24 bytes each while building"
        )

    needs = frozenset({Input.EMBEDDINGS})
    optional = frozenset({Input.LABELED_EMBEDDINGS})

    def _rank(self, pool: PoolInputs) -> Ranking:
        p = self.params
        x = pool.embeddings
        lab = pool.labeled_embeddings if pool.labeled_embeddings is not None else x[:0]
        if p.normalize:
            x, lab = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(lab, dim=1)
        info: dict[str, float] = {}
        radius = p.radius
        if radius is None:
            radius, info["purity_achieved"] = self._estimate_radius(x, lab)
        thr2 = radius * radius
        indptr, indices, thr2_used = ball_graph(x, thr2, p.max_edges, p.memory_mb)
        if thr2_used < thr2:
            info["radius_requested"] = radius
            radius = float(np.sqrt(max(thr2_used, 0.0)))
        covered = min_sq_dists(x, lab, p.memory_mb) <= thr2_used
        picks, pick_gains, gain = greedy_max_coverage(indptr, indices, covered, p.batch_size)
        scores = gain.to(x.dtype)
        scores[picks] = pick_gains.to(x.dtype)
        order = picks_then_gain_and_degree(picks, gain, indptr[1:] - indptr[:-1])
        all_covered = covered.clone()
        if picks.numel():
            all_covered[ball_members(indptr, indices, picks)] = True
        return self._ranking(order, scores, radius=radius, radius_shrunk="radius_requested" in info,
                             n_edges=int(indices.shape[0]), coverage=float(all_covered.float().mean()),
                             **info)

    def _estimate_radius(self, x: torch.Tensor, lab: torch.Tensor) -> tuple[float, float]:
        """The largest candidate radius whose balls are `purity`-pure on a subsample, and that purity."""
        p = self.params
        rng = self.generator(1)
        total = x.shape[0] + lab.shape[0]
        if total < 2:
            return 0.0, 1.0
        idx = torch.as_tensor(np.sort(rng.choice(total, min(total, p.purity_sample), replace=False)),
                              device=x.device)
        z = torch.cat([x[idx[idx < x.shape[0]]], lab[idx[idx >= x.shape[0]] - x.shape[0]]])
        pseudo = torch.as_tensor(cluster_embeddings(z.cpu().numpy(), min(p.n_clusters, z.shape[0]), p.seed),
                                 device=x.device)
        levels = torch.as_tensor(_RADIUS_LEVELS, device=x.device)
        radii = pair_distance_quantiles(z, levels, rng, p.memory_mb)
        purity = pure_fraction(nearest_other_label_dist(z, pseudo, p.memory_mb), radii)
        best = choose_radius(radii, purity, p.purity)
        return float(radii[best]), float(purity[best])

