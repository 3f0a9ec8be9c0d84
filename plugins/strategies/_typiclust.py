"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022, "Active Learning on a Budget")."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from pydantic import Field
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from plugins.strategies._kernels import chunks, rows_per_chunk, sq_dists
from plugins.strategies.base import BatchParams, Input, PoolInputs, Ranking, Strategy
from plugins.strategies.registry import register

# Above this many points (pool + labeled) k-means runs on mini-batches.
_MINIBATCH_ABOVE = 50_000
# Below this many points k-means runs on one thread: OpenMP start-up and sync cost more than they save.
_SERIAL_BELOW = 10_000
# Added to the mean neighbour distance so that duplicates get a large but finite typicality.
_TYPICALITY_EPS = 1e-5


def cluster_embeddings(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """K-means cluster ids (0..k-1, no empty ids) of the rows of x."""
    if n_clusters <= 1:
        return np.zeros(x.shape[0], dtype=np.int64)
    if x.shape[0] > _MINIBATCH_ABOVE:
        model = MiniBatchKMeans(n_clusters=n_clusters, n_init=1, random_state=seed,
                                batch_size=max(1024, 4 * n_clusters))
    else:
        model = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed)
    threads = 1 if x.shape[0] < _SERIAL_BELOW else None
    with warnings.catch_warnings(), threadpool_limits(limits=threads, user_api="openmp"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than clusters
        labels = model.fit_predict(x)
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def cluster_typicality(queries: torch.Tensor, members: torch.Tensor, query_pos: torch.Tensor, knn: int,
                       memory_mb: int) -> torch.Tensor:
    """1 / (mean distance to the min(knn, m-1) nearest other members + eps) of each query row.

    `members` (m, D) is the whole cluster, `queries` its rows at positions `query_pos`; 0 when m == 1.
    """
    k = min(knn, members.shape[0] - 1)
    out = torch.zeros(queries.shape[0], dtype=queries.dtype, device=queries.device)
    if k < 1 or queries.shape[0] == 0:
        return out
    m_sq = (members * members).sum(1)
    q_sq = (queries * queries).sum(1)
    step = rows_per_chunk((members.shape[0] * 3 + k * members.shape[1]) * members.element_size(), memory_mb)
    for sl in chunks(queries.shape[0], step):
        d2 = sq_dists(queries[sl], members, q_sq[sl], m_sq)
        d2[torch.arange(d2.shape[0], device=d2.device), query_pos[sl]] = float("inf")
        nearest = d2.topk(k, dim=1, largest=False).indices
        # exact distances to the chosen neighbours (the expansion above loses precision near zero)
        dists = (members[nearest] - queries[sl, None, :]).norm(dim=2)
        out[sl] = 1.0 / (dists.mean(dim=1) + _TYPICALITY_EPS)
    return out


def pool_typicality(emb: torch.Tensor, labels: torch.Tensor, n_pool: int, knn: int,
                    memory_mb: int) -> torch.Tensor:
    """Typicality of the first `n_pool` rows of `emb`, with neighbours taken within each one's cluster."""
    typicality = torch.zeros(n_pool, dtype=emb.dtype, device=emb.device)
    by_cluster = torch.argsort(labels, stable=True)
    sizes = torch.bincount(labels).tolist()
    start = 0
    for size in sizes:
        idx = by_cluster[start:start + size]
        start += size
        is_pool = idx < n_pool
        query_pos = torch.nonzero(is_pool).reshape(-1)
        typicality[idx[is_pool]] = cluster_typicality(emb[idx[is_pool]], emb[idx], query_pos, knn, memory_mb)
    return typicality


def typiclust_order(labels: torch.Tensor, typicality: torch.Tensor, n_pool: int,
                    min_cluster_size: int) -> torch.Tensor:
    """The heap order: least-covered cluster first (ties: larger, then lower id), its most typical item.

    Small clusters (< min_cluster_size) come after every other one. The j-th pick from cluster c happens
    when c's covered count is labeled_c + j, so the heap's pop sequence is one lexicographic sort.
    """
    pool_labels = labels[:n_pool]
    n_clusters = int(labels.max()) + 1
    sizes = torch.bincount(labels, minlength=n_clusters)
    labeled = torch.bincount(labels[n_pool:], minlength=n_clusters)
    # position of each pool item within its cluster, most typical first (ties: pool order)
    by_typicality = torch.argsort(-typicality, stable=True)
    by_cluster = by_typicality[torch.argsort(pool_labels[by_typicality], stable=True)]
    pool_sizes = torch.bincount(pool_labels, minlength=n_clusters)
    starts = torch.cumsum(pool_sizes, 0) - pool_sizes
    within = torch.empty(n_pool, dtype=torch.int64, device=labels.device)
    within[by_cluster] = torch.arange(n_pool, device=labels.device) - starts[pool_labels[by_cluster]]
    keys = (
        (sizes < min_cluster_size).long()[pool_labels],
        labeled[pool_labels] + within,
        -sizes[pool_labels],
        pool_labels,
    )
    order = torch.arange(n_pool, device=labels.device)
    for key in reversed(keys):  # stable sorts, least significant key first
        order = order[torch.argsort(key[order], stable=True)]
    return order


@register("typiclust")
class TypiClust(Strategy):
    """TypiClust (Hacohen et al., ICML 2022): cluster pool + labeled set into L + B k-means clusters;
    repeatedly pick, from the cluster with the fewest covered points, its most typical item, where
    typicality(x) = 1 / (mean_{x' in kNN(x) within x's cluster} ||x - x'|| + 1e-5). Scores: typicality."""

    multilabel = True

    class Params(BatchParams):
        max_clusters: int = Field(500, ge=1, description="upper bound on the number of k-means clusters")
        knn: int = Field(20, ge=1, description="neighbours (within the cluster) that define typicality")
        min_cluster_size: int = Field(
            5, ge=1, description="clusters smaller than this are only sampled once all others are exhausted"
        )

    needs = frozenset({Input.EMBEDDINGS})
    optional = frozenset({Input.LABELED_EMBEDDINGS})

    def _rank(self, pool: PoolInputs) -> Ranking:
        p = self.params
        emb = pool.embeddings
        if pool.labeled_embeddings is not None:
            emb = torch.cat([emb, pool.labeled_embeddings])
        n, n_labeled = pool.n, emb.shape[0] - pool.n
        n_clusters = min(n_labeled + p.batch_size, p.max_clusters, n + n_labeled)
        labels_np = cluster_embeddings(emb.cpu().numpy(), n_clusters, p.seed)
        labels = torch.as_tensor(labels_np, device=emb.device)
        typicality = pool_typicality(emb, labels, n, p.knn, p.memory_mb)
        order = typiclust_order(labels, typicality, n, p.min_cluster_size)
        return self._ranking(order, typicality, labels[:n], n_clusters=int(labels.max()) + 1,
                             clusterer="minibatch_kmeans" if emb.shape[0] > _MINIBATCH_ABOVE else "kmeans")
