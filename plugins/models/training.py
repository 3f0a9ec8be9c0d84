"""Supervised training of a ClassifierNet: held-out early stopping, class-balanced sampling, AMP on CUDA."""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from plugins.models.base import Augment, Progress, label_strata
from plugins.models.learning_loss import LossHeadConfig, LossPredictionModule, ranking_loss
from plugins.models.networks import ClassifierNet

# Smallest decrease of the held-out loss that counts as progress when the held-out accuracy ties.
_LOSS_TOL = 1e-4
# Multi-label class balance: BCE pos_weight = negatives / positives per label, clipped to this range.
POS_WEIGHT_RANGE = (0.1, 10.0)


class TrainConfig(BaseModel):
    """Hyperparameters of the training loop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(30, ge=1, le=10_000, description="maximum passes over the training split")
    batch_size: int = Field(64, ge=2, le=65_536, description="items per optimisation step")
    lr: float = Field(1e-3, gt=0, le=10, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, le=10, description="AdamW decoupled weight decay")
    val_fraction: float = Field(
        0.0, ge=0, lt=1,
        description="share of the labeled set held out (stratified) for early stopping; 0 (the default): none, "
                    "the fixed cosine schedule runs its epochs. On MNIST (random, 100 to 1,000 labels, 3 seeds) "
                    "0.1 lost up to 1.6 accuracy points from one round to the next once its split reached "
                    "min_held_out, and 0.6 points at 1,000 labels; 0 never fell more than 0.2 (docs/results.md)",
    )
    min_held_out: int = Field(
        50, ge=1,
        description="hold out a split for early stopping only when it has at least this many items (a smaller "
                    "split is noise and costs labels: on 100 MNIST labels, 10 held out cost 3 accuracy points)",
    )
    min_epoch_items: int = Field(
        512, ge=1,
        description="items drawn per epoch at least (repeating a small labeled set), so 20 labels still get "
                    "enough optimisation steps",
    )
    patience: int = Field(5, ge=1, description="epochs without held-out improvement before stopping")
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="learning rate over the epochs: constant, or cosine decay towards 0 (a fixed "
                              "schedule ends on small steps: less seed-to-seed noise on small labeled sets)",
    )
    class_balanced: bool = Field(
        True, description="sample items with inverse class frequency (rare classes); multi-label: weigh each "
                          "label's positives by negatives / positives (BCE pos_weight) instead")
    amp: bool = Field(True, description="mixed precision (float16 autocast + GradScaler); CUDA only")


def stratified_split(labels: np.ndarray, fraction: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) index arrays; about `fraction` of the items are held out, spread over the classes in
    proportion to their size (largest remainders), never a class's last item. No held-out set when no class
    has 2 items or the fraction rounds to 0 items."""
    labels = np.asarray(labels)
    every = np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    n_val = int(round(fraction * len(labels)))
    if n_val == 0 or not len(classes) or counts.max() < 2:
        return every, every[:0]
    cap = counts - 1
    take = np.minimum(np.floor(fraction * counts).astype(np.int64), cap)
    remainder = fraction * counts - take
    for c in np.lexsort((rng.random(len(classes)), -remainder)):
        if take.sum() >= n_val:
            break
        if take[c] < cap[c]:
            take[c] += 1
    held = [rng.permutation(np.flatnonzero(labels == cls))[:k] for cls, k in zip(classes, take)]
    val = np.sort(np.concatenate(held)).astype(np.int64)
    return np.setdiff1d(every, val), val


