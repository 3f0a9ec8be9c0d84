"""Core types of the acquisition engine: pool inputs, the ranking a strategy returns, the Strategy base."""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from plugins.boxes import BoxEvidence
from plugins.device import MAX_SEED, check_device_name, pick_device
from plugins.strategies._kernels import chunks
from plugins.strategies.errors import InvalidInputError, InvalidParamsError, MissingInputError

ArrayLike = np.ndarray | torch.Tensor
Head = Callable[[torch.Tensor], torch.Tensor]

# Tolerance for "rows of a probability matrix sum to one" (float32 softmax outputs drift a little).
_PROB_SUM_TOL = 1e-3
# Bytes validated at a time: one pass over each input, each block checked while it is in cache, with a few
# statistics per block and one decision at the end (per-block Python conversions cost more than the checks).
_CHECK_BYTES = 2 * 2**20


class Input(str, Enum):
    """What a strategy can ask the model plugin to compute for the pool."""

    PROBS = "probs"  # (N, C) class probabilities
    SAMPLES = "samples"  # (N, K, C) MC-dropout / ensemble / committee member probabilities
    EMBEDDINGS = "embeddings"  # (N, D) penultimate-layer embeddings of the pool
    LABELED_EMBEDDINGS = "labeled_embeddings"  # (L, D) embeddings of the labeled set
    LABELED_LABELS = "labeled_labels"  # (L,) integer class ids; (L, C) 0/1 targets when multi-label
    PREDICTED_LOSS = "predicted_loss"  # (N,) loss predicted by a learning-loss head
    HEAD = "head"  # callable: (M, D) embeddings -> (M, C) logits of the classifier head
    BOXES = "boxes"  # plugins.boxes.BoxEvidence: a detector's boxes over the pool's images (M boxes in all)
    BOX_SAMPLES = "box_samples"  # (M, K, C + 1) each box's class distribution under K MC-dropout passes
    BOX_IOU = "box_iou"  # (M,) each box's mean IoU with its match under small input perturbations


_POOL_SIZED = (Input.PROBS, Input.SAMPLES, Input.EMBEDDINGS, Input.PREDICTED_LOSS)


