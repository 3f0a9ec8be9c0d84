"""Per-project settings (strategy, model, retrain cadence, stream mode), validated by one pydantic model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plugins.specs import MAX_SEED, TORCHVISION_CACHE, EncoderSpec, ModelSpec, StrategySpec, SynthesisRule
from plugins.stopping import StoppingRule

if TYPE_CHECKING:
    from plugins.strategies import Strategy


class ProjectSettings(BaseModel):
    """What an admin can set per Label Studio project; defaults come from the environment (LSAL_DEFAULTS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: StrategySpec = Field(default_factory=lambda: StrategySpec(name="badge"))
    model: ModelSpec = Field(default_factory=ModelSpec)
    encoder: EncoderSpec | None = Field(
        None, description="a frozen pretrained encoder (mobilenet_v2 for images, minilm for text) whose embeddings, "
                          "cached per task, the model trains and scores on (the model must read vectors: logistic); "
                          "None: the model reads the images themselves. Text projects need one")
    batch_size: int = Field(10, ge=1, le=100_000, description="tasks a batch strategy picks jointly per round")
    retrain_every: int = Field(10, ge=1, le=1_000_000, description="retrain after this many annotation changes")
    min_labels: int = Field(10, ge=2, le=1_000_000, description="labeled tasks needed before the first training")
    image_size: int = Field(32, ge=4, le=1024, description="images are decoded and resized to this square size")
    channels: Literal[1, 3] = Field(3, description="1: grayscale, 3: RGB")
    holdout_fraction: float = Field(0.2, ge=0.0, lt=0.9,
                                    description="part of the labeled set held out to measure each version")
    promotion_gate: bool = Field(
        True, description="a new version serves only when it is not worse than the serving one beyond noise on the "
                          "held-out items neither trained on (paired bootstrap); the first one when it beats the "
                          "no-model baseline. The served model then trains on the training side only. False: every "
                          "version serves, refit on all labels")
    promotion_margin: float = Field(0.0, ge=0.0, le=1.0, description="promotion gate: a candidate is held back only "
                                                                      "when worse by more than this beyond noise")
    stream: bool = Field(True, description="score newly imported tasks at once with the current model")
    stream_threshold: float | None = Field(
        None, ge=0.0, le=1e6, description="stream mode: tasks whose uncertainty is below this are held back "
                                  "(ranked last) until the next full rescore")
    shard_size: int = Field(20_000, ge=10, le=10_000_000, description="a rescore of more unlabeled tasks than this is split "
                                                      "into shard jobs that any free worker computes")
    keep_versions: int = Field(3, ge=1, le=100, description="prediction versions kept in Label Studio")
    task_fields: bool = Field(
        False, description="after each publication, write lsal_rank, lsal_uncertainty, lsal_confidence, "
                           "lsal_prediction, lsal_strategy, lsal_model and lsal_reason into every unlabeled task's "
                           "data (Data Manager columns; a labeling config can show $lsal_reason) and keep a Data "
                           "Manager tab ordered by our priority; changes the tasks' data, one PATCH per task")
    review: bool = Field(
        False, description="after each retrain, a separate job reviews every labeled task's label with out-of-fold "
                          "predictions and confident learning (cleanlab) and keeps the flagged ones for reviewers "
                          "(`lsal review`); it changes no annotation. Costs review_folds fits of the model")
    review_folds: int = Field(5, ge=2, le=20, description="k of the review's stratified k-fold (fewer when a class "
                                                          "has fewer labeled items)")
    confident_target: float | None = Field(
        None, ge=0.5, lt=1.0, description="single-label classification: the precision a confident pre-label must "
                                          "have (e.g. 0.99). Each retrain calibrates the model on its held-out labels "
                                          "and sets the confidence threshold that meets it at confident_level; tasks "
                                          "above it get pre-annotations marked confident and go to the end of the "
                                          "order. None: off")
    confident_level: float = Field(0.95, ge=0.5, le=0.999, description="confidence of the lower bound on the "
                                                                        "held-out precision of confident pre-labels")
    confident_export: bool = Field(
        False, description="confident pre-labels become labels without a human: each publication saves them as "
                          "annotations of their tasks (marked lsal_auto; Label Studio exports them as labels), which "
                          "no model trains on. Off: they stay pre-annotations a person accepts in one click")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed for training splits and the strategy's random choices")
    label_threshold: float = Field(0.5, gt=0, lt=1, description="multi-label: a label is ticked in pre-annotations "
                                                               "(and counted in metrics) at this probability")
    augment: list[SynthesisRule] = Field(
        default_factory=list, max_length=10,
        description="synthetic training items each retrain adds (defect synthesis, class-conditional "
                    "augmentation); held-out metrics stay on real items")
    stopping: StoppingRule = Field(
        default_factory=StoppingRule,
        description="when labeling may stop, evaluated after every retrain and rescore: budget (a spent budget "
                    "also stops retraining), target and convergence on the kind's primary held-out metric, "
                    "max uncertainty left in the pool")

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


def settings_for_kind(defaults: ProjectSettings, kind: Any) -> ProjectSettings:
    """`defaults` with the model and strategy a new project of `kind` needs where the defaults' do not fit it
    (a detection project gets the detector and a box strategy); `defaults` itself when they fit."""
    from plugins.specs import ModelSpec, StrategySpec

    update: dict[str, Any] = {}
    encoder = defaults.encoder
    if encoder is not None and encoder_input_type(encoder.name) != kind.input_type:
        encoder = update["encoder"] = None
    if encoder is None and kind.default_encoder is not None:
        update["encoder"] = EncoderSpec(name=kind.default_encoder)
    if kind.models and defaults.model.name not in kind.models:
        update["model"] = ModelSpec(name=kind.models[0])
        if kind.default_image_size is not None:
            update["image_size"] = kind.default_image_size
    try:
        kind.check_strategy(defaults.build_strategy())
    except ValueError:
        update["strategy"] = StrategySpec(name=kind.default_strategy)
    return defaults.model_copy(update=update) if update else defaults


def encoder_input_type(name: str) -> str:
    """The input type ("image", "text") the registered encoder `name` reads."""
    from plugins.encoders import ENCODERS
    from plugins.registry import UnknownPluginError

    try:
        return ENCODERS.get(name).input_type
    except UnknownPluginError as exc:
        raise InvalidSettingsError(str(exc)) from None


# model params that name a weights file, and the values of each that name no file
WEIGHT_PARAMS: dict[str, tuple[str, ...]] = {"pretrained_path": (TORCHVISION_CACHE,), "pretrained": ("imagenet", "none")}


class InvalidSettingsError(ValueError):
    """Settings an admin asked for that cannot work; the message says why and what is allowed."""


def _inside(path: Any, weights_dir: Path | None, what: str, want_dir: bool) -> str:
    """`path` resolved inside LSAL_WEIGHTS_DIR, or InvalidSettingsError: settings never name other files."""
    if weights_dir is None:
        raise InvalidSettingsError(f"{what}: set LSAL_WEIGHTS_DIR to the folder of weight and patch files first; "
                                   "a project may only name files inside it")
    if not isinstance(path, str) or not path or "\x00" in path:
        raise InvalidSettingsError(f"{what} must name a {'folder' if want_dir else 'file'} inside LSAL_WEIGHTS_DIR")
    root = Path(weights_dir).resolve()
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root) or not (resolved.is_dir() if want_dir else resolved.is_file()):
        raise InvalidSettingsError(f"{what} {path!r} is not a {'folder' if want_dir else 'file'} inside "
                                   "LSAL_WEIGHTS_DIR")
    return str(resolved)


