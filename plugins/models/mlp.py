"""A small MLP head with MC dropout on feature vectors (a frozen encoder's embeddings): the trainable
alternative to the logistic committee."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import AfterValidator, Field
from torch import nn

from plugins.device import check_device_name, pick_device
from plugins.models.base import Augment, ModelParams, ModelPlugin, Progress
from plugins.models.linear import UNSEEN_LOGIT, feature_matrix
from plugins.models.registry import MODELS
from plugins.models.training import batches, correct_decisions, item_losses
from plugins.strategies import Input, InvalidParamsError, MissingInputError, PoolInputs

# Items per batch of a prediction pass (the K MC-dropout masks of a batch are drawn at once).
_EVAL_BATCH = 4096
# Progress is reported every this many epochs (and after the last one).
_PROGRESS_EVERY = 10


class MLPNet(nn.Module):
    """Linear(D, hidden) -> ReLU -> Dropout -> Linear(hidden, C); MC dropout re-draws the mask on the hidden
    layer only, so the hidden activations are the embeddings and the last Linear is the head. Classes not in
    `seen` (absent from the training set) get the fixed logit UNSEEN_LOGIT: a probability near 0, never 0,
    and no gradient to their rows, which keep their initial weights until a fit sees the class."""

    def __init__(self, in_features: int, hidden: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)
        self.p = dropout
        self.register_buffer("seen", torch.ones(n_classes, dtype=torch.bool))

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """(N, hidden) post-ReLU activations of standardized features z."""
        return torch.relu(self.hidden(z))

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(..., C) logits of the head on hidden activations h (the unseen classes' fixed logit)."""
        return self.head(h).masked_fill(~self.seen, UNSEEN_LOGIT)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.dropout(self.embed(z)))

    def mc_logits(self, h: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        """(K, N, C) head logits under K inverted-dropout masks drawn on the hidden activations h."""
        keep = torch.rand((k, *h.shape), generator=generator, device=h.device) >= self.p
        return self.head_logits(h.unsqueeze(0) * keep.to(h.dtype) / (1.0 - self.p))


@MODELS.register("mlp")
class MLPHead(ModelPlugin):
    """A one-hidden-layer MLP on standardized features (or on embeddings from a frozen encoder), trained with
    AdamW; K MC-dropout passes (Gal & Ghahramani, ICML 2016) on the hidden layer give the per-item samples
    that BALD, BatchBALD and QBC need. The hidden activations are the embeddings strategies see and `head`
    the last Linear on them. Multi-label: one sigmoid per label, trained with BCE. `fit` warm-starts from
    the current weights when the feature width is unchanged."""

    class Params(ModelParams):
        hidden: int = Field(256, ge=1, le=65_536,
                            description="units of the hidden layer (the embedding width)")
        dropout: float = Field(0.3, ge=0, le=0.9, description="dropout on the hidden layer, in training and "
                                                              "in the MC-dropout passes")
        mc_samples: int = Field(10, ge=1, le=10_000, description="K: MC-dropout passes per item for samples")
        epochs: int = Field(100, ge=1, le=100_000, description="passes over the labeled set per fit")
        lr: float = Field(1e-3, gt=0, le=10, description="AdamW learning rate")
        weight_decay: float = Field(1e-4, ge=0, le=10, description="AdamW decoupled weight decay")
        batch_size: int = Field(64, ge=1, le=65_536, description="items per optimisation step")
        device: Annotated[str | None, AfterValidator(check_device_name)] = Field(
            None, description="'cpu', 'cuda', 'cuda:1'; default: CUDA when present")

    provides = frozenset({Input.PROBS, Input.SAMPLES, Input.EMBEDDINGS, Input.LABELED_EMBEDDINGS,
                          Input.LABELED_LABELS, Input.HEAD})
    reads_vectors = True

    def __init__(self, n_classes: int, **params: Any) -> None:
        super().__init__(n_classes, **params)
        try:
            self.device = pick_device(self.params.device)
        except ValueError as exc:
            raise InvalidParamsError(str(exc)) from None
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.net: MLPNet | None = None

    def sample_problem(self) -> str | None:
        return self._too_few_samples("mc_samples") or self._no_dropout()

    def check_sample_count(self, needs: frozenset[Input], param: str) -> None:
        """As ModelPlugin's, and MissingInputError too when dropout is 0 (every MC sample is the same)."""
        super().check_sample_count(needs, param)
        problem = self._no_dropout() if Input.SAMPLES in needs else None
        if problem:
            raise MissingInputError("samples asked of a model whose samples cannot disagree, so every score "
                                    f"would be 0: {problem}")

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Standardized features (images are flattened): the network's input."""
        if self.mean is None:
            raise RuntimeError("the model is not trained yet")
        return (feature_matrix(x) - self.mean) / self.scale

    def _trained(self) -> MLPNet:
        if self.net is None or self.mean is None:
            raise RuntimeError("the model is not trained yet")
        return self.net

    def _build(self, in_features: int) -> None:
        """A fresh network initialised from the seed."""
        p = self.params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            net = MLPNet(in_features, p.hidden, self.n_classes, p.dropout)
        self.net = net.to(self.device)

    def _restandardize(self, mean: np.ndarray, scale: np.ndarray) -> None:
        """Adopt new feature statistics, folding the change into the first layer so the trained network
        computes the same function of the raw features."""
        ratio = scale / self.scale  # z_old = z_new * ratio + shift
        shift = (mean - self.mean) / self.scale
        layer = self._trained().hidden
        with torch.no_grad():
            w = layer.weight.double()
            layer.bias.add_((w @ torch.as_tensor(shift, device=w.device)).to(layer.bias.dtype))
            layer.weight.mul_(torch.as_tensor(ratio, device=w.device, dtype=layer.weight.dtype))
        self.mean, self.scale = mean, scale

    def fit(self, x: np.ndarray, y: np.ndarray, progress: Progress | None = None,
            augment: Augment | None = None) -> dict[str, float]:
        if augment is not None:
            raise InvalidParamsError("the mlp model trains on feature vectors; image augmentation does not "
                                     "apply")
        x = feature_matrix(x)
        y = self.check_targets(y, len(x))
        if not len(y):
            raise InvalidParamsError("cannot train on an empty labeled set")
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        # floor at the mean spread: a feature that barely varies in a small labeled set is not blown up
        scale = np.maximum(std, std.mean() + 1e-12)
        if self.net is not None and self.mean is not None and self.net.hidden.in_features == x.shape[1]:
            self._restandardize(mean, scale)  # warm start
        else:
            self.mean, self.scale = mean, scale
            self._build(x.shape[1])
        net, p = self._trained(), self.params
        seen = np.ones(self.n_classes, bool) if p.multilabel else np.bincount(y, minlength=self.n_classes) > 0
        net.seen.copy_(torch.as_tensor(seen))
        z = torch.as_tensor(self.embed(x), dtype=torch.float32, device=self.device)
        targets = torch.as_tensor(y.astype(np.float32) if p.multilabel else y, device=self.device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        order_gen = torch.Generator().manual_seed(p.seed)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(p.seed)  # the training dropout masks
            for epoch in range(1, p.epochs + 1):
                net.train()
                for chunk in batches(torch.randperm(len(y), generator=order_gen).numpy(), p.batch_size):
                    idx = torch.as_tensor(chunk, device=self.device)
                    loss = item_losses(net(z[idx]), targets[idx]).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                if progress and (epoch % _PROGRESS_EVERY == 0 or epoch == p.epochs):
                    progress({"phase": "epoch", "epoch": epoch, "of": p.epochs})
        net.eval()
        with torch.no_grad():
            correct, total = correct_decisions(net(z), targets)
        return {"train_accuracy": correct / total, "labels": float(len(y))}

    def state_dict(self) -> dict:
        net = self._trained()
        return {**{f"net.{k}": v.detach().cpu() for k, v in net.state_dict().items()},
                "mean": torch.as_tensor(self.mean), "scale": torch.as_tensor(self.scale),
                "hidden": self.params.hidden, "multilabel": self.params.multilabel}

    def load_state_dict(self, state: dict) -> None:
        p = self.params
        for key, want in (("multilabel", p.multilabel), ("hidden", p.hidden)):
            if state.get(key) != want:
                raise InvalidParamsError(
                    f"the saved model has {key}={state.get(key)!r} but the params say {want!r}")
        saved_classes = int(state["net.head.bias"].shape[0])
        if saved_classes != self.n_classes:
            raise InvalidParamsError(
                f"the saved model has {saved_classes} classes but this one has {self.n_classes}")
        mean, scale = state["mean"].numpy(), state["scale"].numpy()
        self._build(len(mean))
        self.net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
        self.net.eval()
        self.mean, self.scale = mean, scale

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x)["probs"]

    def pool_inputs(self, x_pool: np.ndarray, needs: frozenset[Input], x_labeled: np.ndarray,
                    y_labeled: np.ndarray) -> PoolInputs:
        self._trained()
        self.check_sample_count(needs, "mc_samples")
        embed = bool(needs & {Input.EMBEDDINGS, Input.LABELED_EMBEDDINGS, Input.HEAD})
        values: dict[str, Any] = self._forward(x_pool, samples=Input.SAMPLES in needs, embeddings=embed)
        if embed:
            values["labeled_embeddings"] = self._forward(x_labeled, embeddings=True)["embeddings"]
        if Input.HEAD in needs:
            values["head"] = self.head()
        multilabel = self.params.multilabel
        labels = np.asarray(y_labeled, dtype=np.uint8 if multilabel else np.int64)
        return PoolInputs(labeled_labels=labels, n_classes=self.n_classes, multilabel=multilabel, **values)

    def head(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """(M, hidden) embeddings -> (M, C) logits of the last Linear (per-label logits when multilabel);
        differentiable, any device and dtype. A snapshot: later fits do not change it."""
        net = self._trained()
        seen = net.seen[:, None]
        weight = torch.where(seen, net.head.weight.detach(), 0.0)
        bias = torch.where(net.seen, net.head.bias.detach(), UNSEEN_LOGIT)
        return lambda e: e @ weight.to(e).T + bias.to(e)

    def _activation(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities in float64 (a class's probability never underflows to exactly 0): softmax over the
        last axis, or per-label sigmoids when multilabel."""
        logits = logits.double()
        return torch.sigmoid(logits) if self.params.multilabel else torch.softmax(logits, dim=-1)

    def _forward(self, x: np.ndarray, *, samples: bool = False,
                 embeddings: bool = False) -> dict[str, np.ndarray]:
        """Eval-mode 'probs' (N, C) float64 always; 'samples' (N, K, C) float32 (K MC-dropout passes, seeded)
        and 'embeddings' (N, hidden) float32 when asked."""
        net = self._trained().eval()
        p = self.params
        z = self.embed(x)
        k, c = p.mc_samples, self.n_classes
        parts: dict[str, list[np.ndarray]] = {"probs": [np.zeros((0, c))]}
        if samples:
            parts["samples"] = [np.zeros((0, k, c), np.float32)]
        if embeddings:
            parts["embeddings"] = [np.zeros((0, p.hidden), np.float32)]
        generator = torch.Generator(device=self.device).manual_seed(p.seed) if samples else None
        with torch.no_grad():
            for start in range(0, len(z), _EVAL_BATCH):
                batch = torch.as_tensor(z[start:start + _EVAL_BATCH], dtype=torch.float32, device=self.device)
                h = net.embed(batch)
                parts["probs"].append(self._activation(net.head_logits(h)).cpu().numpy())
                if samples:
                    mc = self._activation(net.mc_logits(h, k, generator)).transpose(0, 1)
                    parts["samples"].append(mc.float().cpu().numpy())
                if embeddings:
                    parts["embeddings"].append(h.cpu().numpy())
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}