@dataclass(frozen=True)
class PoolInputs:
    """What the model says about the unlabeled pool (and the labeled set); only needed fields are set."""

    probs: ArrayLike | None = None
    samples: ArrayLike | None = None
    embeddings: ArrayLike | None = None
    labeled_embeddings: ArrayLike | None = None
    labeled_labels: ArrayLike | None = None
    predicted_loss: ArrayLike | None = None
    head: Head | None = None
    boxes: BoxEvidence | None = None
    box_samples: ArrayLike | None = None
    box_iou: ArrayLike | None = None
    n_items: int | None = None  # pool size when no pool-sized array is given (e.g. random)
    n_classes: int | None = None  # number of classes when no probabilities are given
    multilabel: bool = False  # independent per-label probabilities (sigmoids): rows need not sum to 1
    # the model's per-item outputs when they are not `probs` (a detector's Detections), computed in the same
    # pass, for the caller's pre-annotations; no strategy reads them
    outputs: Any = None

    def available(self) -> frozenset[Input]:
        """The inputs that are set."""
        return frozenset(i for i in Input if getattr(self, i.value) is not None)

    @property
    def n(self) -> int:
        """Pool size."""
        for inp in _POOL_SIZED:
            value = getattr(self, inp.value)
            if value is not None:
                return int(value.shape[0])
        if self.boxes is not None:
            return int(self.boxes.n_images)
        if self.n_items is None:
            raise MissingInputError("the pool size is unknown: pass n_items or a pool-sized input")
        return int(self.n_items)

    @property
    def num_classes(self) -> int:
        """Number of classes, from the probabilities, the samples or `n_classes`."""
        if self.probs is not None:
            return int(self.probs.shape[1])
        if self.samples is not None:
            return int(self.samples.shape[2])
        if self.n_classes is not None:
            return int(self.n_classes)
        if self.multilabel and self.labeled_labels is not None and self.labeled_labels.ndim == 2:
            return int(self.labeled_labels.shape[1])
        if self.labeled_labels is not None and len(self.labeled_labels):
            return int(self.labeled_labels.max()) + 1
        raise MissingInputError("the number of classes is unknown: pass probs, samples or n_classes")

    def prepared(
        self,
        needs: frozenset[Input],
        device: torch.device,
        dtype: torch.dtype,
        strategy: str = "strategy",
        optional: frozenset[Input] = frozenset(),
        in_pass: frozenset[Input] = frozenset(),
    ) -> PoolInputs:
        """Check that every needed input is present and valid; return a copy with torch tensors of the
        needed and optional inputs only (the others are dropped, unconverted and unchecked). The values of
        the `in_pass` inputs (NaN/inf, probabilities) are left to the strategy, which checks them in its own
        pass over them (`checked_blocks`); their presence, type and shape are checked here."""
        missing = needs - self.available()
        if missing:
            raise MissingInputError(
                f"{strategy} needs inputs: {_names(needs)}; missing: {_names(missing)}"
            )
        converted: dict[str, Any] = {"n_items": self.n}
        for inp in self.available():
            value = getattr(self, inp.value)
            if inp not in needs | optional:
                converted[inp.value] = None
                continue
            if inp is Input.HEAD:
                if not callable(value):
                    raise InvalidInputError("head must be a callable mapping embeddings to logits")
                continue
            if inp is Input.BOXES:  # with the per-box inputs the strategy reads (the others go unchecked)
                read = needs | optional
                check_box_evidence(value, self.box_samples if Input.BOX_SAMPLES in read else None,
                                   self.box_iou if Input.BOX_IOU in read else None)
                continue
            if inp in (Input.BOX_SAMPLES, Input.BOX_IOU):
                if self.boxes is None:
                    raise MissingInputError(f"{inp.value} needs boxes beside it")
                converted[inp.value] = _as_float(inp, value, device, dtype, self.multilabel, inp not in in_pass)
                continue
            if inp is Input.LABELED_LABELS:
                as_labels = _as_targets if self.multilabel else _as_labels
                converted[inp.value] = as_labels(value, device)
            else:
                converted[inp.value] = _as_float(inp, value, device, dtype, self.multilabel, inp not in in_pass)
        prepared = dataclasses.replace(self, **converted)
        prepared._check_shapes()
        return prepared

    def _check_shapes(self) -> None:
        ndim = {Input.PROBS: 2, Input.SAMPLES: 3, Input.EMBEDDINGS: 2, Input.LABELED_EMBEDDINGS: 2,
                Input.LABELED_LABELS: 2 if self.multilabel else 1, Input.PREDICTED_LOSS: 1}
        for inp, want in ndim.items():
            value = getattr(self, inp.value)
            if value is not None and value.ndim != want:
                raise InvalidInputError(f"{inp.value} must have {want} dimensions, got shape {tuple(value.shape)}")
        sizes = {i.value: int(getattr(self, i.value).shape[0]) for i in _POOL_SIZED if getattr(self, i.value) is not None}
        if self.n_items is not None:
            sizes["n_items"] = int(self.n_items)
        if self.boxes is not None:
            sizes["boxes"] = int(self.boxes.n_images)
        if len(set(sizes.values())) > 1:
            raise InvalidInputError(f"pool inputs disagree on the pool size: {sizes}")
        if self.probs is not None and self.samples is not None and self.probs.shape[1] != self.samples.shape[2]:
            raise InvalidInputError(
                f"probs has {self.probs.shape[1]} classes but samples has {self.samples.shape[2]}"
            )
        if self.samples is not None and self.samples.shape[1] < 1:
            raise InvalidInputError("samples needs at least one sample per item (shape N x K x C, K >= 1)")
        emb, lab_emb, lab = self.embeddings, self.labeled_embeddings, self.labeled_labels
        if emb is not None and lab_emb is not None and emb.shape[1] != lab_emb.shape[1]:
            raise InvalidInputError(
                f"embeddings have dimension {emb.shape[1]} but labeled_embeddings {lab_emb.shape[1]}"
            )
        if lab_emb is not None and lab is not None and lab_emb.shape[0] != lab.shape[0]:
            raise InvalidInputError(
                f"labeled_embeddings has {lab_emb.shape[0]} rows but labeled_labels {lab.shape[0]}"
            )
        if self.multilabel:
            if lab is not None and (self.probs is not None or self.samples is not None or self.n_classes):
                if lab.shape[1] != self.num_classes:
                    raise InvalidInputError(
                        f"labeled_labels has {lab.shape[1]} labels per row but there are {self.num_classes}"
                    )
        elif lab is not None and lab.numel() and (self.probs is not None or self.samples is not None):
            if int(lab.max()) >= self.num_classes:
                raise InvalidInputError(
                    f"labeled_labels has class id {int(lab.max())} but there are {self.num_classes} classes"
                )


