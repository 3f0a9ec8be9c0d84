"""The image classifier plugin: a small CNN or a torchvision backbone with an MC-dropout head."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import cv2
import numpy as np
import torch
import torchvision
from pydantic import AfterValidator, Field, field_validator

from plugins.device import check_device_name, pick_device
from plugins.models.registry import MODELS
from plugins.models.base import Augment, ModelParams, ModelPlugin, Progress
from plugins.models.learning_loss import LossHeadConfig, LossPredictionModule, feature_dims
from plugins.models.networks import (
    SMALL_CNN,
    TORCHVISION_CACHE,
    ClassifierNet,
    build_network,
    load_pretrained,
    resolve_weights_path,
)
from plugins.models.training import TrainConfig, channel_stats, to_input, train
from plugins.strategies import Input, InvalidParamsError, MissingInputError, PoolInputs

# The normalisation torchvision's ImageNet weights expect (RGB).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma weights, as cv2's RGB -> gray.
_LUMA = np.array([0.299, 0.587, 0.114])

ImagesLike = np.ndarray | Sequence[np.ndarray]


class ClassifierParams(ModelParams):
    """Hyperparameters shared by the image classifier and the ensemble's members."""

    arch: str = Field(SMALL_CNN, description="'small_cnn' or a torchvision classification model ('resnet18')")
    pretrained_path: str | None = Field(
        None, description=f"local state dict of the backbone; {TORCHVISION_CACHE!r}: torchvision's cached "
                          "file. "
                          "Never downloaded; without it the network trains from scratch",
    )
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout on the embedding, before the head")
    image_size: int = Field(28, ge=4, le=1024, description="images are resized to image_size x image_size")
    channels: Literal[1, 3] = Field(1, description="images are converted to gray (1) or RGB (3)")
    learning_loss: bool = Field(False, description="train a loss-prediction head (Yoo & Kweon, CVPR 2019)")
    loss_head: LossHeadConfig = Field(default_factory=LossHeadConfig, description="loss-prediction head")
    train: TrainConfig = Field(default_factory=TrainConfig, description="training-loop settings")
    warm_start: bool = Field(True, description="fit continues from the current weights when there are any")
    eval_batch_size: int = Field(256, ge=1, le=65_536, description="items per batch of a prediction pass")
    device: Annotated[str | None, AfterValidator(check_device_name)] = Field(
        None, description="'cpu', 'cuda', 'cuda:1'; default: CUDA when present")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        available = torchvision.models.list_models(module=torchvision.models)
        if arch != SMALL_CNN and arch not in available:
            raise ValueError(
                f"unknown architecture {arch!r}; use {SMALL_CNN!r} or one of {', '.join(available)}"
            )
        return arch


class CNNParams(ClassifierParams):
    """Hyperparameters of the image classifier."""

    mc_samples: int = Field(20, ge=1, le=10_000, description="K: MC-dropout samples of the head per item")


def prepare_images(x: ImagesLike, size: int, channels: int) -> np.ndarray:
    """(N, size, size, channels) uint8 images from an (N, H, W) / (N, H, W, C) array or a list of (H, W[, C])
    images; uint8 (or integers in 0..255) and floats in [0, 1] are accepted. Non-square images are
    stretched."""
    if not (isinstance(x, np.ndarray) and x.dtype != object):
        out = np.zeros((len(x), size, size, channels), dtype=np.uint8)
        for i, img in enumerate(x):
            img = np.asarray(img)
            if img.ndim not in (2, 3):
                raise InvalidParamsError(f"image {i} must be (H, W) or (H, W, C), got shape {img.shape}")
            out[i] = prepare_images(img[None], size, channels)[0]
        return out
    if x.ndim not in (3, 4):
        raise InvalidParamsError(
            f"expected images as an (N, H, W) or (N, H, W, C) array, got shape {x.shape}"
        )
    arr = _convert_channels(_to_uint8(x if x.ndim == 4 else x[..., None]), channels)
    if arr.shape[1:3] == (size, size):
        return np.ascontiguousarray(arr)
    if not len(arr):
        return np.zeros((0, size, size, channels), dtype=np.uint8)
    return np.stack([_resize(img, size) for img in arr])


def _to_uint8(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * 255
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise InvalidParamsError(f"integer images must lie in 0..255, got {x.min()}..{x.max()}")
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise InvalidParamsError("float images must be finite and lie in [0, 1] (or pass uint8 0..255)")
        return np.rint(x * 255.0).astype(np.uint8)
    raise InvalidParamsError(f"images must be uint8, integer or float, got dtype {x.dtype}")


def _convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W, C) with C in 1, 3, 4 (alpha dropped) -> (N, H, W, channels)."""
    have = x.shape[-1]
    if have not in (1, 3, 4):
        raise InvalidParamsError(f"images must have 1, 3 or 4 channels (last axis), got {have}")
    if have == 4:
        x, have = x[..., :3], 3
    if have == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=-1)
    return np.rint(x @ _LUMA)[..., None].astype(np.uint8)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) -> (size, size, C); area averaging when shrinking, bilinear when enlarging."""
    if img.shape[:2] == (size, size):
        return img
    shrink = img.shape[0] >= size and img.shape[1] >= size
    out = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out


