"""Per-project settings (strategy, model, retrain cadence, stream mode), validated by one pydantic model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plugins.specs import MAX_SEED, TORCHVISION_CACHE, ModelSpec, StrategySpec

if TYPE_CHECKING:
    from plugins.strategies import Strategy


class ProjectSettings(BaseModel):
    """What an admin can set per Label Studio project; defaults come from the environment (LSAL_DEFAULTS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: StrategySpec = Field(default_factory=lambda: StrategySpec(name="badge"))
    model: ModelSpec = Field(default_factory=ModelSpec)
    batch_size: int = Field(10, ge=1, le=100_000, description="tasks a batch strategy picks jointly per round")
    retrain_every: int = Field(10, ge=1, le=1_000_000, description="retrain after this many annotation changes")
    min_labels: int = Field(10, ge=2, le=1_000_000, description="labeled tasks needed before the first training")
    image_size: int = Field(32, ge=4, le=1024, description="images are decoded and resized to this square size")
    channels: Literal[1, 3] = Field(3, description="1: grayscale, 3: RGB")
    holdout_fraction: float = Field(0.2, ge=0.0, lt=0.9,
                                    description="part of the labeled set held out to measure each version")
    stream: bool = Field(True, description="score newly imported tasks at once with the current model")
    stream_threshold: float | None = Field(
        None, ge=0.0, le=1e6, description="stream mode: tasks whose uncertainty is below this are held back "
                                  "(ranked last) until the next full rescore")
    shard_size: int = Field(20_000, ge=10, le=10_000_000, description="a rescore of more unlabeled tasks than this is split "
                                                      "into shard jobs that any free worker computes")
    keep_versions: int = Field(3, ge=1, le=100, description="prediction versions kept in Label Studio")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed for training splits and the strategy's random choices")

    def build_strategy(self) -> Strategy:
        """The project's strategy, with the project's batch size unless its params set one."""
        from plugins.strategies import strategy_for

        return strategy_for(self.strategy, self.batch_size, self.seed)

    def model_params(self) -> dict[str, Any]:
        """The model's params, with the project's image size and channels where the model takes them."""
        from plugins.models import MODELS

        fields = MODELS.get(self.model.name).Params.model_fields
        derived = {k: v for k, v in (("image_size", self.image_size), ("channels", self.channels),
                                     ("seed", self.seed)) if k in fields}
        return {**derived, **self.model.params}


class InvalidSettingsError(ValueError):
    """Settings an admin asked for that cannot work; the message says why and what is allowed."""


def confined_weights(settings: ProjectSettings, weights_dir: Path | None,
                     current: ProjectSettings | None = None) -> ProjectSettings:
    """The settings with a newly set `pretrained_path` resolved inside LSAL_WEIGHTS_DIR (InvalidSettingsError
    when it points anywhere else): an admin names weight files, never arbitrary files of the host.
    `pretrained_path` 'torchvision' (torch's own cache) and a path already in force stay as they are."""
    path = settings.model.params.get("pretrained_path")
    kept = current.model.params.get("pretrained_path") if current is not None else None
    if path is None or path == TORCHVISION_CACHE or path == kept:
        return settings
    if weights_dir is None:
        raise InvalidSettingsError("pretrained_path: set LSAL_WEIGHTS_DIR to the folder of weight files first; "
                                   "a project may only name files inside it")
    if not isinstance(path, str) or not path or "\x00" in path:
        raise InvalidSettingsError("pretrained_path must be a file name inside LSAL_WEIGHTS_DIR")
    root = Path(weights_dir).resolve()
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root) or not resolved.is_file():
        raise InvalidSettingsError(f"pretrained_path {path!r} is not a file inside LSAL_WEIGHTS_DIR")
    params = {**settings.model.params, "pretrained_path": str(resolved)}
    return settings.model_copy(update={"model": ModelSpec(name=settings.model.name, params=params)})


def validate_settings(data: dict[str, Any] | ProjectSettings, weights_dir: Path | None = None,
                      current: ProjectSettings | None = None) -> ProjectSettings:
    """A ProjectSettings whose strategy and model really build, or InvalidSettingsError saying why; with
    `weights_dir`, a changed pretrained_path is confined to it (confined_weights)."""
    from plugins.models import build_model
    from plugins.registry import UnknownPluginError
    from plugins.strategies import STRATEGIES, InvalidParamsError, StrategyError

    try:
        settings = data if isinstance(data, ProjectSettings) else ProjectSettings.model_validate(data)
    except ValidationError as exc:
        raise InvalidSettingsError(_pydantic_message(exc)) from None
    if weights_dir is not None or current is not None:
        settings = confined_weights(settings, weights_dir, current)
    if settings.strategy.name not in STRATEGIES:
        raise InvalidSettingsError(f"unknown strategy {settings.strategy.name!r}; available: "
                                   f"{', '.join(STRATEGIES.names())}")
    try:
        settings.build_strategy()
    except (InvalidParamsError, StrategyError) as exc:
        raise InvalidSettingsError(f"strategy {settings.strategy.name!r}: {exc}") from None
    try:
        build_model(settings.model.name, 2, **settings.model_params())
    except UnknownPluginError as exc:
        raise InvalidSettingsError(str(exc)) from None
    except (InvalidParamsError, ValueError, TypeError) as exc:
        raise InvalidSettingsError(f"model {settings.model.name!r}: {exc}") from None
    return settings


def strategy_param_help(name: str) -> dict[str, Any]:
    """{param: default} of a registered strategy, for error messages and the CLI."""
    from plugins.strategies import STRATEGIES

    return {k: f.default for k, f in STRATEGIES.get(name).Params.model_fields.items()}


def _pydantic_message(exc: ValidationError) -> str:
    """One readable line per pydantic error: 'field.path: message'."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors())
