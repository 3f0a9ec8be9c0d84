"""Classification networks: a small CNN for tiny images, torchvision backbones, and a dropout head.

Every network is `backbone -> embedding h -> Dropout -> Linear head`. The backbone runs once per item;
MC dropout (Gal & Ghahramani, ICML 2016) re-samples only the dropout mask on h, so K samples cost one
backbone pass and K cheap head evaluations.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from plugins.strategies import InvalidParamsError

SMALL_CNN = "small_cnn"
SMALL_CNN_EMBED_DIM = 128
# Value of `pretrained_path` that means "torchvision's own file for this architecture, in torch's cache".
from plugins.specs import TORCHVISION_CACHE  # noqa: E402,F401
# Attributes that hold the final classifier in torchvision's classification models, in lookup order.
_HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")
# Models whose training-mode forward returns auxiliary logits next to the main ones.
_AUX_OUTPUT_ARCHS = ("googlenet", "inception_v3")
SUPPORTED_FAMILIES = (
    "small_cnn, resnet*, resnext*, wide_resnet*, regnet*, densenet*, shufflenet*, mnasnet*, mobilenet*, "
    "efficientnet*, convnext*, vgg*, alexnet, maxvit_t, swin*, vit* (vit needs image_size 224)"
)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU-maxpool blocks and a linear layer to a 128-d embedding, for ~28x28 images."""

    def __init__(self, in_channels: int = 1, width: int = 32, embed_dim: int = SMALL_CNN_EMBED_DIM) -> None:
        super().__init__()
        widths = [in_channels, width, 2 * width, 4 * width]
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            )
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.pool = nn.AdaptiveAvgPool2d(2)  # keeps coarse position: a 2x2 grid of the last feature map
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * widths[-1], embed_dim), nn.ReLU(inplace=True))
        self.embed_dim = embed_dim
        self.taps: list[nn.Module] = list(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.fc(self.pool(x))


class TorchvisionBackbone(nn.Module):
    """A torchvision classification model with its last linear layer removed: outputs the embedding."""

    def __init__(self, arch: str, in_channels: int) -> None:
        super().__init__()
        available = torchvision.models.list_models(module=torchvision.models)
        if arch not in available:
            raise InvalidParamsError(
                f"unknown architecture {arch!r}; use {SMALL_CNN!r} or a torchvision classification model: "
                f"{', '.join(available)}"
            )
        if arch in _AUX_OUTPUT_ARCHS:
            raise InvalidParamsError(
                f"architecture {arch!r} returns auxiliary outputs and is not supported; supported: "
                f"{SUPPORTED_FAMILIES}"
            )
        if in_channels not in (1, 3):
            raise InvalidParamsError(f"torchvision backbones take 1 or 3 channels, got {in_channels}")
        body = torchvision.models.get_model(arch, weights=None)  # never downloads
        full_keys = set(body.state_dict())
        self.embed_dim = strip_classifier(body, arch)
        self.body = body
        self.in_channels = in_channels
        # Checkpoint keys of the removed layers: present in a full checkpoint, ignored when loading.
        self.head_keys = frozenset(full_keys - set(body.state_dict()))
        self.taps: list[nn.Module] = _stage_modules(body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.body(x)


def strip_classifier(model: nn.Module, arch: str = "model") -> int:
    """Replace the final Linear layer (and the Dropout right before it) by Identity; return its input size."""
    for attribute in _HEAD_ATTRIBUTES:
        head = getattr(model, attribute, None)
        if isinstance(head, nn.Linear):
            setattr(model, attribute, nn.Identity())
            return head.in_features
        if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
            layers = list(head)
            embed_dim = layers.pop().in_features
            while layers and isinstance(layers[-1], nn.Dropout):
                layers.pop()
            setattr(model, attribute, nn.Sequential(*layers))
            return embed_dim
    raise InvalidParamsError(
        f"architecture {arch!r} has no final linear classifier in {', '.join(_HEAD_ATTRIBUTES)}; "
        f"supported: {SUPPORTED_FAMILIES}"
    )


def _stage_modules(body: nn.Module) -> list[nn.Module]:
    """The stages whose outputs feed a learning-loss module: resnet layer1..4, regnet trunk blocks."""
    if all(hasattr(body, f"layer{i}") for i in range(1, 5)):
        return [getattr(body, f"layer{i}") for i in range(1, 5)]
    trunk = getattr(body, "trunk_output", None)
    if isinstance(trunk, nn.Sequential):
        return list(trunk)
    return []


class ClassifierNet(nn.Module):
    """backbone -> embedding h -> Dropout -> Linear head; MC dropout re-samples the mask on h only."""

    def __init__(self, backbone: nn.Module, embed_dim: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise InvalidParamsError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, n_classes)
        self.p = dropout
        self.embed_dim = embed_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) penultimate embeddings."""
        return self.backbone(x).flatten(1)

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(N, C) logits of the head on embeddings, without dropout."""
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(embeddings, intermediate feature maps) in one backbone pass; the maps are the backbone's
        stages (the embedding itself when the architecture has no known stages)."""
        taps: list[nn.Module] = getattr(self.backbone, "taps", [])
        maps: list[torch.Tensor] = []
        handles = [tap.register_forward_hook(lambda _m, _i, out: maps.append(out)) for tap in taps]
        try:
            h = self.embed(x)
        finally:
            for handle in handles:
                handle.remove()
        return h, maps or [h]

    def mc_head_logits(self, h: torch.Tensor, k: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """(K, N, C) float32 head logits under K dropout masks drawn on the embeddings h (inverted)."""
        if k < 1:
            raise InvalidParamsError(f"the number of MC samples must be >= 1, got {k}")
        if self.p == 0.0:
            logits = self.head(h).unsqueeze(0).expand(k, -1, -1)
        else:
            keep = torch.rand((k, *h.shape), generator=generator, device=h.device) >= self.p
            logits = self.head(h.unsqueeze(0) * keep.to(h.dtype) / (1.0 - self.p))
        return logits.float()

    def mc_head_probs(self, h: torch.Tensor, k: int, generator: torch.Generator | None = None,
                      multilabel: bool = False) -> torch.Tensor:
        """(N, K, C) probabilities under K dropout masks on h: softmax over classes, or per-label sigmoids
        when `multilabel`."""
        logits = self.mc_head_logits(h, k, generator)
        probs = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=-1)
        return probs.transpose(0, 1)


def build_backbone(arch: str, channels: int) -> nn.Module:
    """The backbone called `arch` ('small_cnn' or a torchvision classification model), freshly initialised."""
    if arch == SMALL_CNN:
        return SmallCNN(in_channels=channels)
    return TorchvisionBackbone(arch, channels)


def build_network(arch: str, n_classes: int, channels: int, dropout: float) -> ClassifierNet:
    """A randomly initialised ClassifierNet for `arch`."""
    backbone = build_backbone(arch, channels)
    return ClassifierNet(backbone, backbone.embed_dim, n_classes, dropout)


def resolve_weights_path(arch: str, path: str) -> Path:
    """The local file `path` names; 'torchvision' means torchvision's file for `arch` in torch's cache."""
    if path == TORCHVISION_CACHE:
        if arch == SMALL_CNN:
            raise InvalidParamsError("torchvision has no pretrained weights for small_cnn; give a file path")
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        file = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
        if not file.is_file():
            raise InvalidParamsError(
                f"no cached torchvision weights for {arch} at {file}; nothing is downloaded at run time: "
                f"copy {weights.url} there, or give pretrained_path as a local file"
            )
        return file
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidParamsError(f"pretrained_path {str(file)!r} is not a file")
    return file


def load_pretrained(backbone: nn.Module, file: Path) -> None:
    """Load a local state dict into the backbone; a full-model checkpoint's classifier keys are ignored."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a tensor checkpoint
        raise InvalidParamsError(f"cannot read {file} as a state dict of tensors: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidParamsError(f"{file} does not hold a state dict (a mapping of names to tensors)")
    target = backbone.body if isinstance(backbone, TorchvisionBackbone) else backbone
    ignored = backbone.head_keys if isinstance(backbone, TorchvisionBackbone) else frozenset()
    expected = set(target.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected - ignored)
    if missing or unexpected:
        raise InvalidParamsError(
            f"{file} does not match the {type(backbone).__name__} backbone: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    try:
        target.load_state_dict({k: v for k, v in state.items() if k in expected})
    except RuntimeError as exc:
        raise InvalidParamsError(f"{file} has tensors of the wrong shape for this backbone: {exc}") from None
