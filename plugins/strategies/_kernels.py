"""Pure tensor kernels shared by strategies: entropies, chunked distances, greedy selections."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch


def entropy(p: torch.Tensor, dim: int | tuple[int, ...] = -1) -> torch.Tensor:
    """Shannon entropy in nats summed over `dim`, with 0 log 0 = 0 (one temporary the size of p)."""
    return -p.clamp_min(torch.finfo(p.dtype).tiny).log_().mul_(p).sum(dim=dim)


def entropy_rows_into(p: torch.Tensor, out: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """out[i] = -sum_c p_ic log p_ic for the rows of a 2-D block p (0 log 0 = 0), with `scratch` (at least
    p.numel() elements) as the only temporary: in-place passes over a cache-sized block and one GEMV."""
    buf = scratch[: p.numel()].view(p.shape)
    torch.clamp_min(p, torch.finfo(p.dtype).tiny, out=buf).log_().mul_(p)
    return torch.mv(buf, p.new_ones(p.shape[1]), out=out).neg_()


def bernoulli_entropy(p: torch.Tensor) -> torch.Tensor:
    """Elementwise entropy in nats of Bernoulli(p): -p log p - (1 - p) log(1 - p), with 0 log 0 = 0."""
    tiny = torch.finfo(p.dtype).tiny
    q = 1.0 - p
    return -(p * p.clamp_min(tiny).log() + q * q.clamp_min(tiny).log())


def reduce_labels(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """(..., C) per-label values -> (...,): their sum, mean or max over the last axis."""
    if reduction == "sum":
        return values.sum(dim=-1)
    if reduction == "mean":
        return values.mean(dim=-1)
    if reduction == "max":
        return values.amax(dim=-1)
    raise ValueError(f"unknown reduction {reduction!r}; use 'sum', 'mean' or 'max'")


# Rows refreshed first by the lazy k-center step (doubled until the step's pick is certain).
_LAZY_CANDIDATES = 64


def rows_per_chunk(row_bytes: int, memory_mb: int, minimum: int = 1) -> int:
    """How many rows of `row_bytes` each fit in `memory_mb` MiB (at least `minimum`)."""
    return max(minimum, (memory_mb * 2**20) // max(1, row_bytes))


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most `size` covering range(n)."""
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))


def map_rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, memory_mb: int,
             temporaries: int = 3) -> torch.Tensor:
    """fn applied to row blocks of x, concatenated: fn's temporaries stay within memory_mb on any pool size."""
    row_bytes = temporaries * x[0].numel() * x.element_size() if len(x) else 1
    step = rows_per_chunk(row_bytes, memory_mb)
    if step >= len(x):
        return fn(x)
    return torch.cat([fn(x[sl]) for sl in chunks(len(x), step)])


def row_sq_norms(x: torch.Tensor) -> torch.Tensor:
    """||x_i||^2 for each row i, without an (N, D) temporary."""
    return torch.linalg.vector_norm(x, dim=1).square()


