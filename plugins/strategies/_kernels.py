"""Pure tensor kernels shared by strategies: entropies, chunked distances, greedy selections."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats along `dim`, with 0 log 0 = 0."""
    return -torch.special.xlogy(p, p).sum(dim=dim)


def rows_per_chunk(row_bytes: int, memory_mb: int, minimum: int = 1) -> int:
    """How many rows of `row_bytes` each fit in `memory_mb` MiB (at least `minimum`)."""
    return max(minimum, (memory_mb * 2**20) // max(1, row_bytes))


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most `size` covering range(n)."""
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))


def sq_dists(x: torch.Tensor, y: torch.Tensor, x_sq: torch.Tensor | None = None,
             y_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances (len(x), len(y)), clamped at 0."""
    x_sq = (x * x).sum(1) if x_sq is None else x_sq
    y_sq = (y * y).sum(1) if y_sq is None else y_sq
    return (x_sq[:, None] + y_sq[None, :] - 2.0 * (x @ y.T)).clamp_min_(0.0)


def min_sq_dists(x: torch.Tensor, centers: torch.Tensor, memory_mb: int) -> torch.Tensor:
    """For each row of x, the squared distance to its nearest center (+inf when there are none)."""
    out = torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
    if centers.shape[0] == 0 or x.shape[0] == 0:
        return out
    c_sq = (centers * centers).sum(1)
    x_sq = (x * x).sum(1)
    step = rows_per_chunk(centers.shape[0] * x.element_size() * 2, memory_mb)
    for sl in chunks(x.shape[0], step):
        out[sl] = sq_dists(x[sl], centers, x_sq[sl], c_sq).min(dim=1).values
    return out