def epoch_order(labels: np.ndarray, class_balanced: bool, generator: torch.Generator,
                min_items: int = 0) -> np.ndarray:
    """Positions into `labels` for one epoch of max(len(labels), min_items) items: shuffled passes, or
    (class_balanced and the classes are uneven) draws with replacement with probability proportional to
    1 / class count."""
    labels = np.asarray(labels)
    size = max(len(labels), min_items)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if class_balanced and len(counts) > 1 and counts.min() != counts.max():
        weights = torch.as_tensor(1.0 / counts[inverse], dtype=torch.float64)
        return torch.multinomial(weights, size, replacement=True, generator=generator).numpy()
    passes = -(-size // len(labels))
    return np.concatenate([torch.randperm(len(labels), generator=generator).numpy() for _ in range(passes)])[:size]


def pos_weights(targets: np.ndarray, low: float = POS_WEIGHT_RANGE[0],
                high: float = POS_WEIGHT_RANGE[1]) -> np.ndarray:
    """(C,) BCE pos_weight per label: negatives / positives, clipped to [low, high]; 1 for a label that is
    all positive or all negative (nothing to balance)."""
    targets = np.asarray(targets, dtype=np.float64)
    pos = targets.sum(axis=0)
    neg = len(targets) - pos
    weights = np.divide(neg, pos, out=np.ones_like(pos), where=(pos > 0) & (neg > 0))
    return np.clip(weights, low, high)


def channel_stats(images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (floored at 1e-3) of (N, H, W, C) uint8 images scaled to [0, 1]."""
    mean = images.mean(axis=(0, 1, 2), dtype=np.float64) / 255.0
    std = np.maximum(images.std(axis=(0, 1, 2), dtype=np.float64) / 255.0, 1e-3)
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)


def to_input(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, C, H, W) float32 network input from (B, H, W, C) uint8 images: scaled to [0, 1], normalised."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    mean, std = mean.to(device), std.to(device)
    x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


def conform(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An augmented image back as uint8 of `shape` (H, W, C): clipped, resized if its size changed."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    height, width, channels = shape
    if img.shape[:2] != (height, width):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] != channels:
        raise ValueError(f"the augmentation changed the channel count from {channels} to {img.shape[2]}")
    return img


def apply_augment(images: np.ndarray, labels: np.ndarray, augment: Augment,
                  rng: np.random.Generator) -> np.ndarray:
    """Augment each (H, W, C) uint8 image (gray ones are passed as (H, W)); the result keeps the shape."""
    out = np.empty_like(images)
    gray = images.shape[-1] == 1
    if labels.ndim == 2:  # multi-label: the transform is told each item's rarest positive label (C: none)
        labels = label_strata(labels)
    for i, (img, label) in enumerate(zip(images, labels)):
        out[i] = conform(augment(img[..., 0] if gray else img, int(label), rng), images.shape[1:])
    return out


def batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive chunks of `order`; a trailing chunk of one item joins the previous one (for BatchNorm)."""
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [np.concatenate(chunks[-2:])]
    return chunks


def item_losses(logits: torch.Tensor, y: torch.Tensor,
                pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) per-item loss: cross-entropy of class ids y (B,), or for (B, C) 0/1 targets the BCE with logits
    summed over labels (positives weighed by `pos_weight`)."""
    if y.ndim == 2:
        bce = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), pos_weight=pos_weight,
                                                 reduction="none")
        return bce.sum(dim=1)
    return F.cross_entropy(logits, y, reduction="none")


def correct_decisions(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(correct, total) decisions: argmax vs class ids, or each label's logit >= 0 vs its 0/1 target."""
    if y.ndim == 2:
        return int(((logits >= 0) == (y > 0)).sum()), int(y.numel())
    return int((logits.argmax(dim=1) == y).sum()), int(y.shape[0])


def evaluate(net: ClassifierNet, images: np.ndarray, labels: np.ndarray, mean: torch.Tensor,
             std: torch.Tensor, device: torch.device, batch_size: int = 256) -> tuple[float, float]:
    """(accuracy, mean loss per item) of the eval-mode network on (N, H, W, C) uint8 images: cross-entropy,
    or with (N, C) 0/1 targets per-label decision accuracy and the BCE summed over labels."""
    net.eval()
    correct, decisions, loss = 0, 0, 0.0
    with torch.no_grad():
        for chunk in batches(np.arange(len(labels)), batch_size):
            logits = net(to_input(images[chunk], mean, std, device)).float()
            y = torch.as_tensor(labels[chunk], device=device)
            right, total = correct_decisions(logits, y)
            correct, decisions = correct + right, decisions + total
            if y.ndim == 2:
                loss += float(item_losses(logits, y).sum())
            else:
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
    return correct / decisions, loss / len(labels)


def _batch_loss(net: ClassifierNet, x: torch.Tensor, y: torch.Tensor,
                loss_module: LossPredictionModule | None, loss_head: LossHeadConfig,
                detach: bool, pos_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective, mean target loss): CE (or BCE for 0/1 targets), plus lambda * the ranking loss of the
    loss-prediction module."""
    if loss_module is None:
        logits = net(x).float()
        loss = item_losses(logits, y, pos_weight).mean() if y.ndim == 2 else F.cross_entropy(logits, y)
        return loss, loss.detach()
    h, maps = net.features(x)
    losses = item_losses(net.head(net.dropout(h)).float(), y, pos_weight)
    if detach:
        maps = [m.detach() for m in maps]
    rank = ranking_loss(loss_module(maps), losses, loss_head.margin)
    return losses.mean() + loss_head.weight * rank, losses.mean().detach()


def _snapshot(*modules: nn.Module | None) -> list[dict[str, torch.Tensor] | None]:
    return [None if m is None else {k: v.detach().clone() for k, v in m.state_dict().items()}
            for m in modules]


def train(
    net: ClassifierNet,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    seed: int = 0,
    device: torch.device | None = None,
    progress: Progress | None = None,
    augment: Augment | None = None,
    loss_module: LossPredictionModule | None = None,
    loss_head: LossHeadConfig | None = None,
) -> dict[str, float]:
    """Train `net` (and the loss-prediction module, if given) in place on (N, H, W, C) uint8 images; keep the
    weights of the best held-out epoch (accuracy, then loss). Deterministic under `seed` on the CPU.

    labels (N,) are class ids (cross-entropy); (N, C) 0/1 targets train multi-label (BCE with logits per
    label). Multi-label: the split is stratified by each item's rarest positive label, epochs are shuffled
    passes and class balance is the BCE pos_weight (see `pos_weights`) when `class_balanced`.
    """
    device = device or next(net.parameters()).device
    labels = np.asarray(labels)
    multilabel = labels.ndim == 2
    labels = labels.astype(np.float32 if multilabel else np.int64)
    if len(labels) == 0:
        raise ValueError("cannot train on an empty labeled set")
    if images.shape[0] != len(labels):
        raise ValueError(f"{images.shape[0]} images but {len(labels)} labels")
    loss_head = loss_head or LossHeadConfig()
    strata = label_strata(labels) if multilabel else labels
    pos_weight = None
    if multilabel and config.class_balanced:
        pos_weight = torch.as_tensor(pos_weights(labels), dtype=torch.float32, device=device)
    train_idx, val_idx = stratified_split(strata, config.val_fraction, np.random.default_rng(seed))
    if len(val_idx) < config.min_held_out:  # a handful of held-out items is noise, not a stopping signal
        train_idx, val_idx = np.arange(len(labels)), np.zeros(0, dtype=np.int64)
    augment_rng = np.random.default_rng([seed, 1])
    order_gen = torch.Generator().manual_seed(seed)
    use_amp = config.amp and device.type == "cuda"
    parameters = list(net.parameters()) + (list(loss_module.parameters()) if loss_module is not None else [])
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                 if config.schedule == "cosine" else None)
    detach_epoch = int(round(loss_head.detach_after * config.epochs))
    best: list | None = None
    best_acc, best_loss, best_epoch, stale = -1.0, math.inf, 0, 0
    train_loss, epochs_run, stopped_early = math.nan, 0, False
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout masks and any other global-RNG draw
        for epoch in range(config.epochs):
            lr = optimizer.param_groups[0]["lr"]
            net.train()
            if loss_module is not None:
                loss_module.train()
            balanced_epoch = config.class_balanced and not multilabel  # multi-label: pos_weight balances
            order = train_idx[epoch_order(strata[train_idx], balanced_epoch, order_gen,
                                          config.min_epoch_items)]
            total = torch.zeros((), device=device)
            for chunk in batches(order, config.batch_size):
                batch = images[chunk]
                if augment is not None:
                    batch = apply_augment(batch, labels[chunk], augment, augment_rng)
                x = to_input(batch, mean, std, device)
                y = torch.as_tensor(labels[chunk], device=device)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    objective, ce = _batch_loss(net, x, y, loss_module, loss_head, epoch >= detach_epoch,
                                                pos_weight)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(objective).backward()
                scaler.step(optimizer)
                scaler.update()
                total += ce * len(chunk)
            train_loss, epochs_run = float(total) / len(order), epoch + 1
            if scheduler is not None:
                scheduler.step()
            val_acc = None
            if len(val_idx):
                val_acc, val_loss = evaluate(net, images[val_idx], labels[val_idx], mean, std, device)
                if val_acc > best_acc or (val_acc == best_acc and val_loss < best_loss - _LOSS_TOL):
                    best, best_acc, best_loss = _snapshot(net, loss_module), val_acc, val_loss
                    best_epoch, stale = epochs_run, 0
                else:
                    stale += 1
            if progress is not None:
                progress({"phase": "train", "epoch": epochs_run, "epochs": config.epochs, "loss": train_loss,
                          "val_accuracy": val_acc, "lr": lr})
            if stale >= config.patience:
                stopped_early = True
                break
    if best is not None:
        net.load_state_dict(best[0])
        if loss_module is not None:
            loss_module.load_state_dict(best[1])
    net.eval()
    metrics = {"train_loss": train_loss, "epochs_run": float(epochs_run),
               "stopped_early": float(stopped_early), "held_out": float(len(val_idx))}
    if len(val_idx):
        metrics |= {"val_accuracy": best_acc, "val_loss": best_loss, "best_epoch": float(best_epoch)}
    return metrics