def confined_weights(settings: ProjectSettings, weights_dir: Path | None,
                     current: ProjectSettings | None = None) -> ProjectSettings:
    """The settings with a newly set `pretrained_path` (a model's weights), encoder `checkpoint` or augmentation
    `directory` (copy-paste patches) resolved inside LSAL_WEIGHTS_DIR (InvalidSettingsError when it points anywhere
    else): an admin names weight files, never arbitrary files of the host. `pretrained_path` 'torchvision'
    (torch's own cache) and a path already in force stay as they are."""
    update: dict[str, Any] = {}
    params = dict(settings.model.params)
    for key, named in WEIGHT_PARAMS.items():  # a classifier's pretrained_path, the detector's pretrained
        path = params.get(key)
        kept = current.model.params.get(key) if current is not None else None
        if path is not None and path not in named and path != kept:
            params[key] = _inside(path, weights_dir, key, False)
    if params != settings.model.params:
        update["model"] = ModelSpec(name=settings.model.name, params=params)
    checkpoint = settings.encoder.params.get("checkpoint") if settings.encoder is not None else None
    kept = current.encoder.params.get("checkpoint") if current is not None and current.encoder is not None else None
    if checkpoint is not None and checkpoint != kept:
        folder = encoder_input_type(settings.encoder.name) == "text"  # a sentence-transformers folder
        update["encoder"] = EncoderSpec(name=settings.encoder.name, params={
            **settings.encoder.params, "checkpoint": _inside(checkpoint, weights_dir, "encoder checkpoint", folder)})
    kept_dirs = {r.params.get("directory") for r in (current.augment if current is not None else [])}
    rules = []
    for number, rule in enumerate(settings.augment, 1):
        folder = rule.params.get("directory")
        if folder is not None and folder not in kept_dirs:
            folder = _inside(folder, weights_dir, f"augment rule {number}: directory", True)
            rule = rule.model_copy(update={"params": {**rule.params, "directory": folder}})
        rules.append(rule)
    if rules != list(settings.augment):
        update["augment"] = rules
    return settings.model_copy(update=update) if update else settings


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
        strategy = settings.build_strategy()
    except (InvalidParamsError, StrategyError) as exc:
        raise InvalidSettingsError(f"strategy {settings.strategy.name!r}: {exc}") from None
    if settings.augment:
        from plugins.augment import MIN_SIZE, build_augmentation

        if settings.image_size < MIN_SIZE:
            raise InvalidSettingsError(f"augment needs image_size >= {MIN_SIZE}, got {settings.image_size}")
        from plugins.augment.synthesis import build_box_rules

        for number, rule in enumerate(settings.augment, 1):
            try:
                build_augmentation(rule.augmentation, **rule.params)
            except (UnknownPluginError, InvalidParamsError, ValueError, TypeError) as exc:
                # the settings do not know the project's kind: a rule that a detection project can use (box
                # copy-paste needs no patch folder) stands; the kind checks it again at the retrain
                names = sorted({*(rule.source or []), *([rule.label] if rule.label else [])} - {""}) or ["_"]
                try:
                    build_box_rules([rule], names)
                except (InvalidParamsError, ValueError, TypeError) as box_exc:
                    raise InvalidSettingsError(f"augment rule {number}: {exc} (as a detection rule: {box_exc})") \
                        from None
    if settings.encoder is not None:
        check_encoder(settings)
    try:
        model = build_model(settings.model.name, 2, **settings.model_params())
    except UnknownPluginError as exc:
        raise InvalidSettingsError(str(exc)) from None
    except (InvalidParamsError, ValueError, TypeError) as exc:
        raise InvalidSettingsError(f"model {settings.model.name!r}: {exc}") from None
    check_samples(strategy, model)
    return settings