def sq_dists(x: torch.Tensor, y: torch.Tensor, x_sq: torch.Tensor | None = None,
             y_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances (len(x), len(y)), clamped at 0; one (len(x), len(y)) buffer."""
    x_sq = row_sq_norms(x) if x_sq is None else x_sq
    y_sq = row_sq_norms(y) if y_sq is None else y_sq
    return torch.addmm(x_sq[:, None], x, y.T, alpha=-2.0).add_(y_sq[None, :]).clamp_min_(0.0)


def min_sq_dists(x: torch.Tensor, centers: torch.Tensor, memory_mb: int) -> torch.Tensor:
    """For each row of x, the squared distance to its nearest center (+inf when there are none)."""
    out = torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
    if centers.shape[0] == 0 or x.shape[0] == 0:
        return out
    c_sq = row_sq_norms(centers)
    x_sq = row_sq_norms(x)
    step = rows_per_chunk(centers.shape[0] * x.element_size() * 2, memory_mb)
    for sl in chunks(x.shape[0], step):
        out[sl] = sq_dists(x[sl], centers, x_sq[sl], c_sq).amin(dim=1)
    return out


def outer_sq_norms(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """||a_i (x) h_i||^2 = ||a_i||^2 ||h_i||^2 for each row i."""
    return row_sq_norms(a) * row_sq_norms(h)


def factorized_sq_dists(a: torch.Tensor, h: torch.Tensor, idx: list[int] | torch.Tensor,
                        g_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared distances (N, len(idx)) between outer products g_i = a_i (x) h_i, without forming any g.

    ||g_i - g_j||^2 = ||g_i||^2 + ||g_j||^2 - 2 (a_i . a_j)(h_i . h_j); values within the rounding error of
    that formula ((C + D) eps (||g_i||^2 + ||g_j||^2), the dot-product error bound) are set to 0, so that
    exact duplicates are at distance exactly 0.
    """
    g_sq = outer_sq_norms(a, h) if g_sq is None else g_sq
    idx = torch.as_tensor(idx, dtype=torch.int64, device=a.device).reshape(-1)
    scale = g_sq[:, None] + g_sq[idx][None, :]
    dists = scale - 2.0 * (a @ a[idx].T) * (h @ h[idx].T)
    tol = torch.finfo(dists.dtype).eps * (a.shape[1] + h.shape[1])
    return dists.masked_fill_(dists <= tol * scale, 0.0)


def kmeanspp_factorized(a: torch.Tensor, h: torch.Tensor, k: int, rng: np.random.Generator) -> list[int]:
    """k-means++ seeding of min(k, N) rows of g = a (x) h: first the largest ||g||, then D^2 sampling.

    Each D^2 draw takes one `rng.random()` u and picks the first row whose cumulative squared distance
    exceeds u * total (picked rows weigh 0, so they never come back). Once every distance is 0, the
    remaining picks are the unpicked rows by descending ||g||. Cost O(k N (C + D)), memory O(N).
    """
    n = a.shape[0]
    k = min(k, n)
    if k <= 0:
        return []
    g_sq = outer_sq_norms(a, h)
    picked = [int(torch.argmax(g_sq))]
    min_sq = factorized_sq_dists(a, h, picked, g_sq)[:, 0]
    min_sq[picked[0]] = 0.0
    while len(picked) < k:
        cum = torch.cumsum(min_sq, 0, dtype=torch.float64)
        total = float(cum[-1])
        if total <= 0.0:
            return picked + _unpicked_by_score(g_sq, picked)[: k - len(picked)]
        target = torch.tensor([rng.random() * total], dtype=torch.float64, device=a.device)
        c = int(torch.searchsorted(cum, target, right=True))
        if c >= n:  # u * total rounded up to total: the last row with mass
            c = int(torch.nonzero(min_sq > 0)[-1])
        picked.append(c)
        torch.minimum(min_sq, factorized_sq_dists(a, h, [c], g_sq)[:, 0], out=min_sq)
        min_sq[c] = 0.0
    return picked


def _unpicked_by_score(scores: torch.Tensor, picked: list[int]) -> list[int]:
    """The rows not in `picked`, by descending score (ties: lower index first)."""
    mask = torch.ones(scores.shape[0], dtype=torch.bool, device=scores.device)
    mask[picked] = False
    rest = torch.nonzero(mask).reshape(-1)
    return rest[torch.argsort(-scores[rest], stable=True)].tolist()


def kcenter_greedy(x: torch.Tensor, k: int, min_sq: torch.Tensor,
                   memory_mb: int = 256) -> tuple[list[int], torch.Tensor]:
    """Farthest-first traversal (Gonzalez, 1985): min(k, N) times add the row farthest from the centers.

    `min_sq` is each row's squared distance to the existing centers; +inf everywhere means there are
    none, and then the first center is the row closest to the mean. Returns the picks and the squared
    distances to the nearest center after them (0 for the picks).

    Lazy evaluation: each row keeps an upper bound of its distance (exact when last refreshed), and a step
    refreshes only the rows with the largest bounds until one of them provably beats every other bound;
    ties go to the lowest index, as a plain argmax. The picks are those of the eager traversal at a small
    fraction of its O(k N D) memory traffic; one chunked pass at the end gives every row's exact distance.
    """
    n = x.shape[0]
    k = min(k, n)
    x_sq = row_sq_norms(x)
    picked: list[int] = []
    if k > 0 and bool(torch.isinf(min_sq).all()):
        picked.append(int(torch.argmin(sq_dists(x, x.mean(0, keepdim=True), x_sq)[:, 0])))
    bound = torch.minimum(min_sq, min_sq_dists(x, x[picked], memory_mb)) if picked else min_sq.clone()
    seen = torch.full((n,), len(picked), dtype=torch.int64, device=x.device)  # picks each bound covers
    bound[picked] = -float("inf")
    while len(picked) < k:
        size = min(n, _LAZY_CANDIDATES)
        while True:
            top = torch.topk(bound, size)  # every other row's bound is <= top.values[-1]
            rows = top.indices[seen[top.indices] < len(picked)]
            if len(rows):
                fresh = sq_dists(x[rows], x[picked], x_sq[rows], x_sq[picked]).amin(dim=1)
                bound[rows] = torch.minimum(bound[rows], fresh)
                seen[rows] = len(picked)
            values = bound[top.indices]
            best = values.max()
            if size == n or best > top.values[-1]:
                break
            size = min(n, 2 * size)
        c = int(top.indices[values == best].min())
        picked.append(c)
        bound[c] = -float("inf")
    final = torch.minimum(min_sq, min_sq_dists(x, x[picked], memory_mb)) if picked else min_sq.clone()
    final[picked] = 0.0
    return picked, final.clamp_min_(0.0)
