"""ALFA-Mix (Parvaneh, Abbasnejad, Teney, Haffari, van den Hengel & Shi, CVPR 2022): anchor mixing."""

from __future__ import annotations

import warnings
from typing import Annotated

import numpy as np
import torch
from pydantic import Field
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from plugins.strategies._kernels import chunks, rows_per_chunk
from plugins.strategies.base import BatchParams, Head, Input, PoolInputs, Ranking, Strategy, order_by_scores
from plugins.strategies.errors import InvalidInputError
from plugins.strategies.registry import register

Alpha = Annotated[float, Field(gt=0, lt=1)]


def class_anchors(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The classes present in `labels` and the mean embedding of each, (A,) and (A, D)."""
    classes, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(classes.numel(), embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, inverse, embeddings)
    counts = torch.bincount(inverse, minlength=classes.numel()).to(embeddings.dtype)
    return classes, sums / counts[:, None]


def mix(z: torch.Tensor, anchors: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """(n, A, K, D) interpolations (1 - alpha) z + alpha anchor for every item, anchor and alpha."""
    z4 = z[:, None, None, :]
    return z4 + alphas[None, None, :, None] * (anchors[None, :, None, :] - z4)


def margin_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """1 - (p1 - p2) of the softmax; 0 with a single class."""
    if logits.shape[1] < 2:
        return torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
    top2 = torch.softmax(logits, dim=1).topk(2, dim=1).values
    return 1.0 - (top2[:, 0] - top2[:, 1])


def lexicographic_order(primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    """Indices by `primary` desc, ties by `secondary` desc, then by position."""
    by_secondary = order_by_scores(secondary)
    return by_secondary[order_by_scores(primary[by_secondary])]


def closest_to_centroids(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means (one seeded init) on x; the row nearest each non-empty cluster's centroid, and the labels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than clusters
        km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    dist = ((x - km.cluster_centers_[km.labels_]) ** 2).sum(axis=1)
    by_cluster_then_dist = np.lexsort((dist, km.labels_))
    first = np.r_[True, np.diff(km.labels_[by_cluster_then_dist]) != 0]
    return by_cluster_then_dist[first], km.labels_


@register("alfamix")
class AlfaMix(Strategy):
    """ALFA-Mix (Parvaneh et al., CVPR 2022): z is a candidate if argmax head((1-a) z + a z*_c) differs from
    yhat = argmax head(z) for some a in `alphas` and some anchor z*_c, the mean labeled embedding of a
    labeled class c != yhat.

    The batch is the candidate nearest each of min(batch_size, #candidates) k-means centroids of the
    candidates' embeddings (clusters left empty by duplicate points are filled from the rest order);
    the rest follows by flip fraction (share of (anchor, alpha) pairs that flip) desc, then by margin
    uncertainty of head(z) desc. scores = flip fraction; clusters = k-means cluster of each candidate (-1 for
    the others) when k-means ran. Approximation: a fixed scalar alpha grid replaces the paper's per-dimension,
    gradient-optimised alpha. Cost: N A K head evaluations + O(N A K D), chunked over N so the mixes and
    their logits stay under memory_mb (the head's own activations are not counted), plus k-means.
    With no labeled items the order is the margin of head(z) (info['fallback'] says why).
    """

    class Params(BatchParams):
        alphas: tuple[Alpha, ...] = Field(
            (0.05, 0.1, 0.2, 0.3, 0.4), min_length=1, description="mixing coefficients tried, each in (0, 1)"
        )

    needs = frozenset({Input.EMBEDDINGS, Input.HEAD, Input.LABELED_EMBEDDINGS, Input.LABELED_LABELS})

    def _rank(self, pool: PoolInputs) -> Ranking:
        emb, labels = pool.embeddings, pool.labeled_labels
        if labels.numel() == 0:
            logits = self._logits(pool.head, emb)
            margin = margin_uncertainty(logits)
            return self._ranking(order_by_scores(margin), margin, fallback="margin",
                                 reason="empty labeled set")
        classes, anchors = class_anchors(pool.labeled_embeddings, labels)
        flips, margin = self._flip_fractions(pool.head, emb, classes, anchors)
        order = lexicographic_order(flips, margin)
        candidates = torch.nonzero(flips > 0).reshape(-1)
        clusters = None
        if self.params.batch_size < candidates.numel():  # else the batch is every candidate, first in order
            order, clusters = self._clustered_batch_first(order, candidates, emb)
        return self._ranking(order, flips, clusters, candidates=int(candidates.numel()),
                             anchors=int(classes.numel()))

    def _clustered_batch_first(self, order: torch.Tensor, candidates: torch.Tensor,
                               emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`order` with the k-means batch of candidates moved first; cluster id per item (-1: no candidate)."""
        k = self.params.batch_size
        random_state = int(self.generator(1).integers(2**31))
        rows, labels = closest_to_centroids(emb[candidates].double().cpu().numpy(), k, random_state)
        picked = torch.zeros(emb.shape[0], dtype=torch.bool, device=emb.device)
        picked[candidates[torch.as_tensor(rows, device=emb.device)]] = True
        picked[order[~picked[order]][: k - int(picked.sum())]] = True  # fill clusters left empty
        clusters = torch.full((emb.shape[0],), -1, dtype=torch.int64, device=emb.device)
        clusters[candidates] = torch.as_tensor(labels, dtype=torch.int64, device=emb.device)
        return torch.cat([order[picked[order]], order[~picked[order]]]), clusters

    def _logits(self, head: Head, z: torch.Tensor) -> torch.Tensor:
        """head(z) as a (len(z), C) tensor of this strategy's dtype, checked."""
        logits = torch.as_tensor(head(z))
        if logits.ndim != 2 or logits.shape[0] != z.shape[0]:
            raise InvalidInputError(
                f"head must map (M, D) embeddings to (M, C) logits; got {tuple(logits.shape)} "
                f"for M={z.shape[0]}"
            )
        logits = logits.to(device=z.device, dtype=z.dtype)
        if not bool(torch.isfinite(logits).all()):
            raise InvalidInputError("head returned NaN or infinite logits")
        return logits

    def _flip_fractions(self, head: Head, emb: torch.Tensor, classes: torch.Tensor,
                        anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) share of (other-class anchor, alpha) pairs whose mix flips the prediction; (N,) margin."""
        n_classes = self._logits(head, emb[:1]).shape[1]
        if int(classes.max()) >= n_classes:
            raise InvalidInputError(
                f"labeled_labels has class id {int(classes.max())} but the head gives {n_classes} classes"
            )
        alphas = torch.as_tensor(self.params.alphas, dtype=emb.dtype, device=emb.device)
        n_mix = classes.numel() * alphas.numel()
        flips = torch.empty(emb.shape[0], dtype=emb.dtype, device=emb.device)
        margin = torch.empty_like(flips)
        row_bytes = emb.element_size() * (n_mix + 1) * 2 * (emb.shape[1] + n_classes)
        for sl in chunks(emb.shape[0], rows_per_chunk(row_bytes, self.params.memory_mb)):
            z = emb[sl]
            logits = self._logits(head, z)
            margin[sl] = margin_uncertainty(logits)
            pred = logits.argmax(dim=1)
            mixed = mix(z, anchors, alphas).reshape(-1, z.shape[1])
            mixed_pred = self._logits(head, mixed).argmax(dim=1).reshape(z.shape[0], classes.numel(), -1)
            valid = (classes[None, :] != pred[:, None])[:, :, None]  # skip the predicted class's anchor
            flipped = (mixed_pred != pred[:, None, None]) & valid
            n_valid = valid.sum(dim=(1, 2)) * alphas.numel()
            flips[sl] = flipped.sum(dim=(1, 2)).to(emb.dtype) / n_valid.clamp_min(1).to(emb.dtype)
        return flips, margin