@MODELS.register("cnn")
class ImageClassifier(ModelPlugin):
    """An image classifier (a small CNN, or any torchvision classification backbone) with a dropout head.

    One pass over the pool gives probabilities, penultimate embeddings and K MC-dropout samples (Gal &
    Ghahramani, ICML 2016): the embeddings are computed once and only the head's dropout mask is re-drawn.
    With `learning_loss`, a loss-prediction module (Yoo & Kweon, CVPR 2019) is trained beside it and
    `predicted_loss` becomes available (the instance's `provides` then includes it; the class's does not).
    With `multilabel`, the same network has one sigmoid per label, trained with BCE (the loss-prediction
    module then predicts the BCE summed over labels); probabilities and MC samples are per-label sigmoids.
    """

    Params = CNNParams
    provides = frozenset({Input.PROBS, Input.SAMPLES, Input.EMBEDDINGS, Input.LABELED_EMBEDDINGS,
                          Input.LABELED_LABELS, Input.HEAD})

    def __init__(self, n_classes: int, **params: Any) -> None:
        super().__init__(n_classes, **params)
        try:
            self.device = pick_device(self.params.device)
        except ValueError as exc:
            raise InvalidParamsError(str(exc)) from None
        if self.params.learning_loss:
            self.provides = type(self).provides | {Input.PREDICTED_LOSS}
        self.net: ClassifierNet | None = None
        self.loss_module: LossPredictionModule | None = None
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def sample_problem(self) -> str | None:
        return self._too_few_samples("mc_samples") or self._no_dropout()

    # -- construction -------------------------------------------------------------------------------------

    def _build(self, pretrained: bool) -> None:
        """A fresh network (and loss module) initialised from the seed; pretrained weights if asked."""
        p = self.params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            net = build_network(p.arch, self.n_classes, p.channels, p.dropout)
            if pretrained and p.pretrained_path:
                load_pretrained(net.backbone, resolve_weights_path(p.arch, p.pretrained_path))
            loss_module = None
            if p.learning_loss:
                net.eval()
                with torch.no_grad():
                    _, maps = net.features(torch.zeros(2, p.channels, p.image_size, p.image_size))
                loss_module = LossPredictionModule(feature_dims(maps), p.loss_head.hidden).to(self.device)
        # channels-last: 2-3x faster convolutions and pooling on the CPU, the fast path on CUDA too
        self.net, self.loss_module = net.to(self.device, memory_format=torch.channels_last), loss_module

    def _normalisation(self, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """ImageNet statistics for pretrained torchvision weights, else the training images' own."""
        p = self.params
        if p.pretrained_path and p.arch != SMALL_CNN:
            mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
            return (mean, std) if p.channels == 3 else (mean.mean(0, keepdim=True), std.mean(0, keepdim=True))
        return channel_stats(images)

    def _trained(self) -> ClassifierNet:
        if self.net is None or self.mean is None or self.std is None:
            raise RuntimeError("the model is not trained yet: call fit or load_state_dict first")
        return self.net

    # -- the plugin protocol ------------------------------------------------------------------------------

    def fit(self, x: ImagesLike, y: np.ndarray, progress: Progress | None = None,
            augment: Augment | None = None) -> dict[str, float]:
        p = self.params
        images = prepare_images(x, p.image_size, p.channels)
        labels = self.check_targets(y, len(images))
        if self.net is None or not p.warm_start:
            self._build(pretrained=True)
            self.mean, self.std = self._normalisation(images)
        metrics = train(self._trained(), images, labels, p.train, mean=self.mean, std=self.std, seed=p.seed,
                        device=self.device, progress=progress, augment=augment, loss_module=self.loss_module,
                        loss_head=p.loss_head)
        return metrics | {"labels": float(len(labels))}

    def predict_proba(self, x: ImagesLike) -> np.ndarray:
        return self.forward_pass(x)["probs"]

    def pool_inputs(self, x_pool: ImagesLike, needs: frozenset[Input], x_labeled: ImagesLike,
                    y_labeled: np.ndarray) -> PoolInputs:
        self.check_sample_count(needs, "mc_samples")
        values: dict[str, Any] = self.forward_pass(
            x_pool, samples=Input.SAMPLES in needs, embeddings=bool(needs & {Input.EMBEDDINGS, Input.HEAD}),
            predicted_loss=Input.PREDICTED_LOSS in needs,
        )
        if Input.LABELED_EMBEDDINGS in needs:
            values["labeled_embeddings"] = self.forward_pass(x_labeled, embeddings=True)["embeddings"]
        if Input.HEAD in needs:
            values["head"] = self.head()
        return PoolInputs(labeled_labels=labeled_targets(y_labeled, self.params.multilabel),
                          n_classes=self.n_classes, multilabel=self.params.multilabel, **values)

    def forward_pass(self, x: ImagesLike, *, samples: bool = False, embeddings: bool = False,
                     predicted_loss: bool = False) -> dict[str, np.ndarray]:
        """One batched pass: 'probs' (N, C) always; 'samples' (N, K, C), 'embeddings' (N, D) and
        'predicted_loss' (N,) when asked. MC samples re-draw dropout on the embeddings only. Softmax over
        classes, or per-label sigmoids when multilabel."""
        net = self._trained().eval()
        p = self.params
        if predicted_loss and self.loss_module is None:
            raise MissingInputError(
                "predicted_loss needs a loss-prediction head: build the model with learning_loss=true"
            )
        k, c, d = p.mc_samples, self.n_classes, net.embed_dim
        parts: dict[str, list[np.ndarray]] = {"probs": [np.zeros((0, c), np.float32)]}
        if samples:
            parts["samples"] = [np.zeros((0, k, c), np.float32)]
        if embeddings:
            parts["embeddings"] = [np.zeros((0, d), np.float32)]
        if predicted_loss:
            parts["predicted_loss"] = [np.zeros(0, np.float32)]
            self.loss_module.eval()
        generator = torch.Generator(device=self.device).manual_seed(p.seed) if samples else None
        use_amp = p.train.amp and self.device.type == "cuda"
        with torch.no_grad():
            for start in range(0, len(x), p.eval_batch_size):
                batch = prepare_images(x[start:start + p.eval_batch_size], p.image_size, p.channels)
                inputs = to_input(batch, self.mean, self.std, self.device)
                with torch.autocast(self.device.type, dtype=torch.float16, enabled=use_amp):
                    if predicted_loss:
                        h, maps = net.features(inputs)
                        parts["predicted_loss"].append(_np(self.loss_module(maps)))
                    else:
                        h = net.embed(inputs)
                h = h.float()
                parts["probs"].append(_np(self._activation(net.head_logits(h))))
                if samples:
                    parts["samples"].append(_np(net.mc_head_probs(h, k, generator, p.multilabel)))
                if embeddings:
                    parts["embeddings"].append(_np(h))
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}

    def _activation(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities from head logits: softmax over classes, or per-label sigmoids when multilabel."""
        return torch.sigmoid(logits) if self.params.multilabel else torch.softmax(logits, dim=1)

    def head(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """(M, D) embeddings -> (M, C) logits of the eval-mode head (per-label logits when multilabel);
        differentiable, any device and dtype."""
        linear, device = self._trained().head, self.device

        def apply(e: torch.Tensor) -> torch.Tensor:
            return linear(e.to(device=device, dtype=torch.float32)).to(device=e.device, dtype=e.dtype)

        return apply

    def state_dict(self) -> dict[str, Any]:
        net = self._trained()
        state: dict[str, Any] = {f"net.{k}": v.detach().cpu() for k, v in net.state_dict().items()}
        if self.loss_module is not None:
            state |= {f"loss_module.{k}": v.detach().cpu() for k, v in self.loss_module.state_dict().items()}
        p = self.params
        return state | {"mean": self.mean.cpu(), "std": self.std.cpu(), "arch": p.arch,
                        "image_size": p.image_size, "channels": p.channels, "multilabel": p.multilabel}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        p = self.params
        saved = {"multilabel": False} | state  # artifacts from before multi-label were single-label
        for key, want in (("arch", p.arch), ("image_size", p.image_size), ("channels", p.channels),
                          ("multilabel", p.multilabel)):
            if saved.get(key) != want:
                raise InvalidParamsError(
                    f"the saved model has {key}={saved.get(key)!r} but the params say {want!r}"
                )
        self._build(pretrained=False)
        self.net.load_state_dict(_prefixed(state, "net."))
        if self.loss_module is not None:
            module_state = _prefixed(state, "loss_module.")
            if not module_state:
                raise InvalidParamsError(
                    "learning_loss is on but the saved model has no loss-prediction head"
                )
            self.loss_module.load_state_dict(module_state)
        self.mean = torch.as_tensor(state["mean"], dtype=torch.float32)
        self.std = torch.as_tensor(state["std"], dtype=torch.float32)


def labeled_targets(y: np.ndarray, multilabel: bool) -> np.ndarray:
    """The labeled set's labels as a strategy reads them: int64 class ids, or (L, C) uint8 0/1 targets."""
    return np.asarray(y, dtype=np.uint8 if multilabel else np.int64)


def _prefixed(state: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()
