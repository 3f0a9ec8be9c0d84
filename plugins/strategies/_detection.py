"""Object detection: image-level acquisition scores from box-level evidence (plugins.boxes.BoxEvidence).

An image with no box gets the `empty` score; by default the median of the other images' scores, so it is
neither buried (it may hide a defect the detector missed) nor put first (most such images are clean).
The math is in `_detection_math`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from plugins.strategies._bayesian import bald_scores
from plugins.strategies._detection_math import (
    Measure,
    Reduction,
    box_least_confidence,
    box_measure,
    fill_empty,
    localization_instability,
    per_image,
)
from plugins.strategies._kernels import kmeanspp_factorized, map_rows
from plugins.strategies.base import (
    BatchParams,
    Input,
    PoolInputs,
    Ranking,
    ScoreStrategy,
    Strategy,
    StrategyParams,
    batch_then_scores,
    order_by_scores,
)
from plugins.strategies.registry import register

_EMPTY_HELP = ("score of an image with no box; None: the median of the other images' scores (such an image "
               "may hide a missed defect: neither buried nor first)")
_MEASURE_HELP = ("per-box uncertainty over its C + 1 distribution: 'entropy' (nats), 'least_confidence' "
                 "(1 - max p) or 'margin' (1 - (p1 - p2))")
_REDUCTION_HELP = "how an image's box scores combine: 'max' (its most uncertain box), 'mean' or 'sum'"


class EmptyParams(StrategyParams):
    """Hyperparameters of every image score built from box scores."""

    empty: float | None = Field(None, allow_inf_nan=False, description=_EMPTY_HELP)


class BoxUncertaintyParams(EmptyParams):
    """Hyperparameters of box uncertainty."""

    measure: Measure = Field("entropy", description=_MEASURE_HELP)
    reduction: Reduction = Field("max", description=_REDUCTION_HELP)


class BoxBaldParams(EmptyParams):
    """Hyperparameters of box BALD."""

    reduction: Reduction = Field("max", description=_REDUCTION_HELP)


class StabilityParams(EmptyParams):
    """Hyperparameters of localization stability."""

    combine: Literal["stability", "stability_x_uncertainty"] = Field(
        "stability", description="'stability': 1 - stability; 'stability_x_uncertainty': times the image's "
                                 "largest box least confidence (Kao et al.'s LS + C)")


class BoxDiversityParams(BoxUncertaintyParams, BatchParams):
    """Hyperparameters of the box uncertainty x embedding diversity hybrid."""


def box_tensors(pool: PoolInputs, device: torch.device,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool's (M, C + 1) box distributions and (M,) image index as tensors on `device`."""
    boxes = pool.boxes
    probs = torch.as_tensor(np.asarray(boxes.probs), dtype=dtype, device=device)
    image = torch.as_tensor(np.asarray(boxes.image), device=device).to(torch.int64)
    return probs, image


class _ImageScoreStrategy(ScoreStrategy):
    """A per-image score reduced from box scores; images with no box get the `empty` rule."""

    def _rank(self, pool: PoolInputs) -> Ranking:
        raw = self.raw_score(pool)
        scores = fill_empty(raw, self.params.empty)
        empty = torch.isnan(raw)
        info = {"empty_images": int(empty.sum())}
        if info["empty_images"]:
            info["empty_score"] = float(scores[empty][0])
        return self._ranking(order_by_scores(scores), scores, **info)

    def score(self, pool: PoolInputs) -> torch.Tensor:
        return fill_empty(self.raw_score(pool), self.params.empty)

    @abstractmethod
    def raw_score(self, pool: PoolInputs) -> torch.Tensor:
        """(N,) image score, NaN for an image with no box."""


def box_uncertainty_scores(pool: PoolInputs, params: BoxUncertaintyParams, device: torch.device,
                           dtype: torch.dtype) -> torch.Tensor:
    """(N,) reduced per-box uncertainty of each image, NaN where the image has no box."""
    probs, image = box_tensors(pool, device, dtype)
    return per_image(box_measure(probs, params.measure), image, pool.n, params.reduction)


@register("box_uncertainty")
class BoxUncertainty(_ImageScoreStrategy):
    """Box uncertainty: score = reduction_j u(p_j) over the image's boxes j, u the entropy
    -sum_c p_jc log p_jc, the least confidence 1 - max_c p_jc or the margin 1 - (p_j1 - p_j2) of the box's
    C + 1 distribution (background included); by default the max, the image's most uncertain box.
    """

    multilabel = False
    Params = BoxUncertaintyParams
    needs = frozenset({Input.BOXES})

    def raw_score(self, pool: PoolInputs) -> torch.Tensor:
        return box_uncertainty_scores(pool, self.params, self.device, self.dtype)


@register("box_bald")
class BoxBALD(_ImageScoreStrategy):
    """Box BALD (Houlsby et al. 2011 per box): score = reduction_j [H(mean_k p_jk) - mean_k H(p_jk)] over the
    image's boxes, p_jk box j's C + 1 distribution under MC-dropout pass k; by default the max.
    """

    multilabel = False
    Params = BoxBaldParams
    needs = frozenset({Input.BOXES, Input.BOX_SAMPLES})

    def raw_score(self, pool: PoolInputs) -> torch.Tensor:
        _, image = box_tensors(pool, self.device, self.dtype)
        per_box = map_rows(bald_scores, pool.box_samples, self.params.memory_mb)
        return per_image(per_box, image, pool.n, self.params.reduction)


@register("localization_stability")
class LocalizationStability(_ImageScoreStrategy):
    """Localization stability (Kao et al., ACCV 2018): score = 1 - sum_j s_j iou_j / sum_j s_j over the
    image's boxes, s_j the box's foreground confidence (max over the C classes), iou_j its mean IoU with its
    match under input perturbations; unstable images first. 'stability_x_uncertainty' multiplies the score
    by the image's largest box least confidence max_j (1 - max_c p_jc). Where every s_j is 0 the stability
    is the plain mean IoU.
    """

    multilabel = False
    Params = StabilityParams
    needs = frozenset({Input.BOXES, Input.BOX_IOU})

    def raw_score(self, pool: PoolInputs) -> torch.Tensor:
        probs, image = box_tensors(pool, self.device, self.dtype)
        score = localization_instability(probs, pool.box_iou, image, pool.n)
        if self.params.combine == "stability_x_uncertainty":
            score = score * per_image(box_least_confidence(probs), image, pool.n, "max")
        return score


@register("box_diversity")
class BoxDiversity(Strategy):
    """Box uncertainty x diversity (BADGE-like): k-means++ seeding on g_i = u_i h_i, u_i the image's
    box_uncertainty score (same `measure`, `reduction`, `empty`) and h_i its pooled backbone embedding; the
    batch first, the rest by u descending. A batch of 50 is not 50 views of one scratch.
    """

    multilabel = False
    Params = BoxDiversityParams
    needs = frozenset({Input.BOXES, Input.EMBEDDINGS})

    def _rank(self, pool: PoolInputs) -> Ranking:
        u = fill_empty(box_uncertainty_scores(pool, self.params, self.device, self.dtype), self.params.empty)
        picked = kmeanspp_factorized(u[:, None], pool.embeddings, self.params.batch_size, self.generator())
        return self._ranking(batch_then_scores(picked, u), u, batch_size=len(picked))
