"""The object detector plugin: torchvision's Faster R-CNN, RetinaNet or FCOS on a MobileNetV2 backbone.

Built the way torchvision documents a custom backbone: `mobilenet_v2().features` (1280 channels) as one
feature level with a one-level AnchorGenerator (and a one-level MultiScaleRoIAlign for Faster R-CNN), with
three changes for 64-256 px images on a CPU:
- `output_stride` 16 (default): the last stage is dilated instead of strided (same weights), so a 128 px
  image gives an 8 x 8 map instead of 4 x 4; at stride 32 Faster R-CNN's RoI features are too coarse to
  tell a whole object from a part of it.
- a 1x1 "neck" from 1280 channels to `neck_channels` (256) before the heads: with 1280 input channels
  torchvision's RPN head alone has 15M parameters and the RetinaNet / FCOS conv towers 118M.
- anchors sized relative to the input side and centred on their cells (torchvision puts them on the cells'
  corners), and RoIAlign with aligned=True (see AlignedRoIPool).
The backbone's ImageNet weights come from `plugins.models.pretrained` (never a download at run time).

Targets are relative corner boxes (see plugins.boxes); torchvision numbers Faster R-CNN classes 1..C with 0
the background, the single-stage heads 0..C-1 (sigmoids, no background column); outputs come back as
0..C-1 with the background as the last column of each box's class distribution.

Per kept box the model reports its class distribution: for Faster R-CNN the softmax of the box head's class
logits for the proposal that produced the box; for RetinaNet and FCOS (independent sigmoids) the per-class
scores q_c (FCOS: sqrt(sigmoid(cls_c) * sigmoid(centerness)), as torchvision scores it) with the background
prod_c (1 - q_c), renormalised to sum to 1. MC dropout (`box_samples`) re-runs only the last layer of the
box classification head with new dropout masks on the same pooled features; the dropout layer is active in
training and in those passes, never in a plain prediction.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from pydantic import Field, field_validator
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import (
    MultiScaleRoIAlign,
    batched_nms,
    box_iou,
    clip_boxes_to_image,
    remove_small_boxes,
    roi_align,
)

from plugins.boxes import BoxEvidence, Detections, box_targets, degenerate
from plugins.device import check_device_name, pick_device
from plugins.models.base import Augment, ModelParams, ModelPlugin, Progress
from plugins.models.classifier import prepare_images
from plugins.models.learning_loss import LossHeadConfig, LossPredictionModule, feature_dims, ranking_loss
from plugins.models.registry import MODELS
from plugins.strategies import Input, InvalidParamsError, MissingInputError, PoolInputs

Arch = Literal["faster_rcnn", "retinanet", "fcos"]
# The normalisation torchvision's ImageNet weights expect (RGB, on [0, 1]).
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
MOBILENET_CHANNELS = 1280
MOBILENET_BLOCKS = 19
DILATED_FROM = 14  # the stride-2 block of the 160-channel stage: output stride 16 dilates from here on
# Blocks of mobilenet_v2().features whose outputs feed the learning-loss head: strides 4, 8, 16, 32; the
# last one is the 1280-channel output whose global average is the embedding.
LOSS_TAPS = (3, 6, 13, 18)
# Blocks frozen by default with pretrained weights: through the stride-16, 96-channel stage (training the
# last 5 of 19 blocks and the heads: an epoch on 200 images of 256 px takes about 30 s on 2 CPU cores).
PRETRAINED_FROZEN_BLOCKS = 14
NMS_IOU = 0.5
TOPK_CANDIDATES = 1000  # single-stage heads: best (anchor, class) pairs per image before NMS
BOX_REPRESENTATION = 256  # width of the Faster R-CNN box head's two FC layers
# Faster R-CNN proposals and sampled RoIs per image: torchvision's COCO defaults (2000/1000, 512) are for
# 800 px images with many objects; a 256 px image has 16 x 16 x 15 = 3840 anchors at stride 16.
RPN_POST_NMS_TRAIN, RPN_POST_NMS_TEST, ROI_SAMPLES = 600, 300, 64
SCALE_JITTER = (0.8, 1.2)
WARMUP_FRACTION = 0.1
AUGMENT_MIN_PIXELS = 2.0  # a box narrower than this many pixels after augmentation is dropped


def min_box_side(side: int) -> float:
    """Proposals and boxes narrower than this (network-input pixels) are dropped: a sliver along the border
    pools mostly zeros in RoIAlign and gets the same bias-only score on every image."""
    return max(2.0, side / 64.0)


class DetectorParams(ModelParams):
    """Hyperparameters of the object detector."""

    arch: Arch = Field("faster_rcnn", description="faster_rcnn, retinanet or fcos, all on MobileNetV2")
    pretrained: str = Field(
        "imagenet", description="'imagenet': the offline ImageNet weights of mobilenet_v2 (plugins.models."
                                "pretrained); 'none': from scratch; else the path of a torchvision "
                                "mobilenet_v2 state dict, a detector state dict or an lsal model artifact",
    )
    epochs: int = Field(20, ge=1, le=10_000, description="passes over the labeled images per fit")
    min_epoch_images: int = Field(
        64, ge=1, le=1_000_000, description="images drawn per epoch at least (a small labeled set repeats)")
    batch_size: int = Field(4, ge=1, le=1024, description="images per optimisation step")
    lr: float = Field(3e-4, gt=0, le=10, description="AdamW peak learning rate (warm-up, then cosine decay)")
    weight_decay: float = Field(1e-4, ge=0, le=10, description="AdamW decoupled weight decay")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'")
    min_size: int | None = Field(
        None, ge=16, le=4096, description="GeneralizedRCNNTransform min_size; None: the image side (no "
                                          "resize)")
    max_size: int | None = Field(
        None, ge=16, le=4096, description="GeneralizedRCNNTransform max_size; None: min_size (or the image "
                                          "side)")
    box_floor: float = Field(0.05, ge=0, le=1, description="boxes scored below this are not reported")
    max_boxes: int = Field(20, ge=1, le=1000, description="boxes reported per image at most")
    mc_samples: int = Field(10, ge=1, le=1000, description="K: MC-dropout passes of the box classifier")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout before the box classifier's last layer")
    stability_passes: int = Field(4, ge=1, le=64, description="perturbed copies per image for box_iou")
    stability_noise: float = Field(
        4.0, ge=0, le=255,
        description="Gaussian pixel noise std step on 0..255: pass j (from 0) adds std (j + 1) * this")
    loss_head: bool = Field(True, description="train a learning-loss head (Yoo & Kweon 2019): predicted_loss")
    loss_head_config: LossHeadConfig = Field(
        default_factory=lambda: LossHeadConfig(detach_after=0.0),
        description="the learning-loss head's width, weight, margin and when its input features are detached "
                    "from the backbone (default: from the start; its ranking gradient otherwise pulls the "
                    "shared last block away from detection on small labeled sets)")
    freeze_backbone_layers: int | None = Field(
        None, ge=0, le=MOBILENET_BLOCKS,
        description=f"leading blocks of the {MOBILENET_BLOCKS} MobileNetV2 blocks kept frozen; None: "
                    f"{PRETRAINED_FROZEN_BLOCKS} with pretrained weights, 0 from scratch")
    output_stride: Literal[16, 32] = Field(
        16, description="stride of the feature map: 32 as mobilenet_v2 is; 16 dilates the last stage (same "
                        "weights, 4x the cells: better boxes on 64-256 px images, slower)")
    neck_channels: int | None = Field(
        256, ge=32, le=2048, description="1x1 conv from 1280 channels to this width before the heads; None: "
                                         "none (the heads take 1280 channels; slow)")
    anchor_scales: tuple[float, ...] = Field(
        (0.0625, 0.125, 0.25, 0.5, 1.0), min_length=1, max_length=8,
        description="anchor sides relative to the network's input side (Faster R-CNN, RetinaNet)")
    aspect_ratios: tuple[float, ...] = Field((0.5, 1.0, 2.0), min_length=1, max_length=8,
                                             description="anchor height / width ratios")
    eval_batch_size: int = Field(16, ge=1, le=4096, description="images per batch of a prediction pass")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        return device if device == "auto" else check_device_name(device) or device

    @field_validator("multilabel")
    @classmethod
    def _single_label(cls, multilabel: bool) -> bool:
        if multilabel:
            raise ValueError("a detector's boxes have one label each: multilabel must be false")
        return multilabel

    @field_validator("anchor_scales", "aspect_ratios")
    @classmethod
    def _positive(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if any(not (math.isfinite(v) and v > 0) for v in values):
            raise ValueError(f"must be positive finite numbers, got {values}")
        return values

    def frozen_blocks(self) -> int:
        """Leading MobileNetV2 blocks kept frozen."""
        if self.freeze_backbone_layers is not None:
            return self.freeze_backbone_layers
        return 0 if self.pretrained == "none" else PRETRAINED_FROZEN_BLOCKS


# -- the network ---------------------------------------------------------------------------------------------

class MobileNetBackbone(nn.Module):
    """mobilenet_v2().features (+ a 1x1 neck): one feature map for the heads, and the learning-loss taps."""

    def __init__(self, neck_channels: int | None, frozen: int, frozen_statistics: bool,
                 output_stride: int = 32) -> None:
        super().__init__()
        self.body = torchvision.models.mobilenet_v2(weights=None).features  # never downloads
        if output_stride == 16:
            dilate_last_stage(self.body)
        self.neck = None if neck_channels is None else nn.Sequential(
            nn.Conv2d(MOBILENET_CHANNELS, neck_channels, kernel_size=1), nn.ReLU(inplace=True))
        self.out_channels = neck_channels or MOBILENET_CHANNELS
        self.frozen = frozen
        self.frozen_statistics = frozen_statistics
        for block in self.body[:frozen]:
            block.requires_grad_(False)

    def taps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the outputs of the LOSS_TAPS blocks, the map the heads read)."""
        taps = []
        for i, block in enumerate(self.body):
            x = block(x)
            if i in LOSS_TAPS:
                taps.append(x)
        return taps, x if self.neck is None else self.neck(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.taps(x)[1]

    def train(self, mode: bool = True) -> MobileNetBackbone:
        """Train mode, except that frozen blocks (and, with pretrained weights, every BatchNorm) keep their
        running statistics."""
        super().train(mode)
        for i, block in enumerate(self.body):
            if i < self.frozen:
                block.eval()
            elif self.frozen_statistics:
                for m in block.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()
        return self


def dilate_last_stage(body: nn.Sequential) -> None:
    """Output stride 16 instead of 32, DeepLab-style: the stride-2 depthwise conv of block 14 gets stride 1
    and the later depthwise convs dilation 2, so the same weights see the same receptive fields."""
    first = body[DILATED_FROM].conv[1][0]
    first.stride = (1, 1)
    for block in body[DILATED_FROM + 1:MOBILENET_BLOCKS - 1]:
        conv = block.conv[1][0]
        conv.dilation, conv.padding = (2, 2), (2, 2)


class BoxHead(nn.Module):
    """Faster R-CNN's box head: two FC layers on the pooled RoI features, then dropout (train and MC only)."""

    def __init__(self, in_features: int, width: int, dropout: float) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, width)
        self.fc7 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """(P, width) box features before the dropout."""
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.represent(x))


