"""Pure tensor math of the detection strategies: per-box measures and their reduction to image scores.

Boxes are flat over the pool: row j of a (M, C + 1) class distribution belongs to image `image[j]`
(column C is background). An image may own no row; the reductions return NaN there, and
`fill_empty` gives those images their score.
"""

from __future__ import annotations

from typing import Literal

import torch

from plugins.strategies._kernels import entropy

Measure = Literal["entropy", "least_confidence", "margin"]
Reduction = Literal["max", "mean", "sum"]


def box_least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """(M, C + 1) -> (M,): 1 - max_c p_c over the whole distribution, background included."""
    return 1.0 - probs.amax(dim=1)


def box_margin(probs: torch.Tensor) -> torch.Tensor:
    """(M, C + 1) -> (M,): 1 - (p_1 - p_2), the gap between the two likeliest columns."""
    top2 = probs.topk(2, dim=1).values
    return 1.0 - (top2[:, 0] - top2[:, 1])


def box_measure(probs: torch.Tensor, measure: Measure) -> torch.Tensor:
    """(M, C + 1) -> (M,): each box's uncertainty ('entropy' in nats, 'least_confidence' or 'margin')."""
    if measure == "entropy":
        return entropy(probs)
    if measure == "least_confidence":
        return box_least_confidence(probs)
    if measure == "margin":
        return box_margin(probs)
    raise ValueError(f"unknown measure {measure!r}; use 'entropy', 'least_confidence' or 'margin'")


def box_counts(image: torch.Tensor, n_images: int) -> torch.Tensor:
    """(M,) image index of each box -> (n_images,) number of boxes of each image."""
    return torch.bincount(image, minlength=n_images)[:n_images]


def per_image(values: torch.Tensor, image: torch.Tensor, n_images: int, reduction: Reduction) -> torch.Tensor:
    """(M,) per-box values -> (n_images,): their max, mean or sum over each image's boxes; NaN where none."""
    if reduction not in ("max", "mean", "sum"):
        raise ValueError(f"unknown reduction {reduction!r}; use 'max', 'mean' or 'sum'")
    counts = box_counts(image, n_images)
    out = values.new_zeros(n_images)
    if reduction == "max":
        out.scatter_reduce_(0, image, values, reduce="amax", include_self=False)
    else:
        out.index_add_(0, image, values)
        if reduction == "mean":
            out /= counts.clamp_min(1).to(values.dtype)
    return out.masked_fill_(counts == 0, float("nan"))


def median(values: torch.Tensor) -> torch.Tensor:
    """The median of a 1-d tensor (the mean of the two middle values when the length is even)."""
    ranked = values.sort().values
    m = ranked.shape[0]
    return (ranked[(m - 1) // 2] + ranked[m // 2]) / 2


def fill_empty(scores: torch.Tensor, empty: float | None) -> torch.Tensor:
    """NaN scores (images with no box) -> `empty`, or, when None, the median of the other images' scores
    (0 when no image has a box: every score is then equal)."""
    missing = torch.isnan(scores)
    if not bool(missing.any()):
        return scores
    if empty is None:
        present = scores[~missing]
        value = median(present) if present.numel() else scores.new_zeros(())
    else:
        value = scores.new_tensor(float(empty))
    return torch.where(missing, value, scores)


def image_uncertainty(probs: torch.Tensor, image: torch.Tensor, n_images: int, measure: Measure,
                      reduction: Reduction, empty: float | None) -> torch.Tensor:
    """(M, C + 1) box distributions -> (n_images,): the reduced box uncertainty, empty images filled."""
    return fill_empty(per_image(box_measure(probs, measure), image, n_images, reduction), empty)


def foreground_confidence(probs: torch.Tensor) -> torch.Tensor:
    """(M, C + 1) -> (M,): max over the C foreground columns (the detector's score of the box)."""
    return probs[:, :-1].amax(dim=1)


def localization_instability(probs: torch.Tensor, iou: torch.Tensor, image: torch.Tensor,
                             n_images: int) -> torch.Tensor:
    """(n_images,): 1 - sum_j s_j iou_j / sum_j s_j over each image's boxes, s_j the foreground confidence
    (the plain mean IoU where every s_j is 0); NaN for an image with no box."""
    s = foreground_confidence(probs)
    weighted = per_image(s * iou, image, n_images, "sum")
    total = per_image(s, image, n_images, "sum")
    plain = per_image(iou, image, n_images, "mean")
    stability = torch.where(total > 0, weighted / total.clamp_min(torch.finfo(total.dtype).tiny), plain)
    return 1.0 - stability