def _names(inputs: frozenset[Input]) -> str:
    return ", ".join(sorted(i.value for i in inputs))


def _as_float(inp: Input, value: Any, device: torch.device, dtype: torch.dtype,
              multilabel: bool = False, check: bool = True) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidInputError(f"{inp.value} is not a numeric array: {exc}") from None
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise InvalidInputError(f"{inp.value} must be numeric, got dtype {tensor.dtype}")
    tensor = tensor.to(device=device, dtype=dtype)
    if tensor.numel() == 0 or tensor.ndim == 0 or not check:
        return tensor
    for _ in checked_blocks(inp.value, tensor, _is_prob(inp), sums_to_one=not multilabel):
        pass
    return tensor


def _is_prob(inp: Input) -> bool:
    return inp in (Input.PROBS, Input.SAMPLES, Input.BOX_SAMPLES)


def checked_blocks(name: str, x: torch.Tensor, is_prob: bool, sums_to_one: bool = True,
                   block_bytes: int = _CHECK_BYTES) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, x[rows]) row blocks and check each block's values (as `_check_block`) right after the
    caller used it, while it is in cache: one read of x serves the caller's computation and the check.
    Raises InvalidInputError once the blocks are exhausted if any value is invalid (the caller's results
    for an invalid input are never returned)."""
    if x.numel() == 0 or x.ndim == 0:
        return
    row_bytes = max(1, x[0].numel() * x.element_size())
    rows = max(1, block_bytes // row_bytes)
    ones = x.new_ones(x.shape[-1]) if is_prob and sums_to_one and x.ndim >= 2 else None
    stats: list[torch.Tensor] = []
    for sl in chunks(x.shape[0], rows):
        block = x[sl]
        yield sl, block
        low, high = torch.aminmax(block)  # NaN propagates; far cheaper than isfinite
        if ones is None:
            stats.append(torch.stack([low, high]))
        else:
            sums = torch.mv(block.reshape(-1, block.shape[-1]), ones)
            sum_low, sum_high = torch.aminmax(sums)
            stats.append(torch.stack([low, high, sum_low, sum_high]))
    table = torch.stack(stats)
    low, high = float(table[:, 0].min()), float(table[:, 1].max())
    bad = not (math.isfinite(low) and math.isfinite(high))
    if not bad and is_prob:
        bad = low < -1e-6 or high > 1 + 1e-6
        if not bad and ones is not None:
            bad = max(1.0 - float(table[:, 2].min()), float(table[:, 3].max()) - 1.0) > _PROB_SUM_TOL
    if bad:  # find the first bad block and say what is wrong with it
        for sl in chunks(x.shape[0], rows):
            _check_block(name, x[sl], is_prob, sums_to_one)


# Rows of a scoring pass at a time: a few hundred KiB stay in a core's cache across the in-place steps.
_SCORE_BYTES = 512 * 2**10
BlockKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def scores_in_pass(name: str, x: torch.Tensor, kernel: BlockKernel, scratch_per_row: int,
                   sums_to_one: bool = True, block_bytes: int = _SCORE_BYTES) -> torch.Tensor:
    """(N,) scores of the probability input x (N, ...), kernel(block, out_rows, scratch) per row block, each
    block's values checked in the same pass (`checked_blocks`): x is read from memory once."""
    if x.device.type != "cpu":  # launches, not caches, bound a GPU pass: few large blocks
        block_bytes = max(block_bytes, 64 * 2**20)
    elif torch.get_num_threads() > 1:  # each op is a parallel region: fewer, larger blocks (still in L3)
        block_bytes = max(block_bytes, 4 * 2**20)
    n = x.shape[0]
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    row_bytes = max(1, x[0].numel() * x.element_size()) if n else 1
    rows = max(1, min(n, block_bytes // row_bytes))
    scratch = torch.empty(rows * scratch_per_row, dtype=x.dtype, device=x.device)
    for sl, block in checked_blocks(name, x, True, sums_to_one, block_bytes=rows * row_bytes):
        kernel(block, out[sl], scratch)
    return out


def _check_block(name: str, block: torch.Tensor, is_prob: bool, sums_to_one: bool = True) -> None:
    """Raise InvalidInputError for NaN/inf values, values outside [0, 1] or (unless multi-label) rows that
    are not probability distributions."""
    low, high = (float(v) for v in torch.aminmax(block))  # NaN propagates; far cheaper than isfinite
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = int((~torch.isfinite(block)).sum())
        raise InvalidInputError(f"{name} contains NaN or infinite value(s) ({bad} in one block of rows)")
    if not is_prob:
        return
    if low < -1e-6 or high > 1 + 1e-6:
        raise InvalidInputError(f"{name} must hold probabilities in [0, 1] (pass softmax outputs, not logits)")
    if not sums_to_one:
        return
    row_sums = block.reshape(-1, block.shape[-1]) @ block.new_ones(block.shape[-1])
    deviation = float((row_sums - 1).abs().max())
    if deviation > _PROB_SUM_TOL:
        raise InvalidInputError(
            f"{name} rows must sum to 1 over classes (largest deviation {deviation:.3g}); pass softmax outputs"
        )


def _as_labels(value: Any, device: torch.device) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    if tensor.is_floating_point():
        if tensor.numel() and not bool((tensor == tensor.round()).all()):
            raise InvalidInputError("labeled_labels must be integer class ids")
    tensor = tensor.to(device=device, dtype=torch.int64)
    if tensor.numel() and int(tensor.min()) < 0:
        raise InvalidInputError("labeled_labels must be non-negative class ids")
    return tensor


def _as_targets(value: Any, device: torch.device) -> torch.Tensor:
    """Multi-label targets: an (L, C) 0/1 matrix as int64 (an all-zero row is "none of these")."""
    tensor = torch.as_tensor(value)
    if tensor.numel() and not bool(((tensor == 0) | (tensor == 1)).all()):
        raise InvalidInputError("multi-label labeled_labels must be an (L, C) matrix of 0/1 targets")
    return tensor.to(device=device, dtype=torch.int64)


@dataclass(frozen=True)
class Ranking:
    """A strategy's answer: the pool in the order to label it, with per-item scores and clusters."""

    order: np.ndarray  # (N,) int64 permutation of range(N); order[0] is the item to label first
    strategy: str
    scores: np.ndarray | None = None  # (N,) per item (indexed by pool position): higher = more informative
    clusters: np.ndarray | None = None  # (N,) cluster id per item, where the method clusters
    info: dict[str, Any] = field(default_factory=dict)  # what the method decided (e.g. auto's choice)

    @property
    def ranks(self) -> np.ndarray:
        """rank[i] = position of pool item i in the order (0 = label first)."""
        ranks = np.empty_like(self.order)
        ranks[self.order] = np.arange(len(self.order))
        return ranks

    def top(self, k: int) -> np.ndarray:
        """The first k items to label."""
        return self.order[:k]

    @classmethod
    def empty(cls, strategy: str) -> Ranking:
        """The ranking of an empty pool."""
        return cls(order=np.zeros(0, dtype=np.int64), strategy=strategy,
                   scores=np.zeros(0, dtype=np.float32), info={"empty_pool": True})


def to_numpy(x: torch.Tensor | np.ndarray | None) -> np.ndarray | None:
    """Tensor (any device) -> numpy array; None stays None."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def order_by_scores(scores: torch.Tensor) -> torch.Tensor:
    """Indices sorted by descending score; ties keep pool order (deterministic)."""
    if scores.device.type != "cpu":
        return torch.argsort(-scores, stable=True)
    return torch.from_numpy(descending_order(scores.numpy()))


def descending_order(scores: np.ndarray) -> np.ndarray:
    """argsort of -scores with ties in index order, exactly as a stable sort gives, in O(N) passes plus one
    SIMD sort of packed 64-bit keys (float32 and narrower); other dtypes take an introsort with a tie fix-up."""
    scores = np.asarray(scores)
    n = len(scores)
    if scores.dtype.itemsize <= 4 and scores.dtype.kind == "f" and 1 < n < 2**32:
        return _packed_descending_order(scores.astype(np.float32, copy=False))
    return _introsort_descending_order(scores)


def _packed_descending_order(scores: np.ndarray) -> np.ndarray:
    """Stable descending order of float32 scores: each score's bits, mapped to an unsigned key that sorts
    ascending as the scores sort descending, in the high 32 bits and the pool index in the low 32, then one
    np.sort of the unique uint64 keys (no two keys are equal, so the order is the stable sort's)."""
    if np.isnan(scores).any():  # NaN has no place in the bit order: keep numpy's (NaN last)
        return _introsort_descending_order(scores)
    bits = (scores + np.float32(0.0)).view(np.uint32)  # -0.0 + 0.0 = +0.0: the two zeros tie, as they compare
    # sign clear: a larger score has larger bits, so flip the 31 low bits; sign set: larger bits sort later
    flip = np.where(bits >> np.uint32(31), np.uint32(0), np.uint32(0x7FFFFFFF))
    key = np.bitwise_xor(bits, flip).astype(np.uint64)
    key <<= np.uint64(32)
    key |= np.arange(len(scores), dtype=np.uint64)
    key.sort()
    key &= np.uint64(0xFFFFFFFF)
    return key.view(np.int64)


def _introsort_descending_order(scores: np.ndarray) -> np.ndarray:
    """argsort of -scores by introsort, then each run of equal scores put in index order."""
    neg = -scores
    order = np.argsort(neg)  # introsort: several times faster than a stable sort on large pools
    ranked = neg[order]
    tied = ranked[1:] == ranked[:-1]
    if tied.any():  # put each run of equal scores in index order: sort (run, index) as one unique int64 key
        run = np.concatenate([[0], np.cumsum(~tied)]).astype(np.int64)
        key = run * len(order) + order
        key.sort()
        order = key % len(order)
    return order.astype(np.int64, copy=False)


def batch_then_scores(picked: list[int] | torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The picked items first (in pick order), then every other item by descending score."""
    n = scores.shape[0]
    picked_t = torch.as_tensor(picked, dtype=torch.int64, device=scores.device).reshape(-1)
    rest_mask = torch.ones(n, dtype=torch.bool, device=scores.device)
    rest_mask[picked_t] = False
    rest = torch.nonzero(rest_mask).reshape(-1)
    rest = rest[order_by_scores(scores[rest])]
    return torch.cat([picked_t, rest])


class StrategyParams(BaseModel):
    """Hyperparameters every strategy accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed for every random choice the strategy makes")
    device: Annotated[str | None, AfterValidator(check_device_name)] = Field(
        None, description="'cpu', 'cuda', 'cuda:1'; default: CUDA when present")
    dtype: Literal["float32", "float64"] = Field("float32", description="compute precision")
    memory_mb: int = Field(256, gt=0, description="working-memory bound for chunked steps, in MiB")


class BatchParams(StrategyParams):
    """Hyperparameters of methods that choose the first `batch_size` items jointly."""

    batch_size: int = Field(
        50, ge=1, description="items chosen jointly; the rest of the pool is ranked by a per-item score"
    )


class Strategy(ABC):
    """Turns pool inputs into a priority order. Hyperparameters at construction, data at `rank`."""

    name: ClassVar[str] = "strategy"
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    needs: ClassVar[frozenset[Input]] = frozenset()
    optional: ClassVar[frozenset[Input]] = frozenset()
    # True when the method has a sound form for multi-label pools (independent per-label sigmoids); a wrapper
    # is sound when its own logic is and its children are (each child checks when it ranks).
    multilabel: ClassVar[bool] = False
    # Inputs whose values (NaN/inf, probabilities) the strategy checks itself, block by block in the pass that
    # computes its scores (`checked_blocks`), so that a large input is read once for both; every other input
    # is checked before `_rank`.
    checks_in_pass: ClassVar[frozenset[Input]] = frozenset()

    def __init__(self, **params: Any) -> None:
        try:
            self.params = self.Params(**params)
        except ValidationError as exc:
            raise InvalidParamsError(_describe_params_error(self.name, self.Params, exc)) from None

    def required_inputs(self) -> frozenset[Input]:
        """Inputs the caller must compute for `rank`."""
        return self.needs

    def optional_inputs(self) -> frozenset[Input]:
        """Inputs `rank` uses when present."""
        return self.optional

    def config(self) -> dict[str, Any]:
        """JSON-serialisable {'name', 'params'} that rebuilds this strategy."""
        return {"name": self.name, "params": self.params.model_dump(mode="json")}

    @property
    def device(self) -> torch.device:
        return pick_device(self.params.device)

    def children(self) -> list[Strategy]:
        """The strategies this one delegates to (wrappers); none for a plain method."""
        return []

    @property
    def dtype(self) -> torch.dtype:
        """Compute precision: the strategy's own, widened to its children's so a wrapper loses none."""
        own = getattr(torch, self.params.dtype)
        return max([own, *(child.dtype for child in self.children())], key=lambda d: torch.finfo(d).bits)

    def generator(self, salt: int = 0) -> np.random.Generator:
        """A numpy RNG seeded from the strategy's seed (and an optional salt)."""
        return np.random.default_rng([self.params.seed, salt])

    def rank(self, pool: PoolInputs) -> Ranking:
        """Validate the inputs and return the full priority order over the pool."""
        if pool.multilabel and not type(self).multilabel:
            raise InvalidInputError(
                f"strategy {self.name} has no multi-label form: it reads the probabilities as one softmax "
                "distribution over classes, but these pool inputs are independent per-label probabilities; "
                "GET /admin/strategies lists the strategies with a multi-label form"
            )
        prepared = pool.prepared(self.required_inputs(), self.device, self.dtype, strategy=self.name,
                                 optional=self.optional_inputs(), in_pass=self.checks_in_pass)
        if prepared.n == 0:
            return Ranking.empty(self.name)
        with torch.no_grad():
            return self._rank(prepared)

    @abstractmethod
    def _rank(self, pool: PoolInputs) -> Ranking:
        """Rank a validated, non-empty pool whose arrays are torch tensors on `self.device`."""

    def _ranking(self, order: torch.Tensor, scores: torch.Tensor | None = None,
                 clusters: torch.Tensor | None = None, **info: Any) -> Ranking:
        """Package torch results as a Ranking."""
        return Ranking(
            order=to_numpy(order).astype(np.int64),
            strategy=self.name,
            scores=None if scores is None else to_numpy(scores),
            clusters=None if clusters is None else to_numpy(clusters).astype(np.int64),
            info=info,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


class ScoreStrategy(Strategy):
    """A method with a per-item score: the order is the scores, descending."""

    def _rank(self, pool: PoolInputs) -> Ranking:
        scores = self.score(pool)
        return self._ranking(order_by_scores(scores), scores)

    @abstractmethod
    def score(self, pool: PoolInputs) -> torch.Tensor:
        """(N,) utility per item: higher means label sooner."""


def _describe_params_error(name: str, params: type[BaseModel], exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "params"
        problems.append(f"{where}: {err['msg']}")
    allowed = ", ".join(
        f"{key} ({_describe_field(f)})" for key, f in params.model_fields.items()
    )
    return f"invalid parameters for {name}: {'; '.join(problems)}. Allowed: {allowed}"


def _describe_field(field_info: Any) -> str:
    ann = getattr(field_info.annotation, "__name__", None) or str(field_info.annotation)
    ann = ann.replace("typing.", "")
    default = field_info.default
    return f"{ann}, default {default!r}" if default is not None or not field_info.is_required() else ann


def check_box_evidence(boxes: Any, samples: Any = None, iou: Any = None) -> None:
    """InvalidInputError unless `boxes` is a well-formed BoxEvidence (shapes agree, distributions sum to 1),
    with per-box `samples` (M, K, C + 1) and `iou` (M,) that fit it when given."""
    if not isinstance(boxes, BoxEvidence):
        raise InvalidInputError(f"boxes must be a plugins.boxes.BoxEvidence, got {type(boxes).__name__}")
    image, probs = np.asarray(boxes.image), np.asarray(boxes.probs)
    n_images = boxes.n_images
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 0:
        raise InvalidInputError(f"boxes.n_images must be a non-negative integer, got {n_images!r}")
    integral = image.dtype.kind in "iu" or (image.dtype.kind == "f" and np.array_equal(image, np.round(image)))
    if not integral:
        raise InvalidInputError(f"boxes.image must hold integer image indices, got dtype {image.dtype}")
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise InvalidInputError(f"boxes.probs must be (M, C + 1) with C >= 1, got shape {probs.shape}")
    if image.shape != (probs.shape[0],):
        raise InvalidInputError(f"boxes.image must be ({probs.shape[0]},), got shape {image.shape}")
    if len(image) and (image.min() < 0 or image.max() >= boxes.n_images or np.any(np.diff(image) < 0)):
        raise InvalidInputError(f"boxes.image must be non-decreasing image indices in 0..{boxes.n_images - 1}")
    if not np.isfinite(probs).all() or (probs < 0).any() or \
            (len(probs) and np.abs(probs.sum(axis=1) - 1.0).max() > _PROB_SUM_TOL):
        raise InvalidInputError("boxes.probs rows must be finite class distributions summing to 1")
    if samples is not None:
        samples = np.asarray(samples)
        if samples.ndim != 3 or samples.shape[0] != probs.shape[0] or samples.shape[2] != probs.shape[1] \
                or samples.shape[1] < 1:
            raise InvalidInputError(f"box_samples must be (M, K, C + 1) = ({probs.shape[0]}, K, "
                                    f"{probs.shape[1]}), got shape {samples.shape}")
    if iou is not None:
        iou = np.asarray(iou)
        if iou.shape != (probs.shape[0],) or not np.isfinite(iou).all() or (iou < 0).any() or (iou > 1).any():
            raise InvalidInputError(f"box_iou must be ({probs.shape[0]},) values in [0, 1], one per box")