class CentredAnchorGenerator(AnchorGenerator):
    """torchvision's AnchorGenerator with each cell's anchors centred on the cell: torchvision centres them on
    the cell's top-left corner, half a stride off (at stride 32 on a 64 px image, a quarter of the image)."""

    def grid_anchors(self, grid_sizes: list[list[int]],
                     strides: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        anchors = super().grid_anchors(grid_sizes, strides)
        return [a + torch.stack([sw, sh, sw, sh]).to(a) / 2 for a, (sh, sw) in zip(anchors, strides)]


class AlignedRoIPool(MultiScaleRoIAlign):
    """One-level MultiScaleRoIAlign sampling with aligned=True (half-pixel exact): torchvision's aligned=False
    stretches every RoI to at least one feature cell, so a sliver along the border pools mostly zeros."""

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        feature = x[self.featmap_names[0]]
        largest = max(max(size) for size in image_shapes)
        scale = 2.0 ** round(math.log2(max(feature.shape[-2:]) / largest))
        return roi_align(feature, boxes, self.output_size, spatial_scale=scale,
                         sampling_ratio=self.sampling_ratio, aligned=True)


def _anchor_generator(arch: str, side: int, scales: Sequence[float], ratios: Sequence[float],
                      stride: int) -> AnchorGenerator:
    """One feature level: sides `scales` x the input side (FCOS: one point per cell, the stride as size)."""
    if arch == "fcos":
        return CentredAnchorGenerator(sizes=((stride,),), aspect_ratios=((1.0,),))
    sizes = tuple(max(2, int(round(side * s))) for s in scales)
    return CentredAnchorGenerator(sizes=(sizes,), aspect_ratios=(tuple(ratios),))


def build_network(arch: str, n_classes: int, p: DetectorParams, side: int = 256) -> nn.Module:
    """The untrained torchvision detector of `arch` (random weights; the anchors are set per input side)."""
    backbone = MobileNetBackbone(p.neck_channels, p.frozen_blocks(), frozen_statistics=p.pretrained != "none",
                                 output_stride=p.output_stride)
    anchors = _anchor_generator(arch, side, p.anchor_scales, p.aspect_ratios, p.output_stride)
    common: dict[str, Any] = {"min_size": side, "max_size": side, "image_mean": IMAGENET_MEAN,
                              "image_std": IMAGENET_STD}
    channels = backbone.out_channels
    if arch == "faster_rcnn":
        roi_pool = AlignedRoIPool(featmap_names=["0"], output_size=7, sampling_ratio=1)
        return FasterRCNN(
            backbone, num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
            box_head=BoxHead(channels * 7 * 7, BOX_REPRESENTATION, p.dropout),
            box_predictor=FastRCNNPredictor(BOX_REPRESENTATION, n_classes + 1),
            rpn_post_nms_top_n_train=RPN_POST_NMS_TRAIN, rpn_post_nms_top_n_test=RPN_POST_NMS_TEST,
            box_batch_size_per_image=ROI_SAMPLES, box_nms_thresh=NMS_IOU, **common)
    model_class = RetinaNet if arch == "retinanet" else FCOS
    model = model_class(backbone, num_classes=n_classes, anchor_generator=anchors, nms_thresh=NMS_IOU,
                        **common)
    model.head.classification_head.conv.append(nn.Dropout(p.dropout))  # no weights: state keys unchanged
    return model


# -- one batch through the network ---------------------------------------------------------------------------

@dataclass
class Found:
    """A batch's kept boxes before they become Detections (all tensors on the model's device)."""

    boxes: list[torch.Tensor]  # per image (k, 4) relative corners
    labels: list[torch.Tensor]  # per image (k,) 0..C-1
    scores: list[torch.Tensor]  # per image (k,)
    probs: list[torch.Tensor]  # per image (k, C + 1), background last
    resample: Callable[[int, torch.Generator], torch.Tensor] | None = None  # (K, gen) -> (M, K, C + 1)


def _background_last(p: torch.Tensor) -> torch.Tensor:
    """Faster R-CNN distributions (background first) with the background moved to the last column."""
    return torch.cat([p[..., 1:], p[..., :1]], dim=-1)


def sigmoid_distribution(q: torch.Tensor) -> torch.Tensor:
    """(..., C) independent per-class scores -> (..., C + 1): q_c and the background prod(1 - q_c),
    renormalised to sum to 1."""
    background = torch.prod(1.0 - q, dim=-1, keepdim=True)
    joint = torch.cat([q, background], dim=-1)
    return joint / joint.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def _dropout_mask(shape: tuple[int, ...], p: float, generator: torch.Generator,
                  device: torch.device) -> torch.Tensor:
    if p == 0:
        return torch.ones(shape, device=device)
    keep = torch.empty(shape, device=device).bernoulli_(1.0 - p, generator=generator)
    return keep / (1.0 - p)


def _relative(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = size
    return (boxes / boxes.new_tensor([w, h, w, h])).clamp_(0.0, 1.0)


def rcnn_detect(model: FasterRCNN, images: ImageList, feats: torch.Tensor, floor: float, max_boxes: int,
                dropout: float, min_side: float) -> Found:
    """Faster R-CNN inference with torchvision's postprocess steps, remembering each kept box's proposal so
    its full class distribution (and MC-dropout resamples of it) can be reported."""
    heads = model.roi_heads
    features = OrderedDict([("0", feats)])
    proposals, _ = model.rpn(images, features)
    pooled = heads.box_roi_pool(features, proposals, images.image_sizes)
    rep = heads.box_head.represent(pooled)
    class_logits, box_regression = heads.box_predictor(rep)
    decoded = heads.box_coder.decode(box_regression, proposals)  # (P, C + 1, 4)
    softmax = F.softmax(class_logits, dim=-1)
    n_fg = class_logits.shape[1] - 1
    found = Found([], [], [], [])
    sources: list[torch.Tensor] = []
    start = 0
    for boxes_i, size in zip(proposals, images.image_sizes):
        stop = start + len(boxes_i)
        boxes = clip_boxes_to_image(decoded[start:stop, 1:], size).reshape(-1, 4)
        scores = softmax[start:stop, 1:].reshape(-1)
        flat = torch.where(scores >= floor)[0]
        flat = flat[remove_small_boxes(boxes[flat], min_size=min_side)]
        keep = flat[batched_nms(boxes[flat], scores[flat], flat % n_fg, NMS_IOU)[:max_boxes]]
        proposal = start + torch.div(keep, n_fg, rounding_mode="floor")
        found.boxes.append(_relative(boxes[keep], size))
        found.labels.append(keep % n_fg)
        found.scores.append(scores[keep])
        found.probs.append(_background_last(softmax[proposal]))
        sources.append(proposal)
        start = stop
    kept = rep[torch.cat(sources)] if sources else rep[:0]

    def resample(k: int, generator: torch.Generator) -> torch.Tensor:
        masks = _dropout_mask((k, *kept.shape), dropout, generator, kept.device)
        logits = heads.box_predictor.cls_score(kept[None] * masks)  # (K, M, C + 1)
        return _background_last(F.softmax(logits, dim=-1)).transpose(0, 1)

    found.resample = resample
    return found


def _flat_logits(logits: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(N, A * K, H, W) -> (N, HWA, K), torchvision's order of the single-stage heads."""
    n, _, h, w = logits.shape
    return logits.view(n, -1, n_classes, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, n_classes)


def single_stage_detect(model: RetinaNet | FCOS, images: ImageList, feats: torch.Tensor, floor: float,
                        max_boxes: int, dropout: float, min_side: float) -> Found:
    """RetinaNet / FCOS inference as torchvision's postprocess (top-k candidates, decode, clip, per-class
    NMS), remembering each kept box's anchor; its distribution is `sigmoid_distribution` of its scores."""
    fcos = isinstance(model, FCOS)
    cls_head = model.head.classification_head
    n_classes = cls_head.num_classes
    tower = cls_head.conv[:-1](feats)  # the conv tower without its dropout
    cls_logits = _flat_logits(cls_head.cls_logits(tower), n_classes)
    if fcos:
        regression, ctrness = model.head.regression_head([feats])
        centerness = torch.sigmoid(ctrness)  # (N, HWA, 1)
    else:
        regression, centerness = model.head.regression_head([feats]), None

    def scores_of(logits: torch.Tensor) -> torch.Tensor:
        q = torch.sigmoid(logits)
        return q if centerness is None else torch.sqrt(q * centerness)

    q_all = scores_of(cls_logits)
    anchors = model.anchor_generator(images, [feats])
    found = Found([], [], [], [])
    sources: list[tuple[int, torch.Tensor]] = []
    for i, size in enumerate(images.image_sizes):
        flat_scores = q_all[i].flatten()
        candidates = torch.where(flat_scores >= floor)[0]
        top = flat_scores[candidates].topk(min(TOPK_CANDIDATES, len(candidates))).indices
        candidates = candidates[top]
        anchor = torch.div(candidates, n_classes, rounding_mode="floor")
        labels = candidates % n_classes
        if fcos:
            boxes = model.box_coder.decode(regression[i][anchor], anchors[i][anchor])
        else:
            boxes = model.box_coder.decode_single(regression[i][anchor], anchors[i][anchor])
        boxes = clip_boxes_to_image(boxes, size)
        scores = flat_scores[candidates]
        big = remove_small_boxes(boxes, min_size=min_side)
        keep = big[batched_nms(boxes[big], scores[big], labels[big], NMS_IOU)[:max_boxes]]
        found.boxes.append(_relative(boxes[keep], size))
        found.labels.append(labels[keep])
        found.scores.append(scores[keep])
        found.probs.append(sigmoid_distribution(q_all[i][anchor[keep]]))
        sources.append((i, anchor[keep]))
    image_idx = torch.cat([torch.full_like(a, i) for i, a in sources]) if sources else None
    anchor_idx = torch.cat([a for _, a in sources]) if sources else None

    def resample(k: int, generator: torch.Generator) -> torch.Tensor:
        out = []
        for _ in range(k):
            mask = _dropout_mask(tuple(tower.shape), dropout, generator, tower.device)
            logits = _flat_logits(cls_head.cls_logits(tower * mask), n_classes)
            out.append(sigmoid_distribution(scores_of(logits)[image_idx, anchor_idx]))
        return torch.stack(out, dim=1)

    found.resample = resample
    return found


def image_losses(model: nn.Module, images: ImageList, feats: torch.Tensor,
                 targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """(B,) each image's detection loss (the sum of torchvision's loss terms): the heads run image by
    image."""
    losses = []
    if isinstance(model, FasterRCNN):
        for i, target in enumerate(targets):
            one = ImageList(images.tensors[i:i + 1], [images.image_sizes[i]])
            features = OrderedDict([("0", feats[i:i + 1])])
            proposals, rpn_losses = model.rpn(one, features, [target])
            _, roi_losses = model.roi_heads(features, proposals, one.image_sizes, [target])
            losses.append(sum(rpn_losses.values()) + sum(roi_losses.values()))
        return torch.stack(losses)
    head_outputs = model.head([feats])
    anchors = model.anchor_generator(images, [feats])
    for i, target in enumerate(targets):
        outputs = {k: v[i:i + 1] for k, v in head_outputs.items()}
        if isinstance(model, FCOS):
            terms = model.compute_loss([target], outputs, [anchors[i]], [feats.shape[2] * feats.shape[3]])
        else:
            terms = model.compute_loss([target], outputs, [anchors[i]])
        losses.append(sum(terms.values()))
    return torch.stack(losses)


def lr_factor(step: int, total: int) -> float:
    """Learning-rate multiplier of optimisation step `step` of `total`: a linear warm-up over the first
    WARMUP_FRACTION of the steps (fresh heads on a pretrained backbone diverge on full steps), then a cosine
    decay towards 0."""
    warmup = max(1, int(WARMUP_FRACTION * total))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# -- training data -------------------------------------------------------------------------------------------

def augment_boxes(image: np.ndarray, rows: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random horizontal and vertical flips and a zoom in/out by SCALE_JITTER of an (H, W, 3) uint8 image and
    its (k, 5) relative boxes; boxes are moved, clipped to the image and dropped when degenerate."""
    h, w = image.shape[:2]
    rows = np.array(rows, dtype=np.float32, copy=True).reshape(-1, 5)
    if rng.random() < 0.5:
        image = image[:, ::-1]
        rows[:, [1, 3]] = 1.0 - rows[:, [3, 1]]
    if rng.random() < 0.5:
        image = image[::-1]
        rows[:, [2, 4]] = 1.0 - rows[:, [4, 2]]
    s = float(rng.uniform(*SCALE_JITTER))
    low_x, low_y = sorted((0.0, w * (1.0 - s))), sorted((0.0, h * (1.0 - s)))
    tx, ty = float(rng.uniform(*low_x)), float(rng.uniform(*low_y))
    # edge coordinates u map to s * u + t; cv2 works on pixel centres (u - 0.5)
    matrix = np.array([[s, 0.0, tx + 0.5 * (s - 1.0)], [0.0, s, ty + 0.5 * (s - 1.0)]])
    fill = tuple(float(v) for v in image.reshape(-1, image.shape[2]).mean(axis=0))
    image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    if image.ndim == 2:
        image = image[..., None]
    if len(rows):
        rows[:, [1, 3]] = np.clip(rows[:, [1, 3]] * s + tx / w, 0.0, 1.0)
        rows[:, [2, 4]] = np.clip(rows[:, [2, 4]] * s + ty / h, 0.0, 1.0)
        rows = rows[~degenerate(rows[:, 1:], min_side=AUGMENT_MIN_PIXELS / min(h, w))]
    return image, rows


def check_box_targets(y: Any, n: int, n_classes: int) -> np.ndarray:
    """y as an object array of n (k, 5) float32 [class, x0, y0, x1, y1] relative boxes; InvalidParamsError
    naming the first bad item otherwise."""
    if isinstance(y, np.ndarray) and y.dtype != object:
        raise InvalidParamsError(f"detector targets must be a 1-D object array of per-image (k, 5) arrays "
                                 f"(plugins.boxes.box_targets), got a {y.dtype} array of shape {y.shape}")
    if isinstance(y, np.ndarray) and y.ndim != 1:
        raise InvalidParamsError(f"detector targets must be 1-D (one item per image), got shape {y.shape}")
    if len(y) != n:
        raise InvalidParamsError(f"expected {n} targets (one per image), got {len(y)}")
    rows = []
    for i, item in enumerate(y):
        try:
            arr = np.asarray(item, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidParamsError(f"target {i} is not a numeric (k, 5) array") from None
        if arr.size == 0:
            arr = arr.reshape(0, 5)
        if arr.ndim != 2 or arr.shape[1] != 5:
            raise InvalidParamsError(f"target {i} must be a (k, 5) array [class, x0, y0, x1, y1], got shape "
                                     f"{arr.shape}")
        bad = _bad_row(arr, n_classes)
        if bad is not None:
            j, why = bad
            raise InvalidParamsError(f"target {i}, box {j} {arr[j].tolist()}: {why}")
        rows.append(arr)
    return box_targets(rows)


def _bad_row(arr: np.ndarray, n_classes: int) -> tuple[int, str] | None:
    checks = (
        (~np.isfinite(arr).all(axis=1), "has a non-finite value"),
        ((arr[:, 0] != np.round(arr[:, 0])) | (arr[:, 0] < 0) | (arr[:, 0] >= n_classes),
         f"class must be an integer in 0..{n_classes - 1}"),
        ((arr[:, 1:] < 0).any(axis=1) | (arr[:, 1:] > 1).any(axis=1),
         "coordinates must be relative to the image, in [0, 1]"),
        ((arr[:, 1] >= arr[:, 3]) | (arr[:, 2] >= arr[:, 4]), "needs x0 < x1 and y0 < y1 (corner form)"),
    )
    for mask, why in checks:
        if mask.any():
            return int(np.flatnonzero(mask)[0]), why
    return None


def _side(x: Any) -> int:
    """The square side images are brought to: the largest image side."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        if x.ndim not in (3, 4):
            raise InvalidParamsError(f"expected images as an (N, H, W, 3) array, got shape {x.shape}")
        return int(max(x.shape[1], x.shape[2]))
    return int(max((max(np.shape(img)[:2]) for img in x), default=1))


# -- the plugin ----------------------------------------------------------------------------------------------

@MODELS.register("detector")
class ObjectDetector(ModelPlugin):
    """A torchvision detector (Faster R-CNN, RetinaNet or FCOS) on MobileNetV2, trained on relative boxes.

    `predict_proba` gives one `plugins.boxes.Detections` per image; `pool_inputs` gives box-level evidence
    (class distributions, MC-dropout samples of them, localization stability), global-average-pooled
    backbone embeddings and, with `loss_head`, the learning-loss prediction of each image's detection loss.
    The learning-loss head's target loss is always detached (the ranking loss sends it no gradient); its input
    features are detached from the backbone after `loss_head_config.detach_after` of the epochs: by default
    from the start (the paper's joint phase, detach_after=0.6, let the ranking gradient wreck Faster R-CNN's
    boxes on small labeled sets here), so the head learns on the detector's features without changing them.
    """

    Params = DetectorParams
    provides = frozenset({Input.BOXES, Input.BOX_SAMPLES, Input.BOX_IOU, Input.EMBEDDINGS,
                          Input.LABELED_EMBEDDINGS, Input.PREDICTED_LOSS})

    def __init__(self, n_classes: int, **params: Any) -> None:
        super().__init__(n_classes, **params)
        p = self.params
        try:
            self.device = pick_device(None if p.device == "auto" else p.device)
        except ValueError as exc:
            raise InvalidParamsError(str(exc)) from None
        if not p.loss_head:
            self.provides = type(self).provides - {Input.PREDICTED_LOSS}
        self.net: nn.Module | None = None
        self.loss_module: LossPredictionModule | None = None
        self._anchors: dict[int, AnchorGenerator] = {}
        self._input_side = 0

    def sample_problem(self) -> str | None:
        return self._too_few_samples("mc_samples") or self._no_dropout()

    # -- construction -------------------------------------------------------------------------------------

    def _build(self, pretrained: bool) -> None:
        """A fresh network (and loss head) initialised from the seed; the `pretrained` weights if asked."""
        p = self.params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            net = build_network(p.arch, self.n_classes, p)
            loss_module = None
            if p.loss_head:
                net.eval()
                with torch.no_grad():
                    taps, _ = net.backbone.taps(torch.zeros(1, 3, 64, 64))
                loss_module = LossPredictionModule(feature_dims(taps), p.loss_head_config.hidden)
        if pretrained:
            load_pretrained(net, p.pretrained)
        self.net = net.to(self.device)
        self.loss_module = None if loss_module is None else loss_module.to(self.device)
        self._anchors = {}

    def _trained(self) -> nn.Module:
        if self.net is None:
            raise RuntimeError("the model is not trained yet: call fit or load_state_dict first")
        return self.net

    def _configure(self, side: int) -> int:
        """Point the transform and the anchors at images of `side` px; return the network's input side."""
        p, net = self.params, self._trained()
        low = p.min_size or side
        high = max(p.max_size or low, 1)
        net.transform.min_size, net.transform.max_size = (low,), high
        input_side = min(low, high)
        if input_side not in self._anchors:
            self._anchors[input_side] = _anchor_generator(p.arch, input_side, p.anchor_scales,
                                                          p.aspect_ratios, p.output_stride)
        if isinstance(net, FasterRCNN):
            net.rpn.anchor_generator = self._anchors[input_side]
            net.rpn.min_size = min_box_side(input_side)
        else:
            net.anchor_generator = self._anchors[input_side]
        self._input_side = input_side
        return input_side

    def _tensors(self, images: np.ndarray) -> list[torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        return list(x.permute(0, 3, 1, 2).float().div_(255.0))

    # -- the plugin protocol ------------------------------------------------------------------------------

    def check_targets(self, y: np.ndarray, n: int) -> np.ndarray:
        """y checked: an object array of n (k, 5) float32 [class, x0, y0, x1, y1] arrays, relative corners."""
        return check_box_targets(y, n, self.n_classes)

    def fit(self, x: np.ndarray, y: np.ndarray, progress: Progress | None = None,
            augment: Augment | None = None) -> dict[str, float]:
        """Train on images and box targets, warm-starting from the current weights; return metrics."""
        if augment is not None:
            raise InvalidParamsError("the detector cannot use a per-image classification augment: it would "
                                     "not move the boxes (synthetic box items are made outside the model)")
        side = _side(x)
        images = prepare_images(x, side, 3)
        targets = self.check_targets(y, len(images))
        if not len(images):
            raise InvalidParamsError("cannot train a detector on no images")
        if self.net is None:
            self._build(pretrained=True)
        self._configure(side)
        return self._train(images, targets, progress)

    def _train(self, images: np.ndarray, targets: np.ndarray, progress: Progress | None) -> dict[str, float]:
        p, net, loss_module = self.params, self._trained(), self.loss_module
        config = p.loss_head_config
        side = images.shape[1]
        parameters = [w for w in net.parameters() if w.requires_grad]
        if loss_module is not None:
            parameters += list(loss_module.parameters())
        optimizer = torch.optim.AdamW(parameters, lr=p.lr, weight_decay=p.weight_decay)
        n, loss, steps = len(images), math.nan, 0
        per_epoch = max(n, p.min_epoch_images)
        total_steps = p.epochs * -(-per_epoch // p.batch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps))
        augment_rng = np.random.default_rng([p.seed, 1])
        order_gen = torch.Generator().manual_seed(p.seed)
        detach_epoch = int(round(config.detach_after * p.epochs))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(p.seed)  # proposal / RoI sampling and dropout masks
            for epoch in range(p.epochs):
                net.train()
                if loss_module is not None:
                    loss_module.train()
                passes = -(-per_epoch // n)
                order = torch.cat([torch.randperm(n, generator=order_gen) for _ in range(passes)])[:per_epoch]
                total = 0.0
                for start in range(0, per_epoch, p.batch_size):
                    chunk = order[start:start + p.batch_size].numpy()
                    pairs = [augment_boxes(images[i], targets[i], augment_rng) for i in chunk]
                    batch = np.stack([img for img, _ in pairs])
                    tgts = [{"boxes": torch.as_tensor(rows[:, 1:] * side, device=self.device),
                             "labels": torch.as_tensor(rows[:, 0], device=self.device).long()
                             + int(isinstance(net, FasterRCNN))} for _, rows in pairs]
                    image_list, tgts = net.transform(self._tensors(batch), tgts)
                    taps, feats = net.backbone.taps(image_list.tensors)
                    losses = image_losses(net, image_list, feats, tgts)
                    objective = losses.mean()
                    if loss_module is not None:
                        maps = [t.detach() for t in taps] if epoch >= detach_epoch else taps
                        objective = objective + config.weight * ranking_loss(loss_module(maps), losses,
                                                                             config.margin)
                    optimizer.zero_grad(set_to_none=True)
                    objective.backward()
                    optimizer.step()
                    scheduler.step()
                    total += float(losses.detach().sum())
                    steps += 1
                loss, lr = total / per_epoch, optimizer.param_groups[0]["lr"]
                if progress is not None:
                    progress({"phase": "train", "epoch": epoch + 1, "epochs": p.epochs, "loss": loss,
                              "lr": lr})
        net.eval()
        boxes = float(sum(len(t) for t in targets))
        return {"train_loss": loss, "epochs_run": float(p.epochs), "steps": float(steps),
                "images": float(len(images)), "boxes": boxes,
                "negative_images": float(sum(len(t) == 0 for t in targets))}

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N,) object array of Detections, most confident box first."""
        return self.forward_pass(x)["detections"]

    def pool_inputs(self, x_pool: np.ndarray, needs: frozenset[Input], x_labeled: np.ndarray,
                    y_labeled: np.ndarray) -> PoolInputs:
        """Compute only the provided inputs in `needs` (boxes come whenever a box input is asked for)."""
        self.check_sample_count(needs, "mc_samples")
        if Input.PREDICTED_LOSS in needs and self.loss_module is None:
            raise MissingInputError("predicted_loss needs a learning-loss head: build the detector with "
                                    "loss_head=true")
        wants_boxes = bool(needs & {Input.BOXES, Input.BOX_SAMPLES, Input.BOX_IOU})
        out = self.forward_pass(x_pool, samples=Input.BOX_SAMPLES in needs, stability=Input.BOX_IOU in needs,
                                embeddings=Input.EMBEDDINGS in needs,
                                predicted_loss=Input.PREDICTED_LOSS in needs)
        values: dict[str, Any] = {}
        if wants_boxes:
            detections = out["detections"]
            counts = [len(d) for d in detections]
            probs = [d.probs for d in detections]
            image = np.repeat(np.arange(len(detections)), counts).astype(np.int64)
            values["boxes"] = BoxEvidence(
                n_images=len(detections), image=image,
                probs=np.concatenate([np.zeros((0, self.n_classes + 1), np.float32), *probs]))
        for name in ("box_samples", "box_iou", "embeddings", "predicted_loss"):
            if name in out:
                values[name] = out[name]
        if Input.LABELED_EMBEDDINGS in needs:
            values["labeled_embeddings"] = self.forward_pass(x_labeled, embeddings=True)["embeddings"]
        outputs = np.empty(len(out["detections"]), dtype=object)
        outputs[:] = out["detections"]
        return PoolInputs(n_items=_count(x_pool), n_classes=self.n_classes, outputs=outputs, **values)

    def forward_pass(self, x: np.ndarray, *, samples: bool = False, stability: bool = False,
                     embeddings: bool = False, predicted_loss: bool = False) -> dict[str, np.ndarray]:
        """One batched eval pass: 'detections' (N,) always; 'box_samples' (M, K, C + 1), 'box_iou' (M,),
        'embeddings' (N, 1280) and 'predicted_loss' (N,) when asked (M: the boxes of all detections)."""
        net, p = self._trained().eval(), self.params
        c, k = self.n_classes, p.mc_samples
        n = _count(x)
        parts: dict[str, list[Any]] = {"detections": []}
        if samples:
            parts["box_samples"] = [np.zeros((0, k, c + 1), np.float32)]
        if stability:
            parts["box_iou"] = [np.zeros(0, np.float32)]
        if embeddings:
            parts["embeddings"] = [np.zeros((0, MOBILENET_CHANNELS), np.float32)]
        if predicted_loss:
            parts["predicted_loss"] = [np.zeros(0, np.float32)]
            self.loss_module.eval()
        side = _side(x) if n else 1
        mc_gen = torch.Generator(device=self.device).manual_seed(p.seed)
        noise_gen = torch.Generator(device=self.device).manual_seed(p.seed + 1)
        self._configure(side)
        with torch.no_grad():
            for start in range(0, n, p.eval_batch_size):
                tensors = self._tensors(prepare_images(x[start:start + p.eval_batch_size], side, 3))
                image_list, _ = net.transform(tensors)
                taps, feats = net.backbone.taps(image_list.tensors)
                found = self._detect(net, image_list, feats)
                parts["detections"] += _detections(found, c)
                if samples:
                    parts["box_samples"].append(_np(found.resample(k, mc_gen)))
                if stability:
                    parts["box_iou"].append(self._stability(net, tensors, found, noise_gen))
                if embeddings:
                    parts["embeddings"].append(_np(taps[-1].mean(dim=(2, 3))))
                if predicted_loss:
                    parts["predicted_loss"].append(_np(self.loss_module(taps)))
        out: dict[str, Any] = {name: np.concatenate(chunks) for name, chunks in parts.items()
                               if name != "detections"}
        detections = np.empty(n, dtype=object)
        detections[:] = parts["detections"]
        return out | {"detections": detections}

    def _detect(self, net: nn.Module, image_list: ImageList, feats: torch.Tensor) -> Found:
        p = self.params
        detect = rcnn_detect if isinstance(net, FasterRCNN) else single_stage_detect
        return detect(net, image_list, feats, p.box_floor, p.max_boxes, p.dropout,
                      min_box_side(self._input_side))

    def _stability(self, net: nn.Module, tensors: list[torch.Tensor], found: Found,
                   generator: torch.Generator) -> np.ndarray:
        """(M,) each reference box's IoU with its best-matching box on noisy copies, averaged over the passes
        (Kao et al. 2018); 0 for a pass where nothing is found."""
        p = self.params
        total = [torch.zeros(len(b), device=self.device) for b in found.boxes]
        for j in range(p.stability_passes):
            std = p.stability_noise * (j + 1) / 255.0
            noisy = [(t + std * torch.randn(t.shape, generator=generator, device=t.device)).clamp_(0.0, 1.0)
                     if std > 0 else t for t in tensors]
            image_list, _ = net.transform(noisy)
            _, feats = net.backbone.taps(image_list.tensors)
            perturbed = self._detect(net, image_list, feats)
            for i, (ref, other) in enumerate(zip(found.boxes, perturbed.boxes)):
                if len(ref) and len(other):
                    total[i] += box_iou(ref, other).nan_to_num_(0.0).max(dim=1).values
        mean = torch.cat(total) / p.stability_passes if total else torch.zeros(0)
        return _np(mean.clamp_(0.0, 1.0))

    def state_dict(self) -> dict[str, Any]:
        """The network's and the loss head's tensors, with the architecture they belong to."""
        net = self._trained()
        state: dict[str, Any] = {f"net.{k}": v.detach().cpu() for k, v in net.state_dict().items()}
        if self.loss_module is not None:
            state |= {f"loss_module.{k}": v.detach().cpu() for k, v in self.loss_module.state_dict().items()}
        return state | {"arch": self.params.arch, "n_classes": self.n_classes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the network without reading pretrained weights, then load `state`."""
        p = self.params
        for key, want in (("arch", p.arch), ("n_classes", self.n_classes)):
            if state.get(key) != want:
                raise InvalidParamsError(f"the saved detector has {key}={state.get(key)!r} but this one has "
                                         f"{want!r}")
        self._build(pretrained=False)
        self.net.load_state_dict(_prefixed(state, "net."))
        if self.loss_module is not None:
            module_state = _prefixed(state, "loss_module.")
            if not module_state:
                raise InvalidParamsError("loss_head is on but the saved detector has no learning-loss head")
            self.loss_module.load_state_dict(module_state)
        self.net.eval()


# -- helpers -------------------------------------------------------------------------------------------------

def load_pretrained(net: nn.Module, spec: str) -> None:
    """Load the `pretrained` weights into `net`: 'imagenet', 'none', or a file (see DetectorParams)."""
    from plugins.models import pretrained  # its command line runs as __main__: import it late

    if spec == "none":
        return
    body = net.backbone.body
    if spec == "imagenet":
        _load_body(body, pretrained.mobilenet_v2_imagenet(), "the ImageNet weights")
        return
    state = pretrained.load_state_file(spec)
    if state.get("format") == "lsal-model-artifact" and isinstance(state.get("state"), dict):
        state = state["state"]
    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if any(str(k).startswith("net.") for k in state):
        state = _prefixed(state, "net.")
    if any(str(k).startswith("features.") for k in state):
        _load_body(body, state, spec)
    elif any(str(k).startswith("backbone.body.") for k in state):
        try:
            result = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise pretrained.PretrainedWeightsError(f"{spec} does not fit this detector: {exc}") from None
        missing = [k for k in result.missing_keys if k.startswith("backbone.body.")]
        if missing:
            raise pretrained.PretrainedWeightsError(f"{spec} lacks backbone weights, e.g. {missing[0]}")
    else:
        raise pretrained.PretrainedWeightsError(
            f"{spec} is neither a mobilenet_v2 state dict (keys features.*) nor a detector checkpoint (keys "
            "backbone.body.* or net.backbone.body.*)")


def _load_body(body: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    from plugins.models.pretrained import PretrainedWeightsError

    features = _prefixed(state, "features.")
    try:
        body.load_state_dict(features, strict=True)
    except RuntimeError as exc:
        raise PretrainedWeightsError(f"{source} is not a torchvision mobilenet_v2 state dict: "
                                     f"{exc}") from None


def _detections(found: Found, n_classes: int) -> list[Detections]:
    return [Detections(_np(box).reshape(-1, 4), label.detach().cpu().numpy().astype(np.int64), _np(score),
                       _np(prob).reshape(-1, n_classes + 1))
            for box, label, score, prob in zip(found.boxes, found.labels, found.scores, found.probs)]


def _count(x: Any) -> int:
    return int(x.shape[0]) if isinstance(x, np.ndarray) else len(x)


def _prefixed(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()