def check_encoder(settings: ProjectSettings) -> None:
    """InvalidSettingsError unless the encoder is registered, its params valid and the model reads vectors."""
    from plugins.encoders import ENCODERS
    from plugins.models import MODELS
    from plugins.registry import UnknownPluginError

    spec = settings.encoder
    try:
        ENCODERS.get(spec.name).Params(**spec.params)
    except UnknownPluginError as exc:
        raise InvalidSettingsError(str(exc)) from None
    except ValidationError as exc:
        raise InvalidSettingsError(f"encoder {spec.name!r}: {_pydantic_message(exc)}") from None
    readers = [n for n in MODELS.names() if MODELS.get(n).reads_vectors]
    if settings.model.name in MODELS and not MODELS.get(settings.model.name).reads_vectors:
        raise InvalidSettingsError(f"model {settings.model.name!r} reads images, not the encoder's embeddings; with "
                                   f"an encoder choose {', '.join(readers)}")
    if settings.augment:
        raise InvalidSettingsError("augment rules draw on images, but with an encoder the model trains on "
                                   "embeddings; remove the rules or the encoder")


# strategies that read no samples, suggested in that order where the model gives what they need
_SAMPLE_FREE = ("margin", "entropy", "badge", "box_uncertainty", "localization_stability", "box_diversity")


def _sampling_strategies(strategy: Strategy) -> list[Strategy]:
    """`strategy` and the strategies it delegates to (wrappers, auto's cold and warm) that read per-item
    samples (samples, box_samples), outermost first."""
    from plugins.models.base import SAMPLE_INPUTS

    found = [strategy] if strategy.required_inputs() & SAMPLE_INPUTS and not strategy.children() else []
    for child in strategy.children():
        found.extend(_sampling_strategies(child))
    return found


def check_samples(strategy: Strategy, model: Any) -> None:
    """InvalidSettingsError when `strategy` (or one it delegates to) scores the disagreement between the
    model's samples of an item but the model's params give samples that cannot disagree (BALD with a
    committee of 1, MC dropout with one sample or no dropout): every score would be 0 and the order would
    silently be the task order. The message says which parameter to change."""
    from plugins.strategies import STRATEGIES
    from plugins.models.base import SAMPLE_INPUTS

    problem = model.sample_problem()
    if problem is None:
        return
    for used in _sampling_strategies(strategy):
        inputs = " and ".join(sorted(i.value for i in used.required_inputs() & SAMPLE_INPUTS))
        within = "" if used is strategy else f" (inside {strategy.name!r})"
        others = [n for n in _SAMPLE_FREE if not model.unsupported(STRATEGIES.get(n).needs)][:3]
        raise InvalidSettingsError(
            f"strategy {used.name!r}{within} scores how the model's {inputs} of an item disagree, and every "
            f"score would be 0 (the order falling back to task order): {problem}, or choose a strategy that "
            f"needs no samples (e.g. {', '.join(others)}; `lsal strategies` lists what each needs)")


def strategy_param_help(name: str) -> dict[str, Any]:
    """{param: default} of a registered strategy, for error messages and the CLI."""
    from plugins.strategies import STRATEGIES

    return {k: f.default for k, f in STRATEGIES.get(name).Params.model_fields.items()}


# words whose period ends no sentence ("Gal et al. 2017", "e.g. BALD")
_ABBREVIATIONS = ("al.", "e.g.", "i.e.", "etc.", "vs.", "cf.", "Fig.", "Eq.", "No.")


def first_sentence(text: str) -> str:
    """The first sentence of `text` (a docstring) in full, on one line: up to the first '.', '!' or '?' that
    ends a word outside parentheses and is followed by the end, a new paragraph or a capitalised word
    ('et al.' and 'e.g.' end nothing); the whole first paragraph when no such point exists."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    depth = 0
    for i, char in enumerate(paragraph):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char not in ".!?" or depth > 0:
            continue
        rest = paragraph[i + 1:]
        word = paragraph[:i + 1].rsplit(" ", 1)[-1]
        if word.lstrip("(").endswith(_ABBREVIATIONS):
            continue
        if not rest or (rest[0] == " " and (rest[1:2].isupper() or rest[1:2] in "'\"`")):
            return paragraph[:i + 1]
    return paragraph


def strategy_summary(name: str) -> str:
    """What a registered strategy does, in one whole sentence (the first of its docstring)."""
    from plugins.strategies import STRATEGIES

    return first_sentence(STRATEGIES.get(name).__doc__ or "")


def _pydantic_message(exc: ValidationError) -> str:
    """One readable line per pydantic error: 'field.path: message'."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors())
